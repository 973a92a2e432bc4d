//! The echo service of lodestar's tools and tests: each reply names the
//! instance that served it (and the colour lane the call came in).

use std::{sync::Arc, time::Duration};

use lodestar::Instance;
use tonic::{Request, Response, Status};

tonic::include_proto!("lodestar.echo.v1");

/// An [`echo_server::Echo`] that answers as `instance`.
#[derive(Clone, Debug)]
pub struct EchoService {
    instance: Arc<Instance>,
    delay: Duration,
}

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
            color: crate::color::current().unwrap_or_default(),
        }))
    }
}
