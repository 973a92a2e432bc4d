//! `lodestar call`: drive echo calls through the balanced channel and report
//! where they went and how long they took.

use std::{
    collections::BTreeMap,
    io::IsTerminal,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Duration,
};

use lodestar::balance::{BuiltinPolicy, Route};
use lodestar_echo::{EchoRequest, echo_client::EchoClient};
use lodestar_tonic::{Channel, RouteExt};
use tokio::time::Instant;

use crate::{
    cmd::Shutdown,
    output::{errln, outln},
    registry,
};

/// Flags of `lodestar call`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The service to call.
    service: String,
    /// Number of calls (default 100 unless --duration is given).
    #[arg(long, conflicts_with = "duration")]
    count: Option<u64>,
    /// Keep calling for this many seconds.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Calls in flight at once.
    #[arg(long, short, default_value_t = 1)]
    concurrency: usize,
    /// Balancing policy: round_robin, random, weighted, p2c, least_request, consistent_hash.
    #[arg(long, default_value = "p2c")]
    policy: BuiltinPolicy,
    /// Pin calls to this version.
    #[arg(long)]
    version: Option<String>,
    /// Send calls in this colour lane.
    #[arg(long)]
    color: Option<String>,
    /// Key for consistent-hash balancing.
    #[arg(long)]
    hash_key: Option<String>,
    /// Latency the server should add to each call, in milliseconds.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    delay_ms: u32,
    /// Print a JSON summary as the last line: {"ok", "errors", "by_instance", "latency_ms", "duration_s", "calls_per_second"}.
    #[arg(long)]
    json: bool,
}

/// Time given to the channel's subscriber record to be removed at exit.
const UNSUBSCRIBE: Duration = Duration::from_millis(150);

/// What the workers gather.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    errors: BTreeMap<String, u64>,
    by_instance: BTreeMap<String, u64>,
    latencies: Vec<Duration>,
}

/// Runs the calls and prints the summary; exit 1 if any call failed.
pub(crate) async fn run(url: &str, args: Args) -> anyhow::Result<ExitCode> {
    if args.concurrency == 0 {
        anyhow::bail!("--concurrency must be at least 1");
    }
    let mut shutdown = Shutdown::new()?;
    let registry = registry::connect(url, None).await?;
    let channel = Channel::builder(registry.discovery, &args.service)
        .policy(args.policy)
        .connect();
    let client = EchoClient::new(channel);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let template = request_template(&args)?;
    let budget = Budget::new(&args);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            tokio::spawn(worker(
                client.clone(),
                clone_request(&template),
                budget.clone(),
                tally.clone(),
            ))
        })
        .collect();
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| tokio::spawn(progress(tally.clone(), started)));
    let all = async {
        for worker in workers {
            let _ = worker.await;
        }
    };
    tokio::select! {
        () = all => {}
        _ = shutdown.recv() => budget.stop(),
    }
    if let Some(progress) = progress {
        progress.abort();
        errln!();
    }
    // The channel removes its subscriber record in the background when it
    // drops: give that a moment before the process exits, so `lodestar
    // subscribers` does not go on listing a client that is gone.
    drop(client);
    tokio::time::sleep(UNSUBSCRIBE).await;
    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
    let json = crate::output::format(args.json) == crate::output::Format::Json;
    report(&tally, started.elapsed(), json);
    Ok(if tally.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// How many calls remain, or until when to call; shared by the workers.
#[derive(Clone, Debug)]
struct Budget {
    left: Arc<std::sync::atomic::AtomicI64>,
    until: Option<Instant>,
}

impl Budget {
    fn new(args: &Args) -> Self {
        let count = match (args.count, args.duration) {
            (Some(n), _) => i64::try_from(n).unwrap_or(i64::MAX),
            (None, Some(_)) => i64::MAX,
            (None, None) => 100,
        };
        let until = args
            .duration
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .map(|d| Instant::now() + d);
        Self {
            left: Arc::new(count.into()),
            until,
        }
    }

    fn take(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.until.is_none_or(|until| Instant::now() < until) && self.left.fetch_sub(1, Relaxed) > 0
    }

    fn stop(&self) {
        self.left.store(0, std::sync::atomic::Ordering::Relaxed);
    }
}

fn request_template(args: &Args) -> anyhow::Result<tonic::Request<EchoRequest>> {
    let mut request = tonic::Request::new(EchoRequest {
        message: "hello".into(),
        delay_ms: args.delay_ms,
    });
    let route = Route {
        version: args.version.clone(),
        color: args.color.clone(),
        hash_key: args.hash_key.clone(),
    };
    request.set_route(&route)?;
    Ok(request)
}

fn clone_request(template: &tonic::Request<EchoRequest>) -> tonic::Request<EchoRequest> {
    let mut request = tonic::Request::new(template.get_ref().clone());
    *request.metadata_mut() = template.metadata().clone();
    request
}

async fn worker(
    mut client: EchoClient<Channel>,
    template: tonic::Request<EchoRequest>,
    budget: Budget,
    tally: Arc<Mutex<Tally>>,
) {
    while budget.take() {
        let request = clone_request(&template);
        let start = Instant::now();
        let result = client.say(request).await;
        let elapsed = start.elapsed();
        let mut tally = tally.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(reply) => {
                tally.ok += 1;
                tally.latencies.push(elapsed);
                *tally
                    .by_instance
                    .entry(reply.into_inner().instance)
                    .or_default() += 1;
            }
            Err(status) => {
                *tally
                    .errors
                    .entry(format!("{:?}: {}", status.code(), status.message()))
                    .or_default() += 1
            }
        }
    }
}

