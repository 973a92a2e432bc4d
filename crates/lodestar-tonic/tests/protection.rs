//! The channel's self-protection: instances that all vanish from discovery
//! at once keep serving while they answer; one whose server goes away
//! leaves rotation at once; the rest go when the window passes.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use lodestar::{
    Discovery, Instance, Registrar, balance::BuiltinPolicy, discovery::protect::Protection,
    memory::MemoryRegistry,
};
use lodestar_echo::{EchoRequest, EchoService, echo_client::EchoClient, echo_server::EchoServer};
use lodestar_tonic::{Channel, serve};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Code, service::Routes};

const WINDOW: Duration = Duration::from_secs(3);

struct Server {
    addr: std::net::SocketAddr,
    _stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An echo server as `id`, registered nowhere (the test registers it).
async fn server(id: &str) -> Server {
    let elsewhere = Arc::new(MemoryRegistry::new());
    let bound = serve::Server::builder(elsewhere, Instance::new("kept", id))
        .propagation_delay(Duration::ZERO)
        .bind()
        .await
        .unwrap();
    let addr = bound.local_addr();
    let echo = EchoService::new(bound.instance().clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = bound
            .serve(Routes::new(EchoServer::new(echo)), async {
                let _ = stopped.await;
            })
            .await;
    });
    Server {
        addr,
        _stop: stop,
        task,
    }
}

async fn call(client: &mut EchoClient<Channel>) -> Result<String, Code> {
    client
        .say(EchoRequest {
            message: "x".into(),
            delay_ms: 0,
        })
        .await
        .map(|r| r.into_inner().instance)
        .map_err(|s| s.code())
}

/// Who answered `n` calls; panics on a failed call.
async fn answered(client: &mut EchoClient<Channel>, n: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        seen.insert(call(client).await.expect("a call failed"));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_instances_serve_until_they_stop_answering_or_the_window_passes() {
    let registry = Arc::new(MemoryRegistry::new());
    let (a, b) = (server("a").await, server("b").await);
    let mut records = Vec::new();
    for (id, server) in [("a", &a), ("b", &b)] {
        let endpoint = format!("grpc://{}", server.addr).parse().unwrap();
        let instance = Instance::new("kept", id).with_endpoint(endpoint);
        records.push(registry.register(instance).await.unwrap());
    }
    let channel = Channel::builder(registry.clone(), "kept")
        .policy(BuiltinPolicy::RoundRobin)
        .ready_timeout(Duration::from_millis(300))
        // The memory registry may publish the two removals one at a time:
        // with the default share the first (one of two, not more than
        // half) would go. A lower share keeps both.
        .protection(Protection::new().share(0.3).window(WINDOW))
        .connect();
    let mut client = EchoClient::new(channel);
    assert_eq!(answered(&mut client, 10).await.len(), 2);

    // Both records gone at once (a mass expiry): both keep serving.
    for record in records {
        record.deregister().await.unwrap();
    }
    let gone = tokio::time::Instant::now();
    assert!(registry.get("kept").await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(answered(&mut client, 10).await.len(), 2, "both kept");

    // a's server goes away: a leaves rotation, b takes every call.
    drop(a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = answered(&mut client, 20).await;
    assert_eq!(after, BTreeSet::from(["b".to_string()]));

    // The window passes: nothing is left.
    tokio::time::sleep((WINDOW + Duration::from_millis(500)).saturating_sub(gone.elapsed())).await;
    let mut last = call(&mut client).await;
    for _ in 0..20 {
        if last.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = call(&mut client).await;
    }
    assert_eq!(last, Err(Code::Unavailable), "the window passed");
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_protection_the_last_removal_empties_the_channel() {
    let registry = Arc::new(MemoryRegistry::new());
    let a = server("a").await;
    let endpoint = format!("grpc://{}", a.addr).parse().unwrap();
    let record = registry
        .register(Instance::new("kept", "a").with_endpoint(endpoint))
        .await
        .unwrap();
    let channel = Channel::builder(registry.clone(), "kept")
        .ready_timeout(Duration::from_millis(300))
        .protection(Protection::disabled())
        .connect();
    let mut client = EchoClient::new(channel);
    assert_eq!(call(&mut client).await, Ok("a".to_string()));
    record.deregister().await.unwrap();
    let mut last = call(&mut client).await;
    for _ in 0..20 {
        if last.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = call(&mut client).await;
    }
    assert_eq!(last, Err(Code::Unavailable));
}
