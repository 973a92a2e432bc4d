//! The gateway beside nginx, on loopback, one run:
//!
//! - 3 HTTP echo backends (child processes of this bench), registered in a
//!   real etcd;
//! - the gateway (a child process: discovery, p2c, lanes, retries on; one
//!   access log line per request, to a file) and nginx (Debian's package,
//!   a static upstream of the same 3 backends with keep-alive, access log to
//!   a file), each driven by `wrk` with the same threads, connections and
//!   duration; requests carry `lodestar-color: blue` (no blue instance: the
//!   gateway falls back to the base lane on each);
//! - the time from a fourth instance registering to its first request
//!   through the gateway, and from its SIGTERM (deregister, 1 s propagation
//!   delay, drain) to its last, under a light load that must see no failure.
//!
//! `cargo bench -p lodestar-gateway --bench vs_nginx` (or `cargo xtask
//! bench`, which installs nginx and wrk). `WRK_DURATION` (seconds, default
//! 10) and `WRK_CONNECTIONS` (default 64) tune the runs.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use lodestar::{Endpoint, Instance};
use lodestar_gateway::{Gateway, Listeners, config::Config};
use lodestar_test_support::bench::Record;
use lodestar_test_support::{EtcdNode, free_port};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::TcpListener,
    process::{Child, Command},
};

const ROLE: &str = "LODESTAR_BENCH_ROLE";

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match std::env::var(ROLE).as_deref() {
        Ok("echo") => runtime.block_on(echo_role()),
        Ok("gateway") => runtime.block_on(gateway_role()),
        _ => runtime.block_on(bench()),
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

// === child roles ===

/// An HTTP echo, registered; SIGTERM: deregister, 1 s propagation delay
/// (still serving), then drain.
async fn echo_role() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let registry = lodestar_connect::connect(&env("REGISTRY"))
        .await
        .expect("registry");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let instance = Instance::new("web", env("ID"))
        .with_version("v1")
        .with_endpoint(Endpoint::new("http", "127.0.0.1", addr.port()).expect("endpoint"));
    let server = lodestar_echo::http::Server::new(instance.clone());
    let serving = tokio::spawn(server.serve(listener, async move {
        let _ = term.recv().await;
        let _ = registration_stop().await;
    }));
    let started = now_ns();
    let registration = registry.register(instance).await.expect("register");
    println!("registered {started} {} {addr}", now_ns());
    REGISTRATION.lock().expect("lock").replace(registration);
    let _ = serving.await;
}

static REGISTRATION: Mutex<Option<lodestar::Registration>> = Mutex::new(None);

async fn registration_stop() -> Option<()> {
    let registration = REGISTRATION.lock().ok()?.take()?;
    let _ = registration.deregister().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    Some(())
}

/// The gateway: `/` to `web`, p2c, default retries, access log on stderr.
async fn gateway_role() {
    use tokio::signal::unix::{SignalKind, signal};
    // As `lodestar gateway` logs: buffered, written by a background thread.
    let (log, guard) = lodestar_gateway::log_writer::stderr();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GATEWAY_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,lodestar_gateway=info")
            }),
        )
        .with_writer(move || log.clone())
        .with_ansi(false)
        .init();
    let registry = lodestar_connect::connect(&env("REGISTRY"))
        .await
        .expect("registry");
    let mut config = Config::default()
        .with_route_flags(&["/=web"])
        .expect("routes");
    // wrk's `lodestar-color` must reach the balancer (the base-lane
    // fallback is part of what is measured).
    config.trust.headers = true;
    let gateway = Gateway::new(registry, config);
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let shutdown = async move {
        let _ = term.recv().await;
    };
    // WORKERS=0: one listener on the multi-threaded runtime (`serve`);
    // N: N single-threaded workers (`serve_workers`, what the CLI runs).
    match env("WORKERS")
        .parse::<usize>()
        .expect("WORKERS is a number")
    {
        0 => {
            let listener = TcpListener::bind(env("LISTEN")).await.expect("bind");
            gateway.serve(listener, shutdown).await;
        }
        workers => {
            let addr = env("LISTEN").parse().expect("LISTEN is an address");
            let listeners = Listeners::bind(addr, workers).expect("bind");
            gateway
                .serve_workers(listeners, shutdown)
                .await
                .expect("workers served");
        }
    }
    guard.flush();
}

// === the bench ===

fn child(role: &str, vars: &[(&str, &str)], stderr: Stdio) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("the bench binary"));
    command
        .env(ROLE, role)
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true);
    command
}

