//! `lodestar get --check`: asks each instance's gRPC health service
//! (`grpc.health.v1.Health/Check`, tonic-health's client) what it says of
//! itself, all instances at once, each bounded in time.

use std::time::Duration;

use lodestar::Instance;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::output::{Cell, Paint};

/// Time to connect to one instance and to get its answer.
const TIMEOUT: Duration = Duration::from_secs(2);

/// What an instance's health service said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Health {
    /// SERVING.
    Serving,
    /// NOT_SERVING.
    NotServing,
    /// UNKNOWN (or a status this client does not know).
    Unknown,
    /// No answer: connection refused, timed out, no health service...
    Unreachable,
    /// The instance has no gRPC endpoint to ask.
    NoGrpc,
}

// === impl Health ===

impl Health {
    /// As `get` prints it, and its JSON value.
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Health::Serving => "SERVING",
            Health::NotServing => "NOT_SERVING",
            Health::Unknown => "UNKNOWN",
            Health::Unreachable => "unreachable",
            Health::NoGrpc => "no grpc endpoint",
        }
    }

    /// The table cell.
    pub(crate) fn cell(&self) -> Cell {
        let paint = match self {
            Health::Serving => Paint::Green,
            Health::Unknown | Health::NoGrpc => Paint::Yellow,
            Health::NotServing | Health::Unreachable => Paint::Red,
        };
        Cell::new(self.as_str(), paint)
    }
}

/// The health of each instance, in order, asked concurrently.
pub(crate) async fn check_all(instances: &[&Instance]) -> Vec<Health> {
    let checks = instances.iter().map(|instance| {
        let addr = instance.endpoint("grpc").map(|e| e.address());
        async move {
            match addr {
                None => Health::NoGrpc,
                Some(addr) => check(&addr).await,
            }
        }
    });
    let mut set = tokio::task::JoinSet::new();
    for (at, check) in checks.enumerate() {
        set.spawn(async move { (at, check.await) });
    }
    let mut healths = vec![Health::Unreachable; instances.len()];
    while let Some(done) = set.join_next().await {
        if let Ok((at, health)) = done {
            healths[at] = health;
        }
    }
    healths
}

/// Asks one `host:port` for the health of the whole server (service "").
async fn check(addr: &str) -> Health {
    let asked = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .ok()?
            .connect_timeout(TIMEOUT)
            .timeout(TIMEOUT)
            .connect()
            .await
            .ok()?;
        let request = HealthCheckRequest {
            service: String::new(),
        };
        HealthClient::new(channel).check(request).await.ok()
    };
    let Ok(Some(reply)) = tokio::time::timeout(TIMEOUT * 2, asked).await else {
        return Health::Unreachable;
    };
    match ServingStatus::try_from(reply.into_inner().status) {
        Ok(ServingStatus::Serving) => Health::Serving,
        Ok(ServingStatus::NotServing) => Health::NotServing,
        _ => Health::Unknown,
    }
}
