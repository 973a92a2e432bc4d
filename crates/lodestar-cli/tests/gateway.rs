//! `lodestar gateway` as a process in front of `lodestar serve-echo`
//! processes registered in real etcd and built-in registry nodes: kill -9
//! and rolling restarts under load, SIGTERM with requests in flight, a large
//! body streamed through, hot reload on SIGHUP.

mod support;

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use lodestar_test_support::{EtcdNode, eventually, free_port};
use support::{PATIENCE, lodestar, signal};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Child,
};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// `GET path`: the status and the instance that answered.
async fn get(client: &HttpClient, addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let request = http::Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let instance = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["instance"].as_str().map(str::to_string))
        .unwrap_or_default();
    Ok((status, instance))
}

/// A `serve-echo` process with an HTTP echo.
fn echo(registry: &str, id: &str) -> Child {
    lodestar(
        registry,
        &[
            "serve-echo",
            "--service",
            "web",
            "--id",
            id,
            "--version",
            "v1",
            "--ttl",
            "30",
            "--http-listen",
            "127.0.0.1:0",
            "--propagation-delay-ms",
            "1000",
        ],
    )
    .spawn()
    .unwrap()
}

/// A `lodestar gateway` process; its address. Its stderr (one access log
/// line per request) is read all along, or a full pipe would stall it; the
/// lines come out of `gateway_log`.
fn gateway(registry: &str, extra: &[&str]) -> (Child, SocketAddr) {
    let (child, addr, _) = gateway_log(registry, extra);
    (child, addr)
}

/// [`gateway`], with its stderr lines.
fn gateway_log(
    registry: &str,
    extra: &[&str],
) -> (
    Child,
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen = addr.to_string();
    let mut args = vec!["gateway", "--listen", listen.as_str()];
    args.extend_from_slice(extra);
    let mut child = lodestar(registry, &args).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = tx.send(line);
        }
    });
    (child, addr, rx)
}

/// Waits for a line containing `needle`.
async fn wait_for_line(
    lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    needle: &str,
) -> String {
    loop {
        let line = tokio::time::timeout(PATIENCE, lines.recv())
            .await
            .expect("the line in time")
            .expect("the gateway still running");
        if line.contains(needle) {
            return line;
        }
    }
}

/// Waits until requests to `/` are answered by exactly `ids`.
async fn wait_for_instances(addr: SocketAddr, ids: &[&str]) {
    let client = http_client();
    let want: BTreeSet<String> = ids.iter().map(|s| s.to_string()).collect();
    eventually(&format!("{ids:?} behind the gateway"), PATIENCE, || {
        let client = client.clone();
        let want = want.clone();
        async move {
            let mut seen = BTreeSet::new();
            for _ in 0..(want.len() * 10) {
                match get(&client, addr, "/").await {
                    Ok((200, id)) => {
                        seen.insert(id);
                    }
                    _ => return false,
                }
            }
            seen == want
        }
    })
    .await;
}