/// Starts an echo child; its address and when its registration started
/// and returned (ns).
async fn start_echo(registry: &str, id: &str) -> (Child, SocketAddr, (u128, u128)) {
    let mut echo = child("echo", &[("REGISTRY", registry), ("ID", id)], Stdio::null())
        .spawn()
        .expect("echo child");
    let mut lines = BufReader::new(echo.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the echo registered in time")
        .expect("readable")
        .expect("a line");
    let mut words = line.split_whitespace().skip(1);
    let mut time = || -> u128 { words.next().and_then(|w| w.parse().ok()).expect("a time") };
    let (started, returned) = (time(), time());
    let addr: SocketAddr = words
        .next()
        .and_then(|w| w.parse().ok())
        .expect("an address");
    (echo, addr, (started, returned))
}

fn tool(var: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        return PathBuf::from(path);
    }
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
    {
        let path = Path::new(dir).join(name);
        if path.is_file() {
            return path;
        }
    }
    panic!("{name} not found: run `cargo xtask setup` (Debian package `{name}`) or set {var}");
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn get(client: &HttpClient, addr: SocketAddr) -> Result<(u16, String), String> {
    get_path(client, addr, "/").await
}

async fn get_path(
    client: &HttpClient,
    addr: SocketAddr,
    path: &str,
) -> Result<(u16, String), String> {
    let request = http::Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(5), client.request(request))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
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

async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn nginx_conf(dir: &Path, listen: SocketAddr, backends: &[SocketAddr]) -> String {
    let servers: String = backends
        .iter()
        .map(|b| format!("        server {b};\n"))
        .collect();
    let d = dir.display();
    format!(
        "worker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n    access_log {d}/access.log;\n\
             client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n\
             upstream web {{\n{servers}        keepalive 256;\n    }}\n\
             server {{\n        listen {listen};\n        location / {{\n\
                     proxy_pass http://web;\n            proxy_http_version 1.1;\n\
                     proxy_set_header Connection \"\";\n\
                     proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
                     proxy_next_upstream error timeout http_502 http_503 http_504;\n        }}\n    }}\n}}\n"
    )
}

/// One wrk run's figures.
#[derive(Debug, Default)]
struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: String,
}

fn duration_ms(text: &str) -> Option<f64> {
    let (number, unit) = text
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| text.split_at(i))?;
    let n: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

fn parse_wrk(output: &str) -> Figures {
    let mut figures = Figures::default();
    let mut errors = Vec::new();
    for line in output.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("50%") => figures.p50_ms = words.next().and_then(duration_ms).unwrap_or(f64::NAN),
            Some("99%") => figures.p99_ms = words.next().and_then(duration_ms).unwrap_or(f64::NAN),
            Some("Requests/sec:") => {
                figures.rps = words
                    .next()
                    .and_then(|w| w.parse().ok())
                    .unwrap_or(f64::NAN)
            }
            Some("Non-2xx") | Some("Socket") => errors.push(line.to_string()),
            _ => {}
        }
    }
    figures.errors = if errors.is_empty() {
        "none".into()
    } else {
        errors.join("; ")
    };
    figures
}

async fn wrk(addr: SocketAddr, seconds: u64, connections: u64) -> Figures {
    let output = Command::new(tool("WRK_BIN", "wrk"))
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-H",
            "lodestar-color: blue",
            &format!("http://{addr}/"),
        ])
        .output()
        .await
        .expect("wrk ran");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_wrk(&text)
}

