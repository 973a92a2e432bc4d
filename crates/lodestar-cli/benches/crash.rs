//! Crash detection and rolling restarts, with real `lodestar serve-echo`
//! processes registered in a real etcd (lease TTL 3 s), under steady load
//! at concurrency 16 (each call bounded by 1 s; a call that times out
//! counts as failed):
//!
//! - **crash**: one of four instances killed with `kill -9` (its
//!   connections close: the client sees the loss at once) or stopped with
//!   SIGSTOP (its socket stays open: only the load, a health check or the
//!   lease's TTL can tell), for lodestar's channel and, beside it, tonic's
//!   `Channel::balance_list` over the same four addresses. Reported: calls
//!   failed, when the last failing call was sent after the signal (traffic
//!   moved away by then), and a timeline;
//! - **rolling**: the four replaced one by one, SIGTERM (deregister, 1 s
//!   propagation delay, drain: the graceful sequence) against kill -9 (the
//!   graceful sequence off), the successor started at once each time.
//!
//! `cargo bench -p lodestar-cli --bench crash [-- SECONDS]`: how long the
//! load runs after a crash (default 5).

use std::{
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use lodestar::{Discovery, Watch};
use lodestar_echo::{EchoRequest, echo_client::EchoClient};
use lodestar_etcd::EtcdRegistry;
use lodestar_test_support::{EtcdNode, bench::Record, free_port};
use tokio::process::{Child, Command};
use tonic::transport::{Channel as TonicChannel, Endpoint};

const BIN: &str = env!("CARGO_BIN_EXE_lodestar");
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
const BUCKET: Duration = Duration::from_millis(100);
const CONCURRENCY: usize = 16;

/// One `lodestar serve-echo` process.
struct Echo {
    child: Child,
    id: String,
    port: u16,
}

impl Echo {
    fn start(url: &str, service: &str, id: &str) -> Self {
        let port = free_port();
        let child = Command::new(BIN)
            .args([
                "--registry",
                url,
                "serve-echo",
                "--service",
                service,
                "--id",
                id,
            ])
            .args(["--ttl", "3", "--listen", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("lodestar serve-echo runs");
        Echo {
            child,
            id: id.to_string(),
            port,
        }
    }

    fn signal(&self, name: &str) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args([name, &pid.to_string()])
                .status();
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        // A stopped process must run again to die of anything but SIGKILL;
        // SIGKILL it is (kill_on_drop), then continue it in case.
        self.signal("-KILL");
        self.signal("-CONT");
    }
}

/// Until the watch's snapshot holds (or lacks) `id`, at most 30 s.
async fn until(watch: &mut Watch, id: &str, present: bool) {
    let wait = async {
        while watch.latest().instance(id).is_some() != present {
            watch.next().await.expect("watch alive");
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{id} {} within 30 s",
                if present { "registered" } else { "gone" }
            )
        });
}

/// One call's outcome: when it was sent (since the run's start) and
/// whether it succeeded.
type Outcome = (Duration, bool);

/// Calls at [`CONCURRENCY`] until `stop`, each bounded by [`CALL_TIMEOUT`].
fn load<T>(
    client: EchoClient<T>,
    start: Instant,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Outcome>>
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + 'static,
    T::Future: Send,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError> + Send,
    T::Error: Into<tonic::codegen::StdError>,
{
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (mut client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let sent = start.elapsed();
                    let request = EchoRequest {
                        message: "x".into(),
                        delay_ms: 0,
                    };
                    let ok = matches!(
                        tokio::time::timeout(CALL_TIMEOUT, client.say(request)).await,
                        Ok(Ok(_))
                    );
                    outcomes.push((sent, ok));
                    if !ok {
                        // A client failing fast must not spin.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                outcomes
            })
        })
        .collect();
    tokio::spawn(async move {
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.await.unwrap_or_default());
        }
        all
    })
}

/// What a run measured, relative to the signal at `signal` (since start).
struct Summary {
    ok: Vec<u64>,
    failed: Vec<u64>,
    n_failed: usize,
    last_failure: Option<Duration>,
    rate_after: f64,
}

