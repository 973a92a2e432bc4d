//! The xDS server's figures, on a real etcd:
//!
//! 1. `propagation`: register -> the first call served by the new instance,
//!    from grpcio's xDS client (Python, `xds:///echo` through the server)
//!    beside lodestar's own balanced channel on the same registry.
//! 2. `fanout`: N xDS streams connected (each on its own connection, an ADS
//!    client built from envoy-types' generated client, subscribed to the
//!    listener, cluster and endpoints of one service and ACKing): the
//!    server's resident memory, and the time for one registration to reach
//!    every stream. The server runs in a child process (this binary again),
//!    so its memory is its own.
//!
//! `cargo bench -p lodestar-xds --bench xds -- [SAMPLES] [STREAMS] [INSTANCES]`
//! (default 30, 1000 and 100: the service the streams follow has INSTANCES
//! instances, then one more per change). Needs etcd and grpcio (`cargo xtask setup`).

use std::{
    path::PathBuf,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use envoy_types::pb::envoy::{
    config::{core::v3::Node, endpoint::v3::ClusterLoadAssignment},
    service::discovery::v3::{
        DiscoveryRequest, aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
    },
};
use lodestar::{Instance, Registration, Registry};
use lodestar_echo::{EchoRequest, EchoService, echo_client::EchoClient, echo_server::EchoServer};
use lodestar_test_support::{EtcdNode, bench::Record, bench::quantile, free_port};
use prost::Message;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
    process::Command,
    sync::mpsc,
};
use tokio_stream::wrappers::UnboundedReceiverStream;

/// The service the fan-out streams subscribe to (endpoints on a closed
/// port: only the resources matter).
const FAN: &str = "fan";
const CHILD: &str = "LODESTAR_XDS_BENCH_SERVE";
const ENDPOINTS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const TYPES: [&str; 3] = [
    "type.googleapis.com/envoy.config.listener.v3.Listener",
    "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    ENDPOINTS,
];

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Ok(spec) = std::env::var(CHILD) {
        runtime.block_on(serve_child(&spec));
        return;
    }
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let samples = args.first().copied().unwrap_or(30);
    let streams = args.get(1).copied().unwrap_or(1000);
    let instances = args.get(2).copied().unwrap_or(100).max(1);
    runtime.block_on(async {
        let etcd = EtcdNode::start().await;
        let registry = lodestar_connect::connect(&etcd.url()).await.expect("etcd");
        propagation(&registry, samples).await;
        fanout(&registry, &etcd.url(), streams, instances).await;
    });
}

// === 1. register -> first call ===