/// Stops nginx (fast shutdown of master and workers) when dropped.
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(pid) = self.0.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            for _ in 0..50 {
                if self.0.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

async fn bench() {
    let seconds: u64 = std::env::var("WRK_DURATION")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let connections: u64 = std::env::var("WRK_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let nginx_bin = tool("NGINX_BIN", "nginx");
    let _ = tool("WRK_BIN", "wrk");
    let dir = std::env::temp_dir().join(format!("lodestar-vs-nginx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // nginx's workers run as nobody when started as root.
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777));

    let etcd = EtcdNode::start().await;
    let url = etcd.url();
    let mut echoes = Vec::new();
    let mut backends = Vec::new();
    for id in ["e1", "e2", "e3"] {
        let (echo, addr, _) = start_echo(&url, id).await;
        echoes.push(echo);
        backends.push(addr);
    }

    let client: HttpClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let access = "warn,lodestar_gateway=info";
    let (gateway_child, gateway_addr) = start_gateway(&dir, &url, &client, cores, access).await;
    let gateway_pid = gateway_child.id().expect("gateway running");
    let (quiet_child, quiet_addr) = start_gateway(&dir, &url, &client, cores, "warn").await;
    let quiet_pid = quiet_child.id().expect("gateway running");
    let (shared_child, shared_addr) = start_gateway(&dir, &url, &client, 0, access).await;
    let shared_pid = shared_child.id().expect("gateway running");

    let nginx_addr: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(&dir, nginx_addr, &backends)).expect("nginx.conf");
    let nginx_child = Nginx(
        Command::new(&nginx_bin)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nginx ran"),
    );
    wait_until("nginx to answer", async || {
        matches!(get(&client, nginx_addr).await, Ok((200, _)))
    })
    .await;

    println!(
        "vs_nginx: 3 HTTP echo backends on loopback; wrk -t2 -c{connections} -d{seconds}s --latency, GET /"
    );
    // Warm both up (connections, caches, p2c's estimates).
    wrk(nginx_addr, 2, connections).await;
    wrk(gateway_addr, 2, connections).await;
    wrk(shared_addr, 2, connections).await;
    wrk(quiet_addr, 2, connections).await;
    let nginx_pid = nginx_child.0.id().expect("nginx running");
    // Interleaved rounds, each target once per round, so a machine whose
    // load changes (it is shared) weighs on every target alike; each
    // figure is the median over the rounds.
    let targets = [
        ("nginx", nginx_addr, nginx_pid),
        ("gateway", gateway_addr, gateway_pid),
        ("gateway-mt", shared_addr, shared_pid),
        ("gateway-nolog", quiet_addr, quiet_pid),
    ];
    let rounds: u64 = std::env::var("WRK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut runs: Vec<Vec<(Figures, u64)>> = targets.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (i, (_, addr, pid)) in targets.iter().enumerate() {
            let cpu = cpu_ticks(*pid);
            let figures = wrk(*addr, seconds, connections).await;
            runs[i].push((figures, cpu_ticks(*pid) - cpu));
        }
    }
    drop(shared_child);
    drop(quiet_child);
    println!("{rounds} interleaved rounds of {seconds} s per target; medians over the rounds");
    println!(
        "{:<14} {:>12} {:>10} {:>10} {:>14}  errors",
        "", "req/s", "p50 ms", "p99 ms", "CPU us/req"
    );
    let mut medians = Vec::new();
    let mut records = Vec::new();
    for ((name, _, _), runs) in targets.iter().zip(&runs) {
        let median = |f: &dyn Fn(&Figures) -> f64| {
            let mut values: Vec<f64> = runs.iter().map(|(r, _)| f(r)).collect();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        let (rps, p50, p99) = (
            median(&|f| f.rps),
            median(&|f| f.p50_ms),
            median(&|f| f.p99_ms),
        );
        // Ticks are 1/100 s (USER_HZ); CPU per request is what a shared,
        // loaded machine changes least.
        let ticks: u64 = runs.iter().map(|(_, t)| t).sum();
        let requests: f64 = runs.iter().map(|(f, _)| f.rps * seconds as f64).sum();
        let per_request = ticks as f64 * 10_000.0 / requests;
        let errors: Vec<&str> = runs.iter().map(|(f, _)| f.errors.as_str()).collect();
        println!(
            "{name:<14} {rps:>12.0} {p50:>10.3} {p99:>10.3} {per_request:>14.1}  {}",
            errors.join(" / ")
        );
        medians.push((rps, p99));
        records.push((
            rps,
            p50,
            p99,
            per_request,
            runs.iter()
                .map(|(f, _)| f.errors.clone())
                .collect::<Vec<_>>(),
        ));
    }
    let (nginx_rps, nginx_p99) = medians[0];
    for (i, label) in [
        (1, "gateway/nginx"),
        (
            2,
            "gateway-mt/nginx (one listener on tokio's multi-threaded runtime)",
        ),
        (3, "gateway-nolog/nginx (access log off; nginx's stays on)"),
    ] {
        let (rps, p99) = medians[i];
        let goal = if i == 1 {
            " (goals: >= 0.80x, <= 1.50x)"
        } else {
            ""
        };
        println!(
            "{label}: throughput {:.2}x, p99 {:.2}x{goal}",
            rps / nginx_rps,
            p99 / nginx_p99
        );
    }
    let title = format!(
        "HTTP gateway vs nginx: 3 echo backends, wrk -t2 -c{connections}, {rounds} interleaved rounds of {seconds} s, GET /"
    );
    let names = [
        "nginx (static upstream, keep-alive)",
        "lodestar gateway (discovery, p2c, access log; thread per core)",
        "lodestar gateway on tokio's multi-threaded runtime",
        "lodestar gateway, access log off",
    ];
    for (i, name) in names.iter().enumerate() {
        let (rps, p50, p99, per_request, ref errors) = records[i];
        let record = Record::new("gateway", &title, name)
            .metric("requests", "/s", rps, false)
            .metric("p50", "ms", p50, true)
            .metric("p99", "ms", p99, true)
            .metric("CPU", "us/request", per_request, true);
        let record = if errors.iter().all(|e| e == "none") {
            record
        } else {
            record.note(&format!("{name}: wrk reported {}", errors.join(" / ")))
        };
        let record = match i {
            0 => record.note("Medians over interleaved rounds. nginx and the gateway both access-log every request to a file (the gateway-off row aside); the gateway's requests carry a colour header (no such lane: base-lane fallback). wrk shares the 2 cores with the proxy and the backends; CPU per request is the proxy's own (user + system, with nginx's workers)."),
            1 => record.peer(names[0]).headline("requests"),
            _ => record.peer(names[0]),
        };
        record.emit();
    }

    lifecycle(&url, gateway_addr).await;
    drop(echoes);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts a gateway child with `workers` (0: one listener on the
/// multi-threaded runtime) and waits until it reaches the 3 instances.
async fn start_gateway(
    dir: &Path,
    url: &str,
    client: &HttpClient,
    workers: usize,
    log: &str,
) -> (Child, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let file = std::fs::File::create(dir.join(format!("gateway-{workers}-{}.log", log.len())))
        .expect("log file");
    let child = child(
        "gateway",
        &[
            ("REGISTRY", url),
            ("LISTEN", &addr.to_string()),
            ("WORKERS", &workers.to_string()),
            ("GATEWAY_LOG", log),
        ],
        Stdio::from(file),
    )
    .spawn()
    .expect("gateway child");
    let seen = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    wait_until("the gateway to reach 3 instances", async || {
        if let Ok((200, id)) = get(client, addr).await {
            seen.lock().expect("lock").insert(id);
        }
        seen.lock().expect("lock").len() == 3
    })
    .await;
    (child, addr)
}

/// User + system CPU ticks of `pid` and its children (nginx's workers).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = |pid: &str| -> Option<(u64, u32)> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command, which is in parentheses.
        let rest = &text[text.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ppid = fields.get(1)?.parse().ok()?;
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime, ppid))
    };
    let mut total = stat(&pid.to_string()).map_or(0, |s| s.0);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(name) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if let Some((ticks, ppid)) = stat(name)
            && ppid == pid
        {
            total += ticks;
        }
    }
    total
}