fn summarize(outcomes: &[Outcome], signal: Duration, end: Duration) -> Summary {
    // Whole buckets only: the last partial one would read as a drop.
    let slots = (end.as_millis() / BUCKET.as_millis()) as usize;
    let (mut ok, mut failed) = (vec![0u64; slots], vec![0u64; slots]);
    for (sent, good) in outcomes {
        let slot = (sent.as_millis() / BUCKET.as_millis()) as usize;
        if slot >= slots {
            continue;
        }
        if *good {
            ok[slot] += 1;
        } else {
            failed[slot] += 1;
        }
    }
    let failures: Vec<Duration> = outcomes
        .iter()
        .filter(|(_, g)| !g)
        .map(|(s, _)| *s)
        .collect();
    let after = outcomes.iter().filter(|(s, g)| *g && *s >= signal).count();
    Summary {
        ok,
        failed,
        n_failed: failures.len(),
        last_failure: failures.iter().max().map(|s| s.saturating_sub(signal)),
        rate_after: after as f64 / end.saturating_sub(signal).as_secs_f64().max(1e-3),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Four processes, a client, load; at 1 s the signal to the first; load
/// until `after` past it.
async fn crash(
    url: &str,
    watch_on: &Arc<EtcdRegistry>,
    how: &str,
    tonic: bool,
    after: Duration,
) -> Summary {
    let service = format!(
        "crash-{}-{}",
        how.trim_start_matches('-').to_lowercase(),
        if tonic { "tonic" } else { "lodestar" }
    );
    let mut watch = watch_on.watch(&service).await.expect("watch");
    let echoes: Vec<Echo> = (0..4)
        .map(|i| Echo::start(url, &service, &format!("c{i}")))
        .collect();
    for e in &echoes {
        until(&mut watch, &e.id, true).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let task = if tonic {
        let endpoints = echoes.iter().map(|e| {
            Endpoint::from_shared(format!("http://127.0.0.1:{}", e.port)).expect("endpoint")
        });
        let client = EchoClient::new(TonicChannel::balance_list(endpoints));
        load(client, start, stop.clone())
    } else {
        let registry: Arc<dyn Discovery> = watch_on.clone();
        let client =
            EchoClient::new(lodestar_tonic::Channel::builder(registry, &service).connect());
        load(client, start, stop.clone())
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let signal = start.elapsed();
    echoes[0].signal(how);
    tokio::time::sleep(after).await;
    stop.store(true, Ordering::Relaxed);
    let end = start.elapsed();
    let outcomes = task.await.expect("load");
    drop(echoes);
    summarize(&outcomes, signal, end)
}

/// Four processes replaced one by one, by SIGTERM or kill -9, under load.
async fn rolling(url: &str, watch_on: &Arc<EtcdRegistry>, graceful: bool) -> Summary {
    let service = format!("rolling-{}", if graceful { "term" } else { "kill" });
    let mut watch = watch_on.watch(&service).await.expect("watch");
    let mut echoes: Vec<Echo> = (0..4)
        .map(|i| Echo::start(url, &service, &format!("g0-{i}")))
        .collect();
    for e in &echoes {
        until(&mut watch, &e.id, true).await;
    }
    let registry: Arc<dyn Discovery> = watch_on.clone();
    let client = EchoClient::new(lodestar_tonic::Channel::builder(registry, &service).connect());
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let task = load(client, start, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let signal = start.elapsed();
    for i in 0..4 {
        let mut old = echoes.remove(0);
        old.signal(if graceful { "-TERM" } else { "-KILL" });
        let _ = tokio::time::timeout(Duration::from_secs(10), old.child.wait()).await;
        let new = Echo::start(url, &service, &format!("g1-{i}"));
        until(&mut watch, &new.id, true).await;
        echoes.push(new);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let end = start.elapsed();
    let outcomes = task.await.expect("load");
    drop(echoes);
    summarize(&outcomes, signal, end)
}

fn print(what: &str, s: &Summary) {
    println!(
        "{what}: {} calls failed; last failing call sent {} after the signal; {:.0} ok calls/s after it",
        s.n_failed,
        s.last_failure
            .map_or("never".to_string(), |d| format!("{d:.1?}")),
        s.rate_after
    );
}

fn crash_record(row: &str, s: &Summary) -> Record {
    Record::new(
        "crash",
        "Crash detection: one of four instances crashes under load (c=16, calls bounded by 1 s)",
        row,
    )
    .metric("failed", "calls", s.n_failed as f64, true)
    .metric(
        "last failure sent after",
        "ms",
        s.last_failure.map_or(0.0, ms),
        true,
    )
    .metric("ok after", "calls/s", s.rate_after, false)
    .timeline(BUCKET, &s.ok, &s.failed)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let after: f64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5.0);
    let after = Duration::from_secs_f64(after);
    let etcd = EtcdNode::start().await;
    let url = etcd.url();
    let watcher = Arc::new(
        EtcdRegistry::connect(url.parse().expect("url"))
            .await
            .expect("connect"),
    );
    let note = "kill -9 closes the victim's connections; SIGSTOP keeps its socket open, so \
                only the load (p2c's in-flight cost, the ejection of failing instances), a \
                health check or the lease's 3 s TTL can tell. `last failure sent after`: the \
                send time of the last call that failed, from the signal (traffic had moved \
                away by then; 0 when none failed). The chart shows the kill -9 and SIGSTOP \
                runs of both clients.";
    for (how, label) in [("-KILL", "kill -9"), ("-STOP", "SIGSTOP")] {
        let theirs = crash(&url, &watcher, how, true, after).await;
        print(&format!("tonic balance_list, {label}"), &theirs);
        let ours = crash(&url, &watcher, how, false, after).await;
        print(&format!("lodestar channel, {label}"), &ours);
        let peer = format!("tonic balance_list, {label}");
        crash_record(&peer, &theirs).note(note).emit();
        let ours = crash_record(&format!("lodestar channel, {label}"), &ours).peer(&peer);
        let ours = if how == "-KILL" {
            ours.headline("failed")
        } else {
            ours
        };
        ours.emit();
    }
    let title =
        "Rolling restart of 4 `lodestar serve-echo` processes under load (c=16): graceful vs off";
    let graceful = rolling(&url, &watcher, true).await;
    print("rolling restart, SIGTERM (graceful)", &graceful);
    let abrupt = rolling(&url, &watcher, false).await;
    print("rolling restart, kill -9 (graceful sequence off)", &abrupt);
    let peer = "graceful: SIGTERM (deregister, 1 s delay, drain)";
    for (row, s) in [
        (peer, &graceful),
        ("graceful sequence off: kill -9", &abrupt),
    ] {
        let record = Record::new("rolling", title, row)
            .metric("failed", "calls", s.n_failed as f64, true)
            .metric("ok", "calls/s", s.rate_after, false)
            .timeline(BUCKET, &s.ok, &s.failed);
        let record = if row == peer {
            record.note("Each instance signalled in turn and its successor started at once, the next once the successor is registered; lodestar's channel (p2c) throughout.")
        } else {
            record.peer(peer).headline("failed")
        };
        record.emit();
    }
}
