//! Steady traffic through the balanced channel (p2c) and through the
//! gateway, and what it measured: per instance calls, calls/s and p50/p99
//! over the last second, failures by path, first and last call per instance.

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use lodestar_echo::{EchoRequest, echo_client::EchoClient};
use lodestar_tonic::Channel;
use tokio::{task::JoinSet, time::Instant};

use super::fleet::GATEWAY_PREFIX;

/// The window of the live rates.
const WINDOW: Duration = Duration::from_secs(1);

/// Which way a call went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Path {
    /// Through the balanced tonic channel.
    Grpc,
    /// Through the HTTP gateway.
    Gateway,
}

/// What every call reports to; cheap to clone.
#[derive(Clone, Default)]
pub(super) struct Stats {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    instances: BTreeMap<String, Meter>,
    failed_grpc: u64,
    failed_gateway: u64,
    last_failure: Option<Instant>,
    last_error: Option<String>,
}

/// One instance's calls.
#[derive(Default)]
struct Meter {
    total: u64,
    recent: VecDeque<(Instant, Duration)>,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// Cumulative counters at one moment; a step subtracts two of them.
#[derive(Clone, Debug, Default)]
pub(super) struct Totals {
    pub(super) calls: BTreeMap<String, u64>,
    pub(super) failed_grpc: u64,
    pub(super) failed_gateway: u64,
}

/// One instance's line of the live view.
#[derive(Clone, Debug)]
pub(super) struct Rate {
    pub(super) id: String,
    pub(super) per_second: usize,
    pub(super) p50: Duration,
    pub(super) p99: Duration,
    pub(super) total: u64,
}

/// The running load generators.
pub(super) struct Load {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: JoinSet<()>,
}

// === impl Stats ===

impl Stats {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not stop the demo's bookkeeping.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A call answered by `instance` after `latency`.
    pub(super) fn ok(&self, instance: &str, latency: Duration) {
        let now = Instant::now();
        let mut inner = self.lock();
        let meter = inner.instances.entry(instance.to_string()).or_default();
        meter.total += 1;
        meter.recent.push_back((now, latency));
        meter.first.get_or_insert(now);
        meter.last = Some(now);
        while meter
            .recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > WINDOW)
        {
            meter.recent.pop_front();
        }
    }

    /// A call that failed on `path`.
    pub(super) fn failed(&self, path: Path, error: String) {
        let mut inner = self.lock();
        match path {
            Path::Grpc => inner.failed_grpc += 1,
            Path::Gateway => inner.failed_gateway += 1,
        }
        inner.last_failure = Some(Instant::now());
        inner.last_error = Some(error);
    }

    /// The counters now.
    pub(super) fn totals(&self) -> Totals {
        let inner = self.lock();
        Totals {
            calls: inner
                .instances
                .iter()
                .map(|(id, m)| (id.clone(), m.total))
                .collect(),
            failed_grpc: inner.failed_grpc,
            failed_gateway: inner.failed_gateway,
        }
    }

    /// When `id` answered its first call.
    pub(super) fn first_call(&self, id: &str) -> Option<Instant> {
        self.lock().instances.get(id).and_then(|m| m.first)
    }

    /// When `id` answered its last call.
    pub(super) fn last_call(&self, id: &str) -> Option<Instant> {
        self.lock().instances.get(id).and_then(|m| m.last)
    }

    /// When the last call failed, and why.
    pub(super) fn last_failure(&self) -> (Option<Instant>, Option<String>) {
        let inner = self.lock();
        (inner.last_failure, inner.last_error.clone())
    }

    /// Calls/s, p50 and p99 per instance over the last second.
    pub(super) fn rates(&self) -> Vec<Rate> {
        let now = Instant::now();
        let inner = self.lock();
        inner
            .instances
            .iter()
            .map(|(id, meter)| {
                let mut recent: Vec<Duration> = meter
                    .recent
                    .iter()
                    .filter(|(t, _)| now.duration_since(*t) <= WINDOW)
                    .map(|(_, l)| *l)
                    .collect();
                recent.sort_unstable();
                Rate {
                    id: id.clone(),
                    per_second: recent.len(),
                    p50: quantile(&recent, 0.50),
                    p99: quantile(&recent, 0.99),
                    total: meter.total,
                }
            })
            .collect()
    }
}

/// The `q` quantile of sorted samples (zero when there are none).
pub(super) fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

// === impl Totals ===

impl Totals {
    /// What happened between `earlier` and `self`.
    pub(super) fn since(&self, earlier: &Totals) -> Totals {
        let calls = self
            .calls
            .iter()
            .map(|(id, n)| (id.clone(), n.saturating_sub(earlier.of(id))))
            .filter(|(_, n)| *n > 0)
            .collect();
        Totals {
            calls,
            failed_grpc: self.failed_grpc.saturating_sub(earlier.failed_grpc),
            failed_gateway: self.failed_gateway.saturating_sub(earlier.failed_gateway),
        }
    }