/// Concurrent GET loops until stopped: counts answers and failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(addr: SocketAddr, path: &'static str, workers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let client = http_client();
        let tasks = (0..workers)
            .map(|_| {
                let (stop, ok, failed, client) =
                    (stop.clone(), ok.clone(), failed.clone(), client.clone());
                tokio::spawn(async move {
                    let mut errors = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        match get(&client, addr, path).await {
                            Ok((200, _)) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                if errors.len() < 5 {
                                    errors.push(format!("{other:?}"));
                                }
                            }
                        }
                    }
                    errors
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    fn failed(&self) -> usize {
        self.failed.load(Ordering::Relaxed)
    }

    /// Stops; (answered, failed, some errors).
    async fn finish(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut errors = Vec::new();
        for task in self.tasks {
            errors.extend(task.await.unwrap());
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

fn pid(child: &Child) -> String {
    child.id().expect("running").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_an_instance_under_load_fails_nothing_once_it_is_ejected() {
    let etcd = EtcdNode::start().await;
    let url = etcd.url();
    let _a = echo(&url, "a");
    let mut b = echo(&url, "b");
    let _c = echo(&url, "c");
    let (_gw, addr) = gateway(&url, &["--route", "/=web"]);
    wait_for_instances(addr, &["a", "b", "c"]).await;

    let load = Load::start(addr, "/", 4);
    tokio::time::sleep(Duration::from_secs(1)).await;
    b.start_kill().unwrap(); // SIGKILL: its record stays until the lease expires
    b.wait().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_ejection = load.failed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (ok, failed, errors) = load.finish().await;
    assert!(ok > 100, "{ok} requests answered");
    assert_eq!(
        failed, at_ejection,
        "failures after the ejection: {errors:?}"
    );
    // Connect refused goes to another instance: nothing failed at all.
    assert_eq!(failed, 0, "{errors:?}");
    wait_for_instances(addr, &["a", "c"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_behind_the_gateway_fails_no_request() {
    let node = lodestar_registry::server::Server::bind(lodestar_registry::server::Config::new(
        ([127, 0, 0, 1], 0).into(),
    ))
    .await
    .unwrap();
    let url = format!("lodestar://{}", node.local_addr().unwrap());
    let _node = tokio::spawn(node.serve(std::future::pending()));
    let mut backends = [echo(&url, "a1"), echo(&url, "b1"), echo(&url, "c1")];
    let (_gw, addr) = gateway(&url, &["--route", "/=web"]);
    wait_for_instances(addr, &["a1", "b1", "c1"]).await;

    let load = Load::start(addr, "/", 4);
    for (i, name) in ["a2", "b2", "c2"].iter().enumerate() {
        // The replacement first, then the old one leaves gracefully.
        let fresh = echo(&url, name);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let old = std::mem::replace(&mut backends[i], fresh);
        signal(&old, "-TERM");
        let status = tokio::time::timeout(PATIENCE, old.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert!(status.status.success());
    }
    let (ok, failed, errors) = load.finish().await;
    assert!(ok > 100, "{ok} requests answered");
    assert_eq!(failed, 0, "{errors:?}");
    wait_for_instances(addr, &["a2", "b2", "c2"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_requests_in_flight_finish_and_refuses_new_connections() {
    let etcd = EtcdNode::start().await;
    let url = etcd.url();
    let _a = echo(&url, "a");
    let (mut gw, addr) = gateway(&url, &["--route", "/=web"]);
    wait_for_instances(addr, &["a"]).await;
    let in_flight: Vec<_> = (0..5)
        .map(|_| {
            tokio::spawn(async move {
                // A fresh client each: separate connections.
                get(&http_client(), addr, "/delay/1500").await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    signal(&gw, "-TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after SIGTERM"
    );
    for request in in_flight {
        assert_eq!(request.await.unwrap().map(|r| r.0), Ok(200));
    }
    let status = tokio::time::timeout(PATIENCE, gw.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// The resident set of a process, in KiB.
fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_streams_through_without_growing_the_gateway() {
    use http_body_util::StreamBody;
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 4096; // 256 MiB

    let etcd = EtcdNode::start().await;
    let url = etcd.url();
    let _a = echo(&url, "a");
    let (gw, addr) = gateway(&url, &["--route", "/=web"]);
    wait_for_instances(addr, &["a"]).await;
    let gw_pid = pid(&gw);
    let before = rss_kib(&gw_pid);

    // The body is made as it is sent, the echo streams it back, and the
    // answer is counted as it comes: nobody holds it whole.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(4);
    tokio::spawn(async move {
        let chunk = Bytes::from(vec![7u8; CHUNK]);
        for _ in 0..CHUNKS {
            if tx
                .send(Ok(http_body::Frame::data(chunk.clone())))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let client: Client<HttpConnector, _> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let request = http::Request::post(format!("http://{addr}/upload"))
        .body(body)
        .unwrap();
    let response = tokio::time::timeout(PATIENCE, client.request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = 0usize;
    let mut peak = before;
    let mut frames = 0u64;
    while let Some(frame) = tokio::time::timeout(PATIENCE, body.frame()).await.unwrap() {
        if let Ok(data) = frame.unwrap().into_data() {
            received += data.len();
        }
        frames += 1;
        if frames % 256 == 0 {
            peak = peak.max(rss_kib(&gw_pid));
        }
    }
    assert_eq!(received, CHUNK * CHUNKS);
    let growth_mib = peak.saturating_sub(before) / 1024;
    assert!(
        growth_mib < 32,
        "the gateway grew by {growth_mib} MiB for a 256 MiB body"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_file_under_load_and_a_bad_file_is_refused() {
    let etcd = EtcdNode::start().await;
    let url = etcd.url();
    let _one = echo_of(&url, "one", "one-a");
    let _two = echo_of(&url, "two", "two-a");
    let dir = std::env::temp_dir().join(format!("lodestar-gw-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gateway.toml");
    let route = |service: &str| format!("[[route]]\nprefix = \"/\"\nservice = \"{service}\"\n");
    std::fs::write(&file, route("one")).unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let (gw, addr, mut stderr) = gateway_log(
        &url,
        &["--config", file.to_str().unwrap(), "--admin-listen", &admin],
    );
    wait_for_instances(addr, &["one-a"]).await;

    let load = Load::start(addr, "/", 3);
    std::fs::write(&file, route("two")).unwrap();
    signal(&gw, "-HUP");
    wait_for_instances(addr, &["two-a"]).await;
    std::fs::write(&file, "[[route]]\nprefix = \"/\"\nservice = ").unwrap();
    signal(&gw, "-HUP");
    let refused = wait_for_line(&mut stderr, "configuration refused").await;
    assert!(refused.contains("invalid TOML"), "{refused}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_for_instances(addr, &["two-a"]).await;
    let (ok, failed, errors) = load.finish().await;
    assert!(ok > 50, "{ok}");
    assert_eq!(failed, 0, "{errors:?}");

    // The admin listener: health and metrics of what was served.
    let admin: SocketAddr = admin.parse().unwrap();
    let metrics = lodestar_test_support::http::get(&admin.to_string(), "/metrics")
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(
            "lodestar_gateway_requests_total{route=\"/\",instance=\"two-a\",code=\"200\"}"
        ),
        "{text}"
    );
    assert!(text.contains("lodestar_gateway_request_duration_seconds_bucket{route=\"/\",instance=\"one-a\",le=\"+Inf\"}"), "{text}");
    let health = lodestar_test_support::http::get(&admin.to_string(), "/healthz")
        .await
        .unwrap();
    assert_eq!(health.status, 200);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `serve-echo` process of `service`.
fn echo_of(registry: &str, service: &str, id: &str) -> Child {
    lodestar(
        registry,
        &[
            "serve-echo",
            "--service",
            service,
            "--id",
            id,
            "--http-listen",
            "127.0.0.1:0",
        ],
    )
    .spawn()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_gateway_flags_and_files_are_refused_with_the_reason() {
    // Checked before the registry is contacted: none is needed.
    let url = "lodestar://127.0.0.1:1".to_string();
    let out = support::run(&url, &["gateway", "--listen", "127.0.0.1:0"]).await;
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("no route"), "{}", out.stderr);
    let out = support::run(
        &url,
        &["gateway", "--listen", "127.0.0.1:0", "--route", "api=web"],
    )
    .await;
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("must start with '/'"), "{}", out.stderr);
    let file = std::env::temp_dir().join(format!("lodestar-gw-bad-{}.toml", std::process::id()));
    std::fs::write(
        &file,
        "[[route]]\nprefix = \"/\"\nservice = \"web\"\npolicy = \"fastest\"\n",
    )
    .unwrap();
    let out = support::run(
        &url,
        &[
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--config",
            file.to_str().unwrap(),
        ],
    )
    .await;
    let _ = std::fs::remove_file(&file);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .contains("route /: unknown balancing policy \"fastest\""),
        "{}",
        out.stderr
    );
}
