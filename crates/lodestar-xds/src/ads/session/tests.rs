//! The protocol, against an in-memory registry: versions and nonces, ACK
//! and NACK, stale requests, only what was subscribed, pushes, bad requests.

use std::{sync::Arc, time::Duration};

use envoy_types::pb::{envoy::config::core::v3::Node, google::rpc::Status as RpcStatus};
use lodestar::{Instance, Registrar, memory::MemoryRegistry};
use tonic::Code;

use super::*;

fn session(registry: &Arc<MemoryRegistry>) -> Session {
    Session::new(Hub::new(registry.clone()), Arc::new(Policies::default()))
}

fn request(kind: Kind, names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(Node {
            id: "test-node".into(),
            ..Default::default()
        }),
        type_url: kind.type_url().into(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    }
}

fn ack(kind: Kind, names: &[&str], response: &DiscoveryResponse) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: response.version_info.clone(),
        response_nonce: response.nonce.clone(),
        ..request(kind, names)
    }
}

fn instance(id: &str) -> Instance {
    Instance::new("echo", id).with_endpoint("grpc://127.0.0.1:7001".parse().unwrap())
}

/// Handles `request`, waiting (bounded) for the services it needs to be
/// read when it is answered with nothing at first.
async fn answer(session: &mut Session, request: DiscoveryRequest) -> Vec<DiscoveryResponse> {
    let first = session.handle(request).expect("a good request");
    if !first.is_empty() {
        return first;
    }
    let changes = session.changes();
    tokio::time::timeout(Duration::from_secs(5), changes.notified())
        .await
        .expect("the service is read");
    session.refresh()
}

fn decode<M: prost::Message + Default>(response: &DiscoveryResponse) -> Vec<M> {
    response
        .resources
        .iter()
        .map(|any| M::decode(any.value.as_slice()).expect("decodes"))
        .collect()
}

#[tokio::test]
async fn answers_only_what_was_subscribed_with_versions_and_nonces() {
    let registry = Arc::new(MemoryRegistry::new());
    let _a = registry.register(instance("a")).await.unwrap();
    let mut s = session(&registry);
    let lds = answer(&mut s, request(Kind::Listener, &["echo"])).await;
    assert_eq!(lds.len(), 1);
    assert_eq!(lds[0].type_url, resources::LISTENER);
    assert_eq!(lds[0].version_info, "1");
    assert_eq!(lds[0].resources.len(), 1);
    let listeners: Vec<envoy_types::pb::envoy::config::listener::v3::Listener> = decode(&lds[0]);
    assert_eq!(listeners[0].name, "echo");

    // ACK: nothing new to send.
    assert!(
        s.handle(ack(Kind::Listener, &["echo"], &lds[0]))
            .unwrap()
            .is_empty()
    );

    // Clusters and endpoints by name, only those named.
    let cds = s.handle(request(Kind::Cluster, &["echo"])).unwrap();
    assert_eq!((cds.len(), cds[0].resources.len()), (1, 1));
    assert_ne!(cds[0].nonce, lds[0].nonce, "nonces are unique on a stream");
    let eds = s
        .handle(request(Kind::Endpoints, &["echo", "echo/c=blue"]))
        .unwrap();
    let assignments: Vec<envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment> =
        decode(&eds[0]);
    let names: Vec<_> = assignments
        .iter()
        .map(|a| a.cluster_name.as_str())
        .collect();
    assert_eq!(names, ["echo", "echo/c=blue"]);
    assert_eq!(assignments[0].endpoints[0].lb_endpoints.len(), 1);
    assert!(assignments[1].endpoints.is_empty());
}