async fn progress(tally: Arc<Mutex<Tally>>, started: Instant) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (ok, errors) = {
            let tally = tally.lock().unwrap_or_else(|p| p.into_inner());
            (tally.ok, tally.errors.values().sum::<u64>())
        };
        let rate = (ok + errors) as f64 / started.elapsed().as_secs_f64().max(1e-3);
        {
            use std::io::Write as _;
            let _ = write!(
                std::io::stderr().lock(),
                "\r{} calls, {rate:.0}/s, {errors} errors   ",
                ok + errors
            );
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at].as_secs_f64() * 1e3
}

fn report(tally: &Tally, elapsed: Duration, json: bool) {
    let mut sorted = tally.latencies.clone();
    sorted.sort();
    let errors: u64 = tally.errors.values().sum();
    for (status, n) in &tally.errors {
        errln!("lodestar: {n} call(s) failed with {status}");
    }
    let latency = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)];
    let rate = (tally.ok + errors) as f64 / elapsed.as_secs_f64().max(1e-3);
    if json {
        let latency: serde_json::Map<_, _> = latency
            .iter()
            .map(|(name, p)| {
                (
                    name.to_string(),
                    serde_json::json!(round(percentile(&sorted, *p))),
                )
            })
            .collect();
        outln!(
            "{}",
            serde_json::json!({
                "ok": tally.ok,
                "errors": errors,
                "by_instance": tally.by_instance,
                "latency_ms": latency,
                "duration_s": round(elapsed.as_secs_f64()),
                "calls_per_second": (rate * 10.0).round() / 10.0,
            })
        );
        return;
    }
    outln!(
        "{} ok, {errors} errors in {:.2}s ({rate:.0} calls/s)",
        tally.ok,
        elapsed.as_secs_f64()
    );
    for (instance, n) in &tally.by_instance {
        outln!("  {instance:<24} {n}");
    }
    let line: Vec<String> = latency
        .iter()
        .map(|(name, p)| format!("{name} {:.2}ms", percentile(&sorted, *p)))
        .collect();
    outln!("latency: {}", line.join("  "));
}

fn round(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}
