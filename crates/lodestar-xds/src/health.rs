//! The instances' own gRPC health: one `grpc.health.v1.Health/Watch` per
//! instance of a watched service, as lodestar's channel follows it, so an
//! instance answering NOT_SERVING (a server draining, or one that says it
//! cannot serve) is sent UNHEALTHY while it stays registered.
//!
//! Only an answer of NOT_SERVING takes an instance out. An instance with no
//! health service, or one the server cannot reach, keeps its registry
//! status: gRPC clients judge their own connections, and the server's
//! network view may differ from theirs.

use std::{collections::HashMap, time::Duration};

use lodestar::{Snapshot, backoff::Backoff};
use tokio::{sync::mpsc, task::AbortHandle};
use tonic::transport::Endpoint;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::plan::GRPC_SCHEME;

/// A verdict: an instance id and whether it answers NOT_SERVING.
pub type Verdict = (String, bool);

/// The probes of one service's instances, one task each, stopped when
/// dropped.
#[derive(Debug)]
pub struct Probes {
    tasks: HashMap<String, (String, AbortHandle)>,
    tx: mpsc::UnboundedSender<Verdict>,
}

/// How long a probe waits for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

// === impl Probes ===

impl Probes {
    /// Probes reporting to `tx`.
    pub fn new(tx: mpsc::UnboundedSender<Verdict>) -> Self {
        Self {
            tasks: HashMap::new(),
            tx,
        }
    }

    /// Probes the instances of `snapshot` with a `grpc://` endpoint: starts
    /// a probe per new instance (or new address), stops those of instances
    /// gone.
    pub fn sync(&mut self, snapshot: &Snapshot) {
        self.tasks
            .retain(|id, (address, _)| current(snapshot, id).as_deref() == Some(address.as_str()));
        for instance in snapshot.instances() {
            let Some(address) = current(snapshot, &instance.id) else {
                continue;
            };
            if self.tasks.contains_key(&instance.id) {
                continue;
            }
            let task = tokio::spawn(probe(instance.id.clone(), address.clone(), self.tx.clone()));
            self.tasks
                .insert(instance.id.clone(), (address, task.abort_handle()));
        }
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        for (_, task) in self.tasks.values() {
            task.abort();
        }
    }
}

/// The `host:port` of instance `id`'s gRPC endpoint in `snapshot`.
fn current(snapshot: &Snapshot, id: &str) -> Option<String> {
    Some(snapshot.instance(id)?.endpoint(GRPC_SCHEME)?.address())
}

/// Follows one instance's health, forever (reconnecting with backoff).
async fn probe(id: String, address: String, tx: mpsc::UnboundedSender<Verdict>) {
    let Ok(endpoint) = Endpoint::from_shared(format!("http://{address}")) else {
        return;
    };
    let endpoint = endpoint.connect_timeout(CONNECT_TIMEOUT);
    let mut backoff = Backoff::watch();
    loop {
        match watch(&id, &endpoint, &tx).await {
            Ok(()) => return,
            Err(error) => tracing::debug!(%id, %address, %error, "xds: health probe"),
        }
        if tx.send((id.clone(), false)).is_err() {
            return;
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// One health watch; `Ok` when the instance has no health service (nothing
/// more to learn), an error when the connection or the stream broke.
async fn watch(
    id: &str,
    endpoint: &Endpoint,
    tx: &mpsc::UnboundedSender<Verdict>,
) -> Result<(), tonic::Status> {
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client = HealthClient::new(channel);
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let mut stream = match client.watch(request).await {
        Ok(response) => response.into_inner(),
        Err(status) if status.code() == tonic::Code::Unimplemented => return Ok(()),
        Err(status) => return Err(status),
    };
    while let Some(answer) = stream.message().await? {
        let not_serving = answer.status == ServingStatus::NotServing as i32;
        if tx.send((id.to_string(), not_serving)).is_err() {
            return Ok(());
        }
    }
    Err(tonic::Status::unavailable("the health stream ended"))
}
