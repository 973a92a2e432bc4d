//! The echo gRPC service of lodestar's tools, examples and tests: each reply
//! names the instance that served it, and the colour lane the call came in.
//!
//! It lives in its own crate so that `lodestar-tonic` carries no demo service
//! and no protobuf build step: only the `lodestar` CLI, the examples and the
//! tests depend on it. Building it needs `protoc` (`cargo xtask setup`
//! installs it).
//!
//! - [`EchoService`]: the server side, answering as an [`Instance`].
//! - [`http`]: the HTTP echo (JSON description, streamed body echo,
//!   `/status/NNN`, `/delay/MS`, a WebSocket echo), the gateway's test backend.
//! - [`echo_server`] and [`echo_client`]: tonic's generated server and client
//!   of `lodestar.echo.v1.Echo` (`proto/echo.proto`).
//!
//! # Examples
//!
//! ```
//! use lodestar::Instance;
//! use lodestar_echo::{EchoRequest, EchoService, echo_server::Echo};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tonic::Status> {
//! let service = EchoService::new(Instance::new("echo", "echo-1").with_version("v1"));
//! let request = tonic::Request::new(EchoRequest { message: "hi".into(), delay_ms: 0 });
//! let reply = service.say(request).await?.into_inner();
//! assert_eq!((reply.message.as_str(), reply.instance.as_str()), ("hi", "echo-1"));
//! # Ok(())
//! # }
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![forbid(unsafe_code)]

use std::{sync::Arc, time::Duration};

use lodestar::{Instance, balance::COLOR_HEADER};
use tonic::{Request, Response, Status};

pub mod http;

#[allow(missing_docs, unreachable_pub, missing_debug_implementations)] // generated code
mod generated {
    tonic::include_proto!("lodestar.echo.v1");
}

pub use generated::{EchoReply, EchoRequest, echo_client, echo_server};

/// An [`echo_server::Echo`] that answers as `instance`.
#[derive(Clone, Debug)]
pub struct EchoService {
    instance: Arc<Instance>,
    delay: Duration,
}

// === impl EchoService ===

impl EchoService {
    /// Answers as `instance`.
    pub fn new(instance: Instance) -> Self {
        Self {
            instance: Arc::new(instance),
            delay: Duration::ZERO,
        }
    }

    /// Adds this latency to every call.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

#[tonic::async_trait]
impl echo_server::Echo for EchoService {
    async fn say(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        // The lane as the request arrived: read from its header, so the echo
        // needs no server layer and reports exactly what came in.
        let color = request
            .metadata()
            .get(COLOR_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let request = request.into_inner();
        let delay = self.delay + Duration::from_millis(u64::from(request.delay_ms));
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(Response::new(EchoReply {
            message: request.message,
            instance: self.instance.id.clone(),
            service: self.instance.service.clone(),
            version: self.instance.version.clone(),
            color,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use echo_server::Echo;

    fn request(color: Option<&str>) -> Request<EchoRequest> {
        let mut request = Request::new(EchoRequest {
            message: "hi".into(),
            delay_ms: 0,
        });
        if let Some(color) = color {
            request
                .metadata_mut()
                .insert(COLOR_HEADER, color.parse().unwrap());
        }
        request
    }

    #[tokio::test]
    async fn a_reply_names_the_instance_and_the_lane_it_came_in() {
        let instance = Instance::new("echo", "echo-1").with_version("v2");
        let service = EchoService::new(instance);

        let reply = service.say(request(Some("blue"))).await.unwrap();
        let reply = reply.into_inner();
        assert_eq!(
            (
                reply.message.as_str(),
                reply.instance.as_str(),
                reply.service.as_str(),
                reply.version.as_str(),
                reply.color.as_str(),
            ),
            ("hi", "echo-1", "echo", "v2", "blue")
        );

        let reply = service.say(request(None)).await.unwrap().into_inner();
        assert_eq!(reply.color, "");
    }
}
