//! The script: each step announced before it happens, then done for real
//! under the steady traffic, then measured into an [`Outcome`].

use std::{net::SocketAddr, sync::Arc, time::Duration};

use lodestar::{Discovery, Override, Snapshot, Status, balance::BuiltinPolicy};
use lodestar_echo::echo_client::EchoClient;
use lodestar_tonic::Channel;
use tokio::time::Instant;

use super::{
    fleet::{Fleet, SERVICE, Spec},
    summary::Outcome,
    traffic::{self, HttpClient, Stats, Totals},
    view::Log,
};

/// The v1 base-lane instances the fleet starts with.
const V1: [&str; 3] = ["echo-1", "echo-2", "echo-3"];
/// The instance scale-out adds.
const SCALED: &str = "echo-4";
/// The `lodestar serve-echo` process the crash step kills.
const CRASHED: &str = "echo-9";
/// The slow instance: 50 ms added to every call.
const SLOW: &str = "echo-slow";
/// The route headers.
const VERSION: &str = "lodestar-version";
const COLOR: &str = "lodestar-color";

/// How long the script waits.
#[derive(Clone, Copy, Debug)]
pub(super) struct Timing {
    /// Between steps.
    pub(super) pause: Duration,
    /// How long a step measures what follows its event.
    pub(super) window: Duration,
}

/// The script's state: the fleet it acts on, the traffic it measures.
pub(super) struct Script<'a> {
    pub(super) fleet: &'a mut Fleet,
    pub(super) stats: Stats,
    pub(super) log: Log,
    pub(super) channel: Channel,
    pub(super) gateway: SocketAddr,
    pub(super) http: HttpClient,
    pub(super) timing: Timing,
    pub(super) outcomes: Vec<Outcome>,
}

/// The fleet the demo starts with.
pub(super) fn initial_fleet() -> Vec<Spec> {
    let mut specs: Vec<Spec> = V1.iter().map(|id| Spec::new(id, "v1")).collect();
    specs.push(Spec::new("echo-v2", "v2"));
    specs.push(Spec::new("echo-blue", "v1").color("blue"));
    specs.push(Spec::new(SLOW, "v1").delay(Duration::from_millis(50)));
    specs
}

// === impl Script ===

