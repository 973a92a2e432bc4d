//! The tonic service: a task per stream drives its [`Session`] between the
//! client's requests and the changes of the services it holds.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    aggregated_discovery_service_server::AggregatedDiscoveryService,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::{ads::Session, hub::Hub, server::Policies};

/// Responses queued per stream before its task waits for the client.
const QUEUE: usize = 16;

/// The ADS service: sessions over a shared [`Hub`].
#[derive(Clone, Debug)]
pub struct Ads {
    hub: Hub,
    policies: Arc<Policies>,
    streams: Arc<AtomicUsize>,
}

type Sender = mpsc::Sender<Result<DiscoveryResponse, Status>>;

// === impl Ads ===

impl Ads {
    /// The service over `hub`, with the clusters' `policies`, counting its
    /// open streams in `streams`.
    pub fn new(hub: Hub, policies: Arc<Policies>, streams: Arc<AtomicUsize>) -> Self {
        Self {
            hub,
            policies,
            streams,
        }
    }

    /// Streams open now.
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let peer = request.remote_addr();
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(QUEUE);
        let session = Session::new(self.hub.clone(), self.policies.clone());
        let streams = self.streams.clone();
        streams.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            drive(session, inbound, tx, peer).await;
            streams.fetch_sub(1, Ordering::Relaxed);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "incremental (delta) xDS is not served: use the state-of-the-world \
             StreamAggregatedResources (grpc clients do by default)",
        ))
    }
}

/// Runs one stream until the client leaves, the stream breaks, or a bad
/// request ends it with a status.
async fn drive(
    mut session: Session,
    mut inbound: Streaming<DiscoveryRequest>,
    tx: Sender,
    peer: Option<std::net::SocketAddr>,
) {
    let changes = session.changes();
    loop {
        let responses = tokio::select! {
            request = inbound.message() => match request {
                Ok(Some(request)) => match session.handle(request) {
                    Ok(responses) => responses,
                    Err(status) => {
                        tracing::warn!(?peer, node = ?session.node(), %status, "xds: bad request; stream ended");
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                },
                Ok(None) => break,
                Err(status) => {
                    tracing::debug!(?peer, node = ?session.node(), %status, "xds: stream broke");
                    break;
                }
            },
            () = changes.notified() => session.refresh(),
            () = tx.closed() => break,
        };
        for response in responses {
            if tx.send(Ok(response)).await.is_err() {
                break;
            }
        }
    }
    tracing::info!(?peer, node = ?session.node(), "xds: client gone");
}