#[tokio::test]
async fn a_change_is_pushed_with_a_new_version_and_a_nack_is_not_resent() {
    let registry = Arc::new(MemoryRegistry::new());
    let _a = registry.register(instance("a")).await.unwrap();
    let mut s = session(&registry);
    answer(&mut s, request(Kind::Listener, &["echo"])).await;
    let eds = s.handle(request(Kind::Endpoints, &["echo"])).unwrap();
    assert_eq!(eds[0].version_info, "1");

    // The client rejects it: logged, nothing resent.
    let nack = DiscoveryRequest {
        error_detail: Some(RpcStatus {
            code: 3,
            message: "bad endpoint".into(),
            ..Default::default()
        }),
        version_info: String::new(),
        ..ack(Kind::Endpoints, &["echo"], &eds[0])
    };
    assert!(s.handle(nack).unwrap().is_empty());
    assert!(s.refresh().is_empty(), "nothing changed, nothing sent");

    // A registration is pushed: endpoints only (the routes did not change).
    let _b = registry.register(instance("b")).await.unwrap();
    let changes = s.changes();
    tokio::time::timeout(Duration::from_secs(5), changes.notified())
        .await
        .expect("the change is noticed");
    let pushed = s.refresh();
    assert_eq!(pushed.len(), 1, "{pushed:?}");
    assert_eq!(pushed[0].type_url, resources::ENDPOINTS);
    assert_eq!(pushed[0].version_info, "2");

    // A request echoing an older nonce is stale: ignored.
    let stale = ack(Kind::Endpoints, &["echo", "echo/c=red"], &eds[0]);
    assert!(s.handle(stale).unwrap().is_empty());
}

#[tokio::test]
async fn watches_are_shared_and_dropped_with_the_last_stream() {
    let registry = Arc::new(MemoryRegistry::new());
    let hub = Hub::new(registry.clone());
    let policies = Arc::new(Policies::default());
    let mut one = Session::new(hub.clone(), policies.clone());
    let mut two = Session::new(hub.clone(), policies);
    one.handle(request(Kind::Listener, &["echo"])).unwrap();
    two.handle(request(Kind::Cluster, &["echo/c=blue", "other"]))
        .unwrap();
    assert_eq!(hub.watched(), 2, "echo shared, other alone");
    drop(two);
    assert_eq!(hub.watched(), 1);
    one.handle(request(Kind::Listener, &[])).unwrap();
    assert_eq!(hub.watched(), 0, "unsubscribing drops the watch");
}

#[tokio::test]
async fn bad_requests_get_a_clear_status() {
    let registry = Arc::new(MemoryRegistry::new());
    let mut s = session(&registry);
    let no_node = DiscoveryRequest {
        node: None,
        ..request(Kind::Listener, &["echo"])
    };
    let status = s.handle(no_node).unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("node"), "{status:?}");

    let unknown = DiscoveryRequest {
        type_url: "type.googleapis.com/envoy.config.listener.v2.Listener".into(),
        ..request(Kind::Listener, &["echo"])
    };
    let status = s.handle(unknown).unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("v2.Listener"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_answering_not_serving_is_sent_unhealthy() {
    use envoy_types::pb::envoy::config::core::v3::HealthStatus;
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic_health::ServingStatus;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let registry = Arc::new(MemoryRegistry::new());
    let record = Instance::new("echo", "a")
        .with_endpoint(format!("grpc://127.0.0.1:{port}").parse().unwrap());
    let _a = registry.register(record).await.unwrap();
    let mut s = session(&registry);
    answer(&mut s, request(Kind::Endpoints, &["echo"])).await;

    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    pushed_health(&mut s, HealthStatus::Unhealthy).await;
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    pushed_health(&mut s, HealthStatus::Healthy).await;
    server.abort();
}

/// Refreshes until an assignment with the first endpoint at `status` is
/// pushed (bounded).
async fn pushed_health(
    s: &mut Session,
    status: envoy_types::pb::envoy::config::core::v3::HealthStatus,
) {
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    let changes = s.changes();
    for _ in 0..50 {
        let _ = tokio::time::timeout(Duration::from_millis(200), changes.notified()).await;
        if let Some(last) = s.refresh().last() {
            let cla: Vec<ClusterLoadAssignment> = decode(last);
            if cla[0].endpoints[0].lb_endpoints[0].health_status == status as i32 {
                return;
            }
        }
    }
    panic!("never pushed {status:?}");
}

#[tokio::test]
async fn an_invalid_service_name_does_not_hold_the_others_back() {
    use envoy_types::pb::envoy::config::listener::v3::Listener;

    let registry = Arc::new(MemoryRegistry::new());
    let _a = registry.register(instance("a")).await.unwrap();
    let mut s = session(&registry);
    let changes = s.changes();
    let mut lds = s
        .handle(request(Kind::Listener, &["echo", "not a service"]))
        .unwrap();
    for _ in 0..10 {
        if !lds.is_empty() {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), changes.notified()).await;
        lds = s.refresh();
    }
    // Answered in one response, the invalid name with an empty listener.
    let names: Vec<String> = decode::<Listener>(&lds[0])
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(names, ["echo", "not a service"]);
}
