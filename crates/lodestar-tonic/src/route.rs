//! Setting a request's route (version pin, colour lane, hash key) on a
//! tonic request: the balanced channel reads it from the headers.
//!
//! # Examples
//!
//! ```
//! use lodestar::balance::Route;
//! use lodestar_tonic::RouteExt;
//!
//! let mut request = tonic::Request::new(());
//! request.set_route(&Route::new().with_version("v2").with_color("blue")).unwrap();
//! assert_eq!(request.metadata().get("lodestar-version").unwrap(), "v2");
//! assert_eq!(request.route(), Route::new().with_version("v2").with_color("blue"));
//! ```

use lodestar::balance::{self, Route};

/// Route headers on tonic requests.
pub trait RouteExt {
    /// Writes the route's headers, replacing (or, for fields that are
    /// `None`, removing) those already there.
    fn set_route(&mut self, route: &Route) -> Result<(), balance::Error>;

    /// The route the request's headers describe.
    fn route(&self) -> Route;
}

impl<T> RouteExt for tonic::Request<T> {
    fn set_route(&mut self, route: &Route) -> Result<(), balance::Error> {
        let metadata = std::mem::take(self.metadata_mut());
        let mut headers = metadata.into_headers();
        let result = route.write_headers(&mut headers);
        *self.metadata_mut() = tonic::metadata::MetadataMap::from_headers(headers);
        result
    }

    fn route(&self) -> Route {
        Route::from_headers(&self.metadata().clone().into_headers())
    }
}
