//! Colour propagation: a call chain A -> B -> C stays in its lane.
//!
//! On the server, [`ColorLayer`] reads the `lodestar-color` header of each
//! incoming request and runs the handler with that colour in a task-local.
//! On the client, the balanced [`Channel`](crate::Channel) puts the
//! task-local colour on every outgoing request that has none, so a service
//! serving a `blue` request calls its own dependencies in the `blue` lane
//! without touching its code.
//!
//! # Examples
//!
//! ```
//! use lodestar_tonic::color;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! assert_eq!(color::current(), None);
//! color::scope(Some("blue".to_string()), async {
//!     assert_eq!(color::current().as_deref(), Some("blue"));
//! })
//! .await;
//! # }
//! ```

use std::{
    future::Future,
    task::{Context, Poll},
};

use http::{HeaderValue, Request};
use lodestar::balance::COLOR_HEADER;
use tower::{Layer, Service};

tokio::task_local! {
    static COLOR: Option<String>;
}

/// The colour of the request being served by this task, if any.
pub fn current() -> Option<String> {
    COLOR.try_with(Clone::clone).ok().flatten()
}

/// Runs `fut` with `color` as the task's colour.
pub async fn scope<F: Future>(color: Option<String>, fut: F) -> F::Output {
    COLOR.scope(color, fut).await
}

/// Puts the task's colour on a request that has no colour of its own.
pub(crate) fn propagate<B>(request: &mut Request<B>) {
    if request.headers().contains_key(COLOR_HEADER) {
        return;
    }
    if let Some(value) = current().and_then(|c| HeaderValue::from_str(&c).ok()) {
        request.headers_mut().insert(COLOR_HEADER, value);
    }
}

/// A server layer that scopes each request's handler to its colour; see the
/// [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct ColorLayer;

/// The service [`ColorLayer`] wraps around a server's.
#[derive(Clone, Debug)]
pub struct ColorService<S> {
    inner: S,
}

// === impl ColorLayer ===

impl<S> Layer<S> for ColorLayer {
    type Service = ColorService<S>;

    fn layer(&self, inner: S) -> ColorService<S> {
        ColorService { inner }
    }
}

// === impl ColorService ===

impl<S, B> Service<Request<B>> for ColorService<S>
where
    S: Service<Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let color = request
            .headers()
            .get(COLOR_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|c| !c.is_empty())
            .map(str::to_string);
        let future = self.inner.call(request);
        Box::pin(COLOR.scope(color, future))
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{ServiceExt, service_fn};

    use super::*;

    #[tokio::test]
    async fn the_server_layer_scopes_handlers_and_the_client_hook_propagates() {
        let handler = service_fn(|_: Request<()>| async {
            // What a handler's outgoing call would carry.
            let mut outgoing = Request::new(());
            propagate(&mut outgoing);
            Ok::<_, Infallible>(outgoing.headers().get(COLOR_HEADER).cloned())
        });
        let service = ColorLayer.layer(handler);

        let blue = Request::builder()
            .header(COLOR_HEADER, "blue")
            .body(())
            .unwrap();
        let seen = service.clone().oneshot(blue).await.unwrap();
        assert_eq!(seen, Some(HeaderValue::from_static("blue")));

        let plain = Request::new(());
        assert_eq!(service.oneshot(plain).await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_explicit_colour_wins_over_the_task_colour() {
        scope(Some("blue".into()), async {
            let mut request = Request::builder()
                .header(COLOR_HEADER, "green")
                .body(())
                .unwrap();
            propagate(&mut request);
            assert_eq!(request.headers()[COLOR_HEADER], "green");
        })
        .await;
    }
}