impl Script<'_> {
    /// Runs every step; the outcomes are in `self.outcomes`.
    pub(super) async fn run(&mut self) -> anyhow::Result<()> {
        self.first_traffic().await;
        self.scale_out().await?;
        self.rolling_restart().await?;
        self.crash().await?;
        self.operator_down().await?;
        self.pins_and_lanes().await?;
        self.slow_instance().await;
        Ok(())
    }

    fn announce(&self, n: usize, text: &str) {
        self.log.event(format!("{n}. {text}"));
    }

    fn outcome(&mut self, step: &'static str, promise: &str, measured: String, held: bool) {
        let outcome = Outcome {
            step,
            promise: promise.to_string(),
            measured,
            held,
        };
        self.log.event(outcome.line());
        self.log.print_rates(&self.stats);
        self.outcomes.push(outcome);
    }

    async fn pause(&self) {
        tokio::time::sleep(self.timing.pause).await;
    }

    async fn first_traffic(&mut self) {
        let base = [V1[0], V1[1], V1[2], "echo-v2", SLOW];
        let reached = until(Duration::from_secs(10), || {
            base.iter().all(|id| self.stats.first_call(id).is_some())
        })
        .await;
        tokio::time::sleep(self.timing.window).await;
        let measured = match reached {
            Some(after) => format!(
                "all 5 base-lane instances answered within {} ms of the traffic's start",
                after.as_millis()
            ),
            None => "some base-lane instance never answered within 10 s".to_string(),
        };
        let promise = "the steady traffic reaches every base-lane instance";
        self.outcome("fleet", promise, measured, reached.is_some());
        self.pause().await;
    }

    async fn scale_out(&mut self) -> anyhow::Result<()> {
        self.announce(
            2,
            &format!(
                "scale out: {SCALED} (v1) starts and registers; how soon does it take traffic?"
            ),
        );
        let start = Instant::now();
        self.fleet.start(&Spec::new(SCALED, "v1")).await?;
        let first = until(Duration::from_secs(5), || {
            self.stats.first_call(SCALED).is_some()
        })
        .await
        .map(|_| start.elapsed());
        let (measured, held) = match first {
            Some(after) => (
                format!(
                    "{SCALED} took its first call {} ms after it started",
                    after.as_millis()
                ),
                after < Duration::from_secs(1),
            ),
            None => (format!("{SCALED} took no call within 5 s"), false),
        };
        self.outcome(
            "scale out",
            "the new instance takes traffic within 1 s",
            measured,
            held,
        );
        self.pause().await;
        Ok(())
    }

    async fn rolling_restart(&mut self) -> anyhow::Result<()> {
        self.announce(3, "rolling restart of the v1 instances echo-1..4, one at a time: NOT_SERVING, deregister, 300 ms for clients to notice, drain, start again");
        let before = self.stats.totals();
        for id in [V1[0], V1[1], V1[2], SCALED] {
            self.log
                .event(format!("   {id}: graceful stop, then start again"));
            self.fleet.stop(id).await?;
            let restarted = Instant::now();
            self.fleet.start(&Spec::new(id, "v1")).await?;
            let back = until(Duration::from_secs(5), || {
                self.stats.last_call(id).is_some_and(|t| t > restarted)
            })
            .await;
            if back.is_none() {
                self.log
                    .event(format!("   {id} took no call within 5 s of its restart"));
            }
            tokio::time::sleep(self.timing.pause / 2).await;
        }
        let step = self.stats.totals().since(&before);
        let measured = format!(
            "{} calls answered, {} failed ({} channel, {} gateway)",
            step.answered(),
            step.failed(),
            step.failed_grpc,
            step.failed_gateway
        );
        self.outcome(
            "rolling restart",
            "0 failed calls",
            measured,
            step.failed() == 0,
        );
        self.pause().await;
        Ok(())
    }

    async fn crash(&mut self) -> anyhow::Result<()> {
        self.announce(4, &format!("kill -9: {CRASHED} starts as a `lodestar serve-echo` process (TTL 3 s), takes traffic, then gets SIGKILL: no graceful sequence, its record stays until the TTL"));
        self.fleet.spawn_child(CRASHED)?;
        if until(Duration::from_secs(10), || {
            self.stats.first_call(CRASHED).is_some()
        })
        .await
        .is_none()
        {
            self.outcome(
                "kill -9",
                CRASH_PROMISE,
                format!("{CRASHED} never took traffic"),
                false,
            );
            return Ok(());
        }
        tokio::time::sleep(self.timing.window / 2).await;
        let mut watch = self.fleet.discovery.watch(SERVICE).await?;
        let before = self.stats.totals();
        let killed = Instant::now();
        self.log.event(format!("   kill -9 {CRASHED}"));
        self.fleet.kill9(CRASHED).await?;
        let gone = wait_for(&mut watch, Duration::from_secs(15), |s| {
            s.instance(CRASHED).is_none()
        })
        .await
        .map(|_| killed.elapsed());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let step = self.stats.totals().since(&before);
        let (last_failure, error) = self.stats.last_failure();
        let moved = last_failure.filter(|t| *t > killed).map(|t| t - killed);
        let measured = crash_measured(&step, error.filter(|_| moved.is_some()), moved, gone);
        // Traffic moved away when no call failed after the first second.
        let held = moved.is_none_or(|d| d < Duration::from_secs(1)) && gone.is_some();
        self.outcome("kill -9", CRASH_PROMISE, measured, held);
        self.pause().await;
        Ok(())
    }

    async fn operator_down(&mut self) -> anyhow::Result<()> {
        let id = V1[1];
        self.announce(5, &format!("an operator sets {id} down (what `lodestar set echo {id} --status down` does): its traffic drains, nothing fails"));
        let mut watch = self.fleet.discovery.watch(SERVICE).await?;
        let before = self.stats.totals();
        let set = Instant::now();
        self.fleet
            .registrar
            .set(SERVICE, id, Override::new().with_status(Status::Down))
            .await?;
        let visible = wait_for(&mut watch, Duration::from_secs(10), |s| {
            s.instance(id).is_some_and(|i| i.is_down())
        })
        .await;
        let visible = visible.map(|_| set.elapsed());
        // Calls already sent finish; none may start once every client saw it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let drained = self.stats.totals();
        tokio::time::sleep(self.timing.window).await;
        let after = self.stats.totals().since(&drained).of(id);
        let step = self.stats.totals().since(&before);
        let last = self
            .stats
            .last_call(id)
            .filter(|t| *t > set)
            .map(|t| t - set);
        let measured = format!(
            "down visible after {}; its last call: {} the set; {after} calls in the {} ms from 200 ms after; {} failed",
            visible.map_or("never (10 s)".into(), |d| format!("{} ms", d.as_millis())),
            last.map_or("before".into(), |d| format!("{} ms after", d.as_millis())),
            self.timing.window.as_millis(),
            step.failed()
        );
        let held = visible.is_some() && after == 0 && step.failed() == 0;
        self.outcome(
            "operator down",
            "no new call once down is seen, 0 failed",
            measured,
            held,
        );
        self.clear_down(id).await?;
        self.pause().await;
        Ok(())
    }

    /// The operator clears the override: the instance takes calls again.
    async fn clear_down(&mut self, id: &str) -> anyhow::Result<()> {
        self.log.event(format!(
            "   the operator clears it (`lodestar set echo {id} --clear`)"
        ));
        let cleared = Instant::now();
        self.fleet.registrar.clear(SERVICE, id).await?;
        let back = until(Duration::from_secs(5), || {
            self.stats.last_call(id).is_some_and(|t| t > cleared)
        })
        .await;
        self.log.event(match back {
            Some(_) => format!(
                "   {id} is back in traffic {} ms later",
                cleared.elapsed().as_millis()
            ),
            None => format!("   {id} took no call within 5 s of the clear"),
        });
        Ok(())
    }

    async fn pins_and_lanes(&mut self) -> anyhow::Result<()> {
        self.announce(
            6,
            "version-pinned and blue-lane calls, through the channel and the gateway",
        );
        let mut misses = Vec::new();
        let lane = |text: &str| routes(Some(&format!("{text}: channel x100, gateway x30")));
        self.log.routes(&lane("lodestar-version: v2 -> echo-v2"));
        let pinned = self.burst(&[(VERSION, "v2")], |id| id == "echo-v2").await;
        self.log.routes(&lane("lodestar-color: blue -> echo-blue"));
        let blue = self.burst(&[(COLOR, "blue")], |id| id == "echo-blue").await;
        self.log.event("   echo-blue leaves (graceful stop): the blue lane is empty, blue calls fall back to the base lane");
        self.fleet.stop("echo-blue").await?;
        self.log
            .routes(&lane("lodestar-color: blue, lane empty -> base lane"));
        let fallback = self.burst(&[(COLOR, "blue")], |id| id != "echo-blue").await;
        self.log.routes(&routes(None));
        for (name, (right, sent)) in [
            ("pinned v2", pinned),
            ("blue lane", blue),
            ("blue fallback", fallback),
        ] {
            if right != sent {
                misses.push(format!("{name}: {right}/{sent}"));
            }
        }
        let measured = format!(
            "v2 pin {}/{} at echo-v2, blue {}/{} at echo-blue, blue after it left {}/{} in the base lane",
            pinned.0, pinned.1, blue.0, blue.1, fallback.0, fallback.1
        );
        self.outcome(
            "pins and lanes",
            "every pinned or blue call reaches the right instances",
            measured,
            misses.is_empty(),
        );
        self.pause().await;
        Ok(())
    }

    /// 100 calls through the channel and 30 through the gateway with
    /// `headers`: (answered by an instance `right` accepts, sent).
    async fn burst(
        &self,
        headers: &[(&'static str, &str)],
        right: impl Fn(&str) -> bool,
    ) -> (usize, usize) {
        let mut client = EchoClient::new(self.channel.clone());
        let (mut ok, mut sent) = (0, 0);
        for _ in 0..100 {
            sent += 1;
            if traffic::grpc_call(&mut client, &self.stats, headers)
                .await
                .is_some_and(|id| right(&id))
            {
                ok += 1;
            }
        }
        for _ in 0..30 {
            sent += 1;
            if traffic::http_call(&self.http, self.gateway, &self.stats, headers)
                .await
                .is_some_and(|id| right(&id))
            {
                ok += 1;
            }
        }
        (ok, sent)
    }

    async fn slow_instance(&mut self) {
        self.announce(7, &format!("{SLOW} answers 50 ms late: two fresh channels, p2c and round robin, each with 8 callers for {} ms, side by side", self.timing.window.as_millis()));
        self.log.routes(&routes(Some(
            "comparing: a p2c channel and a round-robin channel, 8 callers each",
        )));
        let discovery = self.fleet.discovery.clone();
        let window = self.timing.window;
        let (p2c, rr) = tokio::join!(
            share(discovery.clone(), BuiltinPolicy::P2c, window),
            share(discovery, BuiltinPolicy::RoundRobin, window),
        );
        self.log.routes(&routes(None));
        let measured = format!(
            "{SLOW}'s share: p2c {:.1}% of {} calls, round robin {:.1}% of {} calls; failed {}",
            p2c.share * 100.0,
            p2c.calls,
            rr.share * 100.0,
            rr.calls,
            p2c.failed + rr.failed
        );
        let held = p2c.calls > 0
            && rr.calls > 0
            && p2c.share * 2.0 < rr.share
            && p2c.failed + rr.failed == 0;
        self.outcome(
            "slow instance",
            "p2c gives it less than half round robin's share",
            measured,
            held,
        );
    }
}

/// What the crash step promises.
const CRASH_PROMISE: &str = "failures stop within 1 s of the kill; the record expires";

/// The crash step's figures: `step` counted from the kill, the last
/// failure's error and time after the kill, and when the record went.
fn crash_measured(
    step: &Totals,
    error: Option<String>,
    moved: Option<Duration>,
    gone: Option<Duration>,
) -> String {
    let moved = moved.map_or("no call failed: traffic moved away at once".into(), |d| {
        format!(
            "traffic moved away {} ms after the kill (its last failure)",
            d.as_millis()
        )
    });
    format!(
        "{} calls answered by the others, {} failed ({} channel, {} gateway{}); {moved}; record gone after {}",
        step.answered(),
        step.failed(),
        step.failed_grpc,
        step.failed_gateway,
        error.map(|e| format!(": {e}")).unwrap_or_default(),
        gone.map_or("never (15 s)".into(), |d| format!("{} ms", d.as_millis())),
    )
}

/// The routes in use, as the live view lists them.
pub(super) fn routes(extra: Option<&str>) -> Vec<String> {
    let mut routes = vec![
        "steady: balanced channel (p2c) -> echo, base lane (4 callers)".to_string(),
        "steady: gateway /echo -> echo http:// endpoints (p2c, 2 callers)".to_string(),
    ];
    routes.extend(extra.map(str::to_string));
    routes
}

/// What one policy gave the slow instance.
struct Share {
    share: f64,
    calls: u64,
    failed: u64,
}

async fn share(discovery: Arc<dyn Discovery>, policy: BuiltinPolicy, window: Duration) -> Share {
    let channel = Channel::builder(discovery, SERVICE)
        .policy(policy)
        .connect();
    let stats = Stats::default();
    let end = Instant::now() + window;
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (mut client, stats) = (EchoClient::new(channel.clone()), stats.clone());
        callers.spawn(async move {
            while Instant::now() < end {
                let _ = traffic::grpc_call(&mut client, &stats, &[]).await;
            }
        });
    }
    while callers.join_next().await.is_some() {}
    let totals = stats.totals();
    let calls = totals.answered();
    Share {
        share: if calls == 0 {
            0.0
        } else {
            totals.of(SLOW) as f64 / calls as f64
        },
        calls,
        failed: totals.failed(),
    }
}

/// Polls `done` every 5 ms until it holds (how long it took) or `limit`
/// passes (`None`).
async fn until(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// Waits until a snapshot of `watch` satisfies `done`, at most `limit`.
async fn wait_for(
    watch: &mut lodestar::Watch,
    limit: Duration,
    done: impl Fn(&Snapshot) -> bool,
) -> Option<()> {
    if done(&watch.latest()) {
        return Some(());
    }
    tokio::time::timeout(limit, async {
        while let Some(snapshot) = watch.next().await {
            if done(&snapshot) {
                return Some(());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}
