//! The channel's call timeout: a call the instance has not started
//! answering in time fails with `DeadlineExceeded` and counts as the
//! instance's failure (a hung instance gets ejected); a caller's own
//! deadline counts as cancelled and ejects nothing.

use std::{sync::Arc, time::Duration};

use lodestar::{
    Instance,
    balance::{BuiltinPolicy, OutlierDetection},
    memory::MemoryRegistry,
};
use lodestar_echo::{EchoRequest, EchoService, echo_client::EchoClient, echo_server::EchoServer};
use lodestar_tonic::{Channel, serve};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Code, service::Routes};

struct Server {
    _stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn server(registry: &Arc<MemoryRegistry>, id: &str, delay: Duration) -> Server {
    let bound = serve::Server::builder(registry.clone(), Instance::new("hang", id))
        .propagation_delay(Duration::ZERO)
        .bind()
        .await
        .unwrap();
    let echo = EchoService::new(bound.instance().clone()).with_delay(delay);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = bound
            .serve(Routes::new(EchoServer::new(echo)), async {
                let _ = stopped.await;
            })
            .await;
    });
    Server { _stop: stop, task }
}

/// `n` calls, each bounded by `deadline` if given; who answered, or the code.
async fn calls(
    client: &mut EchoClient<Channel>,
    n: usize,
    deadline: Option<Duration>,
) -> Vec<Result<String, Code>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let mut request = tonic::Request::new(EchoRequest {
            message: "x".into(),
            delay_ms: 0,
        });
        if let Some(deadline) = deadline {
            request.set_timeout(deadline);
        }
        out.push(
            client
                .say(request)
                .await
                .map(|r| r.into_inner().instance)
                .map_err(|s| s.code()),
        );
    }
    out
}

fn channel(registry: &Arc<MemoryRegistry>, call_timeout: Option<Duration>) -> EchoClient<Channel> {
    let mut builder = Channel::builder(registry.clone(), "hang")
        .policy(BuiltinPolicy::RoundRobin)
        .outlier_detection(OutlierDetection::new().consecutive_failures(2));
    if let Some(timeout) = call_timeout {
        builder = builder.call_timeout(timeout);
    }
    EchoClient::new(builder.connect())
}

/// Calls until one fails (the hung instance is in rotation), at most 100.
async fn until_one_fails(client: &mut EchoClient<Channel>, deadline: Option<Duration>) -> Code {
    for _ in 0..100 {
        if let Some(Err(code)) = calls(client, 1, deadline).await.pop() {
            return code;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no call reached the hung instance")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_timeout_ejects_a_hung_instance() {
    let registry = Arc::new(MemoryRegistry::new());
    let _fast = server(&registry, "fast", Duration::ZERO).await;
    let _hung = server(&registry, "hung", Duration::from_secs(30)).await;
    let mut client = channel(&registry, Some(Duration::from_millis(200)));
    assert_eq!(
        until_one_fails(&mut client, None).await,
        Code::DeadlineExceeded
    );
    // The second consecutive failure ejects it.
    let _ = calls(&mut client, 4, None).await;
    let after = calls(&mut client, 20, None).await;
    assert!(
        after.iter().all(|r| r.as_deref() == Ok("fast")),
        "ejected after its timeouts, the hung instance gets no call: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_deadline_is_not_the_instances_failure() {
    let registry = Arc::new(MemoryRegistry::new());
    let _fast = server(&registry, "fast", Duration::ZERO).await;
    let _hung = server(&registry, "hung", Duration::from_secs(30)).await;
    let mut client = channel(&registry, None);
    let deadline = Some(Duration::from_millis(200));
    let code = until_one_fails(&mut client, deadline).await;
    assert!(
        matches!(code, Code::DeadlineExceeded | Code::Cancelled),
        "{code:?}"
    );

    let seen = calls(&mut client, 20, deadline).await;
    let expired = seen
        .iter()
        .filter(|r| **r == Err(Code::DeadlineExceeded) || **r == Err(Code::Cancelled))
        .count();
    assert!(
        expired >= 8,
        "round robin keeps sending every other call to the hung instance: {seen:?}"
    );
}