    /// Failed calls on both paths.
    pub(super) fn failed(&self) -> u64 {
        self.failed_grpc + self.failed_gateway
    }

    /// Answered calls.
    pub(super) fn answered(&self) -> u64 {
        self.calls.values().sum()
    }

    /// Calls `id` answered.
    pub(super) fn of(&self, id: &str) -> u64 {
        self.calls.get(id).copied().unwrap_or(0)
    }
}

// === impl Load ===

impl Load {
    /// Starts `grpc` workers on the channel and `http` workers on the
    /// gateway; each calls, records, and waits `pace` before its next call
    /// (the demo shares the machine: a steady load, not a flood).
    pub(super) fn start(
        stats: &Stats,
        channel: &Channel,
        gateway: SocketAddr,
        (grpc, http): (usize, usize),
        pace: Duration,
    ) -> Self {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut tasks = JoinSet::new();
        for _ in 0..grpc {
            let client = EchoClient::new(channel.clone());
            let (stats, stopped) = (stats.clone(), stopped.clone());
            tasks.spawn(grpc_worker(client, stats, stopped, pace));
        }
        let client = http_client();
        for _ in 0..http {
            let (client, stats, stopped) = (client.clone(), stats.clone(), stopped.clone());
            tasks.spawn(http_worker(client, gateway, stats, stopped, pace));
        }
        Self { stop, tasks }
    }

    /// Stops the workers after their call in flight.
    pub(super) async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn grpc_worker(
    mut client: EchoClient<Channel>,
    stats: Stats,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    pace: Duration,
) {
    while !*stopped.borrow() {
        let _ = grpc_call(&mut client, &stats, &[]).await;
        tokio::select! {
            _ = tokio::time::sleep(pace) => {}
            _ = stopped.changed() => {}
        }
    }
}

async fn http_worker(
    client: HttpClient,
    gateway: SocketAddr,
    stats: Stats,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    pace: Duration,
) {
    while !*stopped.borrow() {
        let _ = http_call(&client, gateway, &stats, &[]).await;
        tokio::select! {
            _ = tokio::time::sleep(pace) => {}
            _ = stopped.changed() => {}
        }
    }
}

/// One echo call through the channel with `headers` (route headers such as
/// `lodestar-version`); records it and returns the instance that answered.
pub(super) async fn grpc_call(
    client: &mut EchoClient<Channel>,
    stats: &Stats,
    headers: &[(&'static str, &str)],
) -> Option<String> {
    let mut request = tonic::Request::new(EchoRequest {
        message: "demo".into(),
        delay_ms: 0,
    });
    for (name, value) in headers {
        if let Ok(value) = value.parse() {
            request.metadata_mut().insert(*name, value);
        }
    }
    let start = Instant::now();
    match client.say(request).await {
        Ok(reply) => {
            let instance = reply.into_inner().instance;
            stats.ok(&instance, start.elapsed());
            Some(instance)
        }
        Err(status) => {
            stats.failed(Path::Grpc, format!("gRPC {}", status.code()));
            None
        }
    }
}

/// The gateway's HTTP client.
pub(super) type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// A pooled HTTP/1.1 client.
pub(super) fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// One GET through the gateway with `headers`; records it and returns the
/// instance that answered (the HTTP echo's JSON names it).
pub(super) async fn http_call(
    client: &HttpClient,
    gateway: SocketAddr,
    stats: &Stats,
    headers: &[(&'static str, &str)],
) -> Option<String> {
    let start = Instant::now();
    match get(client, gateway, headers).await {
        Ok(instance) => {
            stats.ok(&instance, start.elapsed());
            Some(instance)
        }
        Err(error) => {
            stats.failed(Path::Gateway, error);
            None
        }
    }
}

async fn get(
    client: &HttpClient,
    gateway: SocketAddr,
    headers: &[(&'static str, &str)],
) -> Result<String, String> {
    let mut request = http::Request::get(format!("http://{gateway}{GATEWAY_PREFIX}/hello"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Empty::new())
        .map_err(|e| format!("gateway request: {e}"))?;
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("gateway: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("gateway body: {e}"))?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("gateway answered {status}"));
    }
    let json: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("gateway body: {e}"))?;
    json["instance"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "gateway answer names no instance".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_sorted_samples() {
        let ms = |n| Duration::from_millis(n);
        let samples: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(quantile(&samples, 0.5), ms(51));
        assert_eq!(quantile(&samples, 0.99), ms(99));
        assert_eq!(quantile(&[], 0.99), Duration::ZERO);
    }

    #[test]
    fn totals_since_keep_what_changed() {
        let mut before = Totals::default();
        before.calls.insert("a".into(), 5);
        before.failed_grpc = 1;
        let mut after = before.clone();
        after.calls.insert("a".into(), 9);
        after.calls.insert("b".into(), 2);
        after.failed_gateway = 3;
        let step = after.since(&before);
        assert_eq!((step.of("a"), step.of("b")), (4, 2));
        assert_eq!((step.failed(), step.answered()), (3, 6));
    }
}
