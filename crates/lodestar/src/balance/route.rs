//! A request's route (version pin, colour lane, hash key) and its headers.
//!
//! Any language can set a route: it travels as plain request headers, so a
//! gRPC call (tonic's `MetadataMap` converts to and from an
//! [`http::HeaderMap`]) and an HTTP request carry it the same way.

use http::{HeaderMap, HeaderValue, Request};

use crate::balance::Error;

/// Header pinning a request to instances of one version.
pub const VERSION_HEADER: &str = "lodestar-version";
/// Header putting a request in a colour lane.
pub const COLOR_HEADER: &str = "lodestar-color";
/// Header carrying the key of consistent-hash balancing.
pub const HASH_KEY_HEADER: &str = "lodestar-hash-key";

/// Where a request wants to go, beyond its service; empty by default.
///
/// An empty string counts as absent everywhere.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Route {
    /// Only instances of this version may serve the request.
    pub version: Option<String>,
    /// The colour lane; `None` is the base lane.
    pub color: Option<String>,
    /// The key consistent hashing keeps on one instance.
    pub hash_key: Option<String>,
}

// === impl Route ===

impl Route {
    /// The empty route: any version, base lane, no key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Pins a version.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = non_empty(version.into());
        self
    }

    /// Sets the colour lane.
    pub fn with_color(mut self, color: impl Into<String>) -> Self {
        self.color = non_empty(color.into());
        self
    }

    /// Sets the hash key.
    pub fn with_hash_key(mut self, key: impl Into<String>) -> Self {
        self.hash_key = non_empty(key.into());
        self
    }

    /// Reads a route from request headers. Values that are empty or not
    /// UTF-8 are ignored: a bad header never fails a request.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        Self {
            version: get(VERSION_HEADER),
            color: get(COLOR_HEADER),
            hash_key: get(HASH_KEY_HEADER),
        }
    }

    /// Writes the route's headers, replacing any already there (and removing
    /// those whose field is `None`, so a request never carries a stale pin).
    pub fn write_headers(&self, headers: &mut HeaderMap) -> Result<(), Error> {
        set(headers, VERSION_HEADER, self.version.as_deref())?;
        set(headers, COLOR_HEADER, self.color.as_deref())?;
        set(headers, HASH_KEY_HEADER, self.hash_key.as_deref())
    }

    /// Writes the route's headers on an HTTP request (see
    /// [`write_headers`](Self::write_headers)). For a tonic request, write
    /// into the `http::HeaderMap` of `MetadataMap::into_headers`.
    pub fn apply<B>(&self, request: &mut Request<B>) -> Result<(), Error> {
        self.write_headers(request.headers_mut())
    }

    /// Reads the route of an HTTP request.
    pub fn of<B>(request: &Request<B>) -> Self {
        Self::from_headers(request.headers())
    }
}

fn non_empty(s: String) -> Option<String> {
    Some(s).filter(|s| !s.is_empty())
}

fn set(headers: &mut HeaderMap, name: &'static str, value: Option<&str>) -> Result<(), Error> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        headers.remove(name);
        return Ok(());
    };
    let header = HeaderValue::from_str(value).map_err(|_| Error::InvalidRoute {
        header: name,
        value: value.to_string(),
    })?;
    headers.insert(name, header);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let route = Route::new()
            .with_version("v2")
            .with_color("blue")
            .with_hash_key("user-42");
        let mut request = Request::new(());
        route.apply(&mut request).unwrap();
        assert_eq!(request.headers()[VERSION_HEADER], "v2");
        assert_eq!(Route::of(&request), route);
    }

    #[test]
    fn absent_fields_clear_stale_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(COLOR_HEADER, HeaderValue::from_static("red"));
        Route::new()
            .with_version("v1")
            .write_headers(&mut headers)
            .unwrap();
        assert!(headers.get(COLOR_HEADER).is_none());
        assert_eq!(
            Route::from_headers(&headers),
            Route::new().with_version("v1")
        );
    }

    #[test]
    fn bad_values() {
        let mut headers = HeaderMap::new();
        let err = Route::new()
            .with_color("a\nb")
            .write_headers(&mut headers)
            .unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidRoute {
                header: COLOR_HEADER,
                ..
            }
        ));
        headers.insert(COLOR_HEADER, HeaderValue::from_bytes(b"\xff").unwrap());
        headers.insert(VERSION_HEADER, HeaderValue::from_static("  "));
        assert_eq!(Route::from_headers(&headers), Route::new());
        assert_eq!(Route::new().with_color(""), Route::new());
    }
}