async fn propagation(registry: &Arc<dyn Registry>, samples: usize) {
    let xds_port = free_port();
    let listener = TcpListener::bind(("127.0.0.1", xds_port))
        .await
        .expect("bind");
    let server = lodestar_xds::Server::new(registry.clone());
    let xds = tokio::spawn(server.serve(listener, std::future::pending()));
    let (_base, _base_reg) = echo(registry, "base").await;

    let dir = std::env::temp_dir().join(format!("lodestar-xds-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bootstrap = dir.join("bootstrap.json");
    std::fs::write(&bootstrap, bootstrap_json(xds_port)).expect("bootstrap");
    let mut python = Python::start(&bootstrap).await;
    python.ask("calls 20").await;
    let channel =
        // Weighted, as the xDS clusters default to: p2c would keep a new
        // instance (no latency measured yet) out of the picks for a while,
        // which measures the policy, not the propagation.
        EchoClient::new(
            lodestar_tonic::Channel::builder(registry.clone(), "echo")
                .policy(lodestar::balance::BuiltinPolicy::Weighted)
                .connect(),
        );
    call_until(&channel, "base").await;

    let (mut via_xds, mut via_channel) = (Vec::new(), Vec::new());
    for i in 0..samples {
        let id = format!("x{i}");
        let (server, _) = echo_unregistered(&id).await;
        python.send(&format!("until {id}")).await;
        let start = Instant::now();
        let reg = register(registry, &id, server).await;
        let answer = python.read().await;
        assert!(
            answer.contains("\"found\": true"),
            "grpcio never reached {id}: {answer}"
        );
        via_xds.push(start.elapsed());
        drop(reg);

        let id = format!("l{i}");
        let (server, _) = echo_unregistered(&id).await;
        let start = Instant::now();
        let reg = register(registry, &id, server).await;
        call_until(&channel, &id).await;
        via_channel.push(start.elapsed());
        drop(reg);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    print_latency("grpcio via lodestar xds", &mut via_xds);
    print_latency("lodestar Channel", &mut via_channel);
    let title = "Register -> first call served by the new instance (etcd)";
    Record::new("xds_propagation", title, "grpcio via lodestar xds")
        .peer("lodestar Channel")
        .latency(&via_xds)
        .emit();
    Record::new("xds_propagation", title, "lodestar Channel")
        .latency(&via_channel)
        .emit();
    python.send("quit").await;
    xds.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

fn print_latency(row: &str, samples: &mut [Duration]) {
    samples.sort();
    println!(
        "propagation  {row:<26} p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms  (n={})",
        ms(quantile(samples, 0.5)),
        ms(quantile(samples, 0.99)),
        ms(quantile(samples, 1.0)),
        samples.len()
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// An echo server answering as `id`, serving health, not registered; its
/// address.
async fn echo_unregistered(id: &str) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let instance = Instance::new("echo", id);
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(health)
            .add_service(EchoServer::new(EchoService::new(instance)))
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            )
            .await;
    });
    (port, task)
}

async fn echo(
    registry: &Arc<dyn Registry>,
    id: &str,
) -> (tokio::task::JoinHandle<()>, Registration) {
    let (port, task) = echo_unregistered(id).await;
    (task, register(registry, id, port).await)
}

async fn register(registry: &Arc<dyn Registry>, id: &str, port: u16) -> Registration {
    register_in(registry, "echo", id, port).await
}

async fn register_in(
    registry: &Arc<dyn Registry>,
    service: &str,
    id: &str,
    port: u16,
) -> Registration {
    let instance = Instance::new(service, id).with_endpoint(
        format!("grpc://127.0.0.1:{port}")
            .parse()
            .expect("endpoint"),
    );
    registry.register(instance).await.expect("register")
}

async fn call_until(client: &EchoClient<lodestar_tonic::Channel>, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let request = EchoRequest {
            message: "hi".into(),
            delay_ms: 0,
        };
        if let Ok(reply) = client.clone().say(request).await {
            if reply.into_inner().instance == id {
                return;
            }
        }
    }
    panic!("the lodestar channel never reached {id}");
}

fn bootstrap_json(port: u16) -> String {
    format!(
        r#"{{"xds_servers":[{{"server_uri":"127.0.0.1:{port}","channel_creds":[{{"type":"insecure"}}],"server_features":["xds_v3"]}}],"node":{{"id":"bench","locality":{{}}}}}}"#
    )
}

/// `tests/python/xds_client.py`, driven line by line.
struct Python {
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    _child: tokio::process::Child,
}

impl Python {
    async fn start(bootstrap: &std::path::Path) -> Python {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let python = std::env::var_os("LODESTAR_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("../../target/python/bin/python"));
        let mut child = Command::new(&python)
            .arg(root.join("tests/python/xds_client.py"))
            .arg("echo")
            .env("GRPC_XDS_BOOTSTRAP", bootstrap)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (run `cargo xtask setup` for grpcio)",
                    python.display()
                )
            });
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Python {
            stdin,
            lines,
            _child: child,
        }
    }

    async fn send(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write");
    }

    async fn read(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(60), self.lines.next_line())
            .await
            .expect("the client answers")
            .expect("read")
            .expect("the client is alive")
    }

    async fn ask(&mut self, line: &str) -> String {
        self.send(line).await;
        self.read().await
    }
}

// === 2. N streams: memory and fan-out ===

async fn serve_child(spec: &str) {
    let (url, port) = spec.split_once(' ').expect("URL PORT");
    let registry = lodestar_connect::connect(url).await.expect("etcd");
    let listener = TcpListener::bind(("127.0.0.1", port.parse::<u16>().expect("port")))
        .await
        .expect("bind");
    lodestar_xds::Server::new(registry)
        .serve(listener, std::future::pending())
        .await
        .expect("serve");
}