/// Registration to first request, SIGTERM to last, under a light load
/// (round robin).
async fn lifecycle(url: &str, gateway: SocketAddr) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::<(u128, String)>::new()));
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client: HttpClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, answers, failures, client) = (
                stop.clone(),
                answers.clone(),
                failures.clone(),
                client.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match get_path(&client, gateway, "/rr/").await {
                        Ok((200, id)) => answers.lock().expect("lock").push((now_ns(), id)),
                        _ => {
                            failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut e4, _, (registering, registered)) = start_echo(url, "e4").await;
    let answered_by_e4 = |answers: &Mutex<Vec<(u128, String)>>| {
        answers
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, id)| id == "e4")
            .map(|(t, _)| *t)
            .collect::<Vec<_>>()
    };
    wait_until("e4 to take a request", async || {
        !answered_by_e4(&answers).is_empty()
    })
    .await;
    let first = answered_by_e4(&answers)[0];
    tokio::time::sleep(Duration::from_secs(1)).await;
    let term = now_ns();
    let pid = e4.id().expect("e4 running").to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(20), e4.wait()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for worker in workers {
        let _ = worker.await;
    }
    let e4_answers = answered_by_e4(&answers);
    let last = e4_answers.last().copied().unwrap_or(term);
    let ms = |a: u128, b: u128| (a as f64 - b as f64) / 1e6;
    println!(
        "lifecycle (round robin, 4 clients in a loop, {} requests, {} failed, {} to the new instance): register call -> first request {:.1} ms (the call returned after {:.1} ms); \
         SIGTERM -> last request {:+.1} ms (propagation delay 1000 ms; negative: \
         none reached it after the signal)",
        answers.lock().expect("lock").len(),
        failures.load(std::sync::atomic::Ordering::Relaxed),
        e4_answers.len(),
        ms(first, registering),
        ms(registered, registering),
        ms(last, term),
    );
}
