//! ADS over the wire, with envoy-types' generated client against the
//! embedded server on a loopback port: many clients on one server, clients
//! that vanish mid-stream, bad requests answered with a status.

use std::{sync::Arc, time::Duration};

use envoy_types::pb::envoy::{
    config::core::v3::Node,
    service::discovery::v3::{
        DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse,
        aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
    },
};
use lodestar::{Instance, Registrar, memory::MemoryRegistry};
use lodestar_test_support::eventually;
use lodestar_xds::{Server, Stats, resources};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Code, Streaming, transport::Channel};

struct Fixture {
    registry: Arc<MemoryRegistry>,
    stats: Stats,
    addr: String,
    server: tokio::task::JoinHandle<()>,
}

async fn fixture() -> Fixture {
    let registry = Arc::new(MemoryRegistry::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let server = Server::new(registry.clone());
    let stats = server.stats();
    let server = tokio::spawn(async move {
        let _ = server.serve(listener, std::future::pending()).await;
    });
    Fixture {
        registry,
        stats,
        addr,
        server,
    }
}

async fn client(addr: &str) -> AggregatedDiscoveryServiceClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(addr.to_string())
        .unwrap()
        .connect()
        .await
        .expect("connect");
    AggregatedDiscoveryServiceClient::new(channel)
}

fn request(node: bool, type_url: &str, names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        node: node.then(|| Node {
            id: "t".into(),
            ..Default::default()
        }),
        type_url: type_url.into(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    }
}

/// A stream with `first` sent; the sender for more.
async fn open(
    addr: &str,
    first: DiscoveryRequest,
) -> (
    mpsc::UnboundedSender<DiscoveryRequest>,
    Streaming<DiscoveryResponse>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(first).unwrap();
    let responses = client(addr)
        .await
        .stream_aggregated_resources(UnboundedReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    (tx, responses)
}

async fn next(
    responses: &mut Streaming<DiscoveryResponse>,
) -> Result<DiscoveryResponse, tonic::Status> {
    tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .expect("an answer in time")
        .map(|r| r.expect("the stream is open"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_one_watch_and_vanished_clients_release_it() {
    let f = fixture().await;
    let record = Instance::new("echo", "a").with_endpoint("grpc://127.0.0.1:1".parse().unwrap());
    let _a = f.registry.register(record).await.unwrap();

    let mut streams = Vec::new();
    for _ in 0..50 {
        let (tx, mut responses) =
            open(&f.addr, request(true, resources::ENDPOINTS, &["echo"])).await;
        let first = next(&mut responses).await.expect("endpoints");
        assert_eq!(first.type_url, resources::ENDPOINTS);
        streams.push((tx, responses));
    }
    assert_eq!(f.stats.streams(), 50);
    assert_eq!(f.stats.services(), 1, "one watch shared by every stream");

    // A change reaches every stream.
    let record = Instance::new("echo", "b").with_endpoint("grpc://127.0.0.1:2".parse().unwrap());
    let _b = f.registry.register(record).await.unwrap();
    for (_, responses) in &mut streams {
        let pushed = next(responses).await.expect("a push");
        assert_eq!(pushed.version_info, "2");
    }

    // The clients vanish (connections dropped mid-stream): streams and the
    // watch are released.
    drop(streams);
    eventually("every stream released", Duration::from_secs(10), || async {
        f.stats.streams() == 0 && f.stats.services() == 0
    })
    .await;
    f.server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_end_the_stream_with_a_clear_status() {
    let f = fixture().await;
    let (_tx, mut responses) = open(&f.addr, request(false, resources::LISTENER, &["echo"])).await;
    let status = next(&mut responses).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("node"), "{status:?}");

    let v2 = "type.googleapis.com/envoy.api.v2.Listener";
    let (_tx, mut responses) = open(&f.addr, request(true, v2, &["echo"])).await;
    let status = next(&mut responses).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains(v2), "{status:?}");

    let delta = client(&f.addr)
        .await
        .delta_aggregated_resources(tokio_stream::iter(vec![DeltaDiscoveryRequest::default()]))
        .await
        .unwrap_err();
    assert_eq!(delta.code(), Code::Unimplemented);
    f.server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_feeds_the_server_too() {
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use prost::Message;

    let etcd = lodestar_test_support::EtcdNode::start().await;
    let registry = lodestar_connect::connect(&etcd.url()).await.expect("etcd");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let server =
        tokio::spawn(Server::new(registry.clone()).serve(listener, std::future::pending()));
    let record = Instance::new("echo", "a").with_endpoint("grpc://127.0.0.1:1".parse().unwrap());
    let _a = registry.register(record).await.unwrap();

    let (_tx, mut responses) = open(&addr, request(true, resources::ENDPOINTS, &["echo"])).await;
    let count = |r: &DiscoveryResponse| -> usize {
        r.resources
            .iter()
            .map(|any| ClusterLoadAssignment::decode(any.value.as_slice()).unwrap())
            .flat_map(|cla| cla.endpoints)
            .map(|l| l.lb_endpoints.len())
            .sum()
    };
    let mut seen = count(&next(&mut responses).await.unwrap());
    let record = Instance::new("echo", "b").with_endpoint("grpc://127.0.0.1:2".parse().unwrap());
    let _b = registry.register(record).await.unwrap();
    for _ in 0..10 {
        if seen == 2 {
            break;
        }
        seen = count(&next(&mut responses).await.unwrap());
    }
    assert_eq!(seen, 2, "both etcd registrations reached the stream");
    server.abort();
}
