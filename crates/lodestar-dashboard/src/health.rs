//! Health: every instance's gRPC endpoint asked `grpc.health.v1.Health/Check`
//! periodically, a bounded number at a time, each check bounded in time.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::{sync::Semaphore, task::JoinSet, time::MissedTickBehavior};
use tonic::transport::Endpoint;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::state::{Health, Shared, now_ms};

/// Checks under way at once.
const CONCURRENCY: usize = 8;
/// The most instances checked per round: a huge registry gets the first
/// ones (by service, then id), not a storm of connections.
const MAX_PER_ROUND: usize = 512;
/// Connect plus answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Checks every instance with a `grpc` endpoint every `health_every`.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.config.health_every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        round(&shared).await;
    }
}

/// One round over the instances known now.
async fn round(shared: &Arc<Shared>) {
    let targets = targets(shared);
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut checks = JoinSet::new();
    for (key, addr) in targets {
        let permits = permits.clone();
        checks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            (key, check(&addr).await)
        });
    }
    let mut verdicts = HashMap::new();
    while let Some(done) = checks.join_next().await {
        if let Ok((key, health)) = done {
            verdicts.insert(key, health);
        }
    }
    let changed = {
        let mut inner = shared.lock();
        let changed = verdicts
            .iter()
            .any(|(k, h)| inner.health.get(k).map(|o| &o.status) != Some(&h.status));
        // Instances gone since the round started are not brought back.
        verdicts.retain(|(service, id), _| {
            inner
                .services
                .get(service)
                .and_then(|s| s.snapshot.as_ref())
                .is_some_and(|s| s.instance(id).is_some())
        });
        inner.health = verdicts;
        changed
    };
    if changed {
        shared.refresh();
    }
}

/// (service, id) and the `host:port` of the grpc endpoint of each instance.
fn targets(shared: &Shared) -> Vec<((String, String), String)> {
    let inner = shared.lock();
    inner
        .services
        .iter()
        .filter_map(|(name, s)| Some((name, s.snapshot.clone()?)))
        .flat_map(|(name, snapshot)| {
            snapshot
                .instances()
                .iter()
                .filter_map(|i| {
                    let addr = i.endpoint("grpc")?.address();
                    Some(((name.clone(), i.id.clone()), addr))
                })
                .collect::<Vec<_>>()
        })
        .take(MAX_PER_ROUND)
        .collect()
}

/// Asks one endpoint for the health of the whole server (service `""`).
pub(crate) async fn check(addr: &str) -> Health {
    let verdict = tokio::time::timeout(CHECK_TIMEOUT, ask(addr)).await;
    let (status, error) = match verdict {
        Ok(Ok(status)) => (status.as_str_name().to_string(), None),
        Ok(Err(e)) => ("UNREACHABLE".to_string(), Some(e)),
        Err(_) => (
            "UNREACHABLE".to_string(),
            Some(format!("no answer within {CHECK_TIMEOUT:?}")),
        ),
    };
    Health {
        status,
        error,
        checked_ms: now_ms(),
    }
}

async fn ask(addr: &str) -> Result<ServingStatus, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("bad address {addr}: {e}"))?
        .connect_timeout(CHECK_TIMEOUT);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect {addr}: {}", lodestar::ErrorChain(&e)))?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|status| format!("{}: {}", status.code(), status.message()))?;
    Ok(ServingStatus::try_from(reply.into_inner().status).unwrap_or(ServingStatus::Unknown))
}