async fn fanout(registry: &Arc<dyn Registry>, url: &str, streams: usize, instances: usize) {
    let port = free_port();
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .env(CHILD, format!("{url} {port}"))
        .kill_on_drop(true)
        .spawn()
        .expect("the server process");
    let pid = child.id().expect("pid");
    wait_tcp(port).await;
    let idle = rss_kib(pid);

    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for n in 0..streams {
        tasks.push(tokio::spawn(stream(port, n, tx.clone())));
    }
    let mut counts = vec![usize::MAX; streams];
    let mut regs = Vec::new();
    for i in 0..instances {
        regs.push(register_in(registry, FAN, &format!("f{i}"), 1).await);
    }
    wait_all(&mut rx, &mut counts, instances, Instant::now()).await;
    let connected = rss_kib(pid);

    let mut all = Vec::new();
    for round in 1..=5 {
        let start = Instant::now();
        let id = format!("n{round}");
        regs.push(register_in(registry, FAN, &id, 1).await);
        all.push(wait_all(&mut rx, &mut counts, instances + round, start).await);
    }
    all.sort();
    let busy = rss_kib(pid);
    println!(
        "fanout       {streams} streams on a service of {instances} instances: server RSS idle {:.1} MiB, connected {:.1} MiB ({:.1} KiB/stream), after 5 changes {:.1} MiB",
        idle as f64 / 1024.0,
        connected as f64 / 1024.0,
        (connected.saturating_sub(idle)) as f64 / streams as f64,
        busy as f64 / 1024.0
    );
    println!(
        "fanout       one registration -> all {streams} streams: median {:.1} ms, worst of 5 {:.1} ms",
        ms(all[all.len() / 2]),
        ms(all[all.len() - 1])
    );
    Record::new(
        "xds_fanout",
        "xDS streams: server memory and one change to all",
        &format!("{streams} streams, {instances} instances"),
    )
    .headline("change to all streams")
    .metric("streams", "", streams as f64, false)
    .metric(
        "server RSS connected",
        "MiB",
        connected as f64 / 1024.0,
        true,
    )
    .metric(
        "per stream",
        "KiB",
        connected.saturating_sub(idle) as f64 / streams as f64,
        true,
    )
    .metric("change to all streams", "ms", ms(all[all.len() / 2]), true)
    .metric("worst of 5", "ms", ms(all[all.len() - 1]), true)
    .emit();
    for t in tasks {
        t.abort();
    }
    drop(regs);
    let _ = child.kill().await;
}

/// Waits until every stream saw `count` endpoints; the time from `start`
/// to the last one.
async fn wait_all(
    rx: &mut mpsc::UnboundedReceiver<(usize, usize)>,
    counts: &mut [usize],
    count: usize,
    start: Instant,
) -> Duration {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while counts.iter().any(|c| *c != count) {
        let (n, c) = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| {
                let behind = counts.iter().filter(|c| **c != count).count();
                panic!("{behind} streams never saw {count} endpoints")
            })
            .expect("streams alive");
        counts[n] = c;
    }
    start.elapsed()
}

/// One ADS client on its own connection: subscribes to echo's listener,
/// cluster and endpoints, ACKs every response, reports endpoint counts.
async fn stream(port: u16, n: usize, report: mpsc::UnboundedSender<(usize, usize)>) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = mpsc::unbounded_channel();
    let request = |type_url: &str, version: String, nonce: String| DiscoveryRequest {
        node: Some(Node {
            id: format!("bench-{n}"),
            ..Default::default()
        }),
        type_url: type_url.to_string(),
        resource_names: vec![FAN.to_string()],
        version_info: version,
        response_nonce: nonce,
        ..Default::default()
    };
    for type_url in TYPES {
        let _ = tx.send(request(type_url, String::new(), String::new()));
    }
    let mut responses = client
        .stream_aggregated_resources(UnboundedReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    while let Ok(Some(response)) = responses.message().await {
        if response.type_url == ENDPOINTS {
            let endpoints: usize = response
                .resources
                .iter()
                .filter_map(|any| ClusterLoadAssignment::decode(any.value.as_slice()).ok())
                .flat_map(|cla| cla.endpoints)
                .map(|l| l.lb_endpoints.len())
                .sum();
            let _ = report.send((n, endpoints));
        }
        let _ = tx.send(request(
            &response.type_url,
            response.version_info,
            response.nonce,
        ));
    }
}

async fn wait_tcp(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the xDS server process never listened on {port}");
}

/// Resident memory of `pid`, from /proc.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
