//! The [`Balancer`]: a snapshot's candidate table behind an atomically
//! swapped `Arc`, the per-endpoint load map, and the [`Pick`] guard that
//! feeds completions back.

use std::{
    cell::RefCell,
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use crate::{
    Endpoint, Instance, Snapshot,
    balance::{
        BuiltinPolicy, Candidate, Clock, Context, Error, OutlierDetection, Policy, Route,
        clock::Rng,
        load::{Ewma, Load},
        outlier::Ejections,
        table::{Inputs, Table},
    },
};

/// Picks an endpoint of one service per request; see the
/// [module docs](crate::balance).
///
/// Cheap to clone: clones share the same state.
#[derive(Clone, Debug)]
pub struct Balancer {
    shared: Arc<Shared>,
}

/// Options of a [`Balancer`]; from [`Balancer::builder`].
#[derive(Clone, Debug)]
pub struct Builder {
    policy: Arc<dyn Policy>,
    zone: Option<String>,
    default_rtt: Duration,
    decay: Duration,
    outlier: OutlierDetection,
    clock: Clock,
    seed: Option<u64>,
}

/// A health checker's verdict on an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Health {
    /// In rotation.
    Serving,
    /// Out of rotation until it serves again.
    NotServing,
}

/// One picked endpoint, and the guard that reports how the request went.
///
/// Call [`success`](Self::success) or [`failure`](Self::failure) when the
/// request completes. Both end the in-flight count and record the latency
/// (for policies that time requests); a failure also counts toward outlier
/// detection. Dropping the guard without either (a cancelled request)
/// records the latency but no outcome: the request occupied the endpoint,
/// but says nothing about its health.
#[must_use = "a pick reports its outcome with success() or failure()"]
pub struct Pick {
    candidate: Arc<Candidate>,
    start: u64,
    done: bool,
}

/// Source of table generations, unique in the process.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The last table this thread picked from, by generation.
    static CACHED: RefCell<Option<Arc<Table>>> = const { RefCell::new(None) };
}

/// State shared by clones of a balancer.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The generation of `table`: read on every pick, written on rebuilds
    /// only, so it sits alone on its cache line (nothing written per pick
    /// may share it).
    generation: Padded<AtomicU64>,
    table: RwLock<Arc<Table>>,
    policy: Arc<dyn Policy>,
    zone: Option<String>,
    ewma: Ewma,
    rng: Padded<Rng>,
    feedback: Arc<Feedback>,
    state: Mutex<State>,
}

/// Keeps a value on its own cache line (128 bytes: adjacent-line prefetch
/// pairs lines on x86).
#[derive(Debug)]
#[repr(align(128))]
struct Padded<T>(T);

/// What a completing [`Pick`] needs, held by every candidate.
#[derive(Debug)]
pub(crate) struct Feedback {
    clock: Clock,
    outlier: OutlierDetection,
    ejections: Ejections,
    timed: bool,
    owner: Weak<Shared>,
}

/// The inputs of a rebuild; locked only to rebuild, never to pick.
#[derive(Debug)]
struct State {
    snapshot: Arc<Snapshot>,
    loads: HashMap<String, Arc<Load>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure,
    Cancelled,
}

// === impl Balancer ===

impl Balancer {
    /// A balancer over `snapshot` with the default options (see
    /// [`Builder`]).
    pub fn new(snapshot: impl Into<Arc<Snapshot>>) -> Self {
        Self::builder().build(snapshot)
    }

    /// Options for a new balancer.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Picks an endpoint for `route`. Never blocks on an update in progress
    /// beyond an `Arc` swap.
    pub fn pick(&self, route: &Route) -> Result<Pick, Error> {
        self.shared
            .with_table(|table| self.shared.pick(table, route))
    }

    /// Replaces the snapshot. Endpoints that stay keep their load, latency
    /// estimate, health and outlier state; picks in flight are not blocked
    /// and complete against the endpoint they got.
    pub fn update(&self, snapshot: impl Into<Arc<Snapshot>>) {
        let snapshot = snapshot.into();
        let mut state = self.shared.lock_state();
        self.shared.sync_loads(&mut state, &snapshot);
        state.snapshot = snapshot;
        self.shared.install(&state);
    }

    /// Records a health checker's verdict on the instance `id`; false if the
    /// current snapshot has no such instance. A `NotServing` instance is
    /// skipped until it is `Serving` again.
    pub fn set_health(&self, id: &str, health: Health) -> bool {
        let state = self.shared.lock_state();
        let Some(load) = state.loads.get(id) else {
            return false;
        };
        if load.set_serving(health == Health::Serving) {
            tracing::debug!(service = %state.snapshot.service(), %id, ?health, "health changed");
            self.shared.install(&state);
        }
        true
    }

    /// Ids of the instances currently out of rotation (health or outlier
    /// detection), in id order.
    pub fn ejected(&self) -> Vec<String> {
        let state = self.shared.lock_state();
        let now = self.shared.feedback.clock.now();
        state
            .snapshot
            .instances()
            .iter()
            .filter(|i| state.loads.get(&i.id).is_some_and(|l| l.ejected(now)))
            .map(|i| i.id.clone())
            .collect()
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.lock_state().snapshot.clone()
    }

    /// The policy's name.
    pub fn policy(&self) -> &str {
        self.shared.policy.name()
    }
}

// === impl Builder ===

impl Builder {
    /// The balancing policy; [`P2c`](crate::balance::P2c) by default.
    pub fn policy(self, policy: impl Policy) -> Self {
        self.policy_arc(Arc::new(policy))
    }

    /// The balancing policy, shared.
    pub fn policy_arc(mut self, policy: Arc<dyn Policy>) -> Self {
        self.policy = policy;
        self
    }

    /// A built-in policy by name (`round_robin`, `random`, `weighted`,
    /// `p2c`, `least_request`, `consistent_hash`).
    pub fn policy_name(self, name: &str) -> Result<Self, Error> {
        let policy: BuiltinPolicy = name.parse()?;
        Ok(self.policy_arc(policy.policy()))
    }

    /// The caller's zone: instances in it are preferred while any is in
    /// rotation.
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into()).filter(|z| !z.is_empty());
        self
    }

    /// The latency a new endpoint is assumed to have until measured, so it
    /// gets traffic at once; 30 ms by default (linkerd2-proxy's default).
    pub fn default_rtt(mut self, rtt: Duration) -> Self {
        self.default_rtt = rtt;
        self
    }

    /// The peak-EWMA decay window; 10 s by default.
    pub fn decay(mut self, decay: Duration) -> Self {
        self.decay = decay;
        self
    }

    /// Outlier detection settings.
    pub fn outlier_detection(mut self, outlier: OutlierDetection) -> Self {
        self.outlier = outlier;
        self
    }

    /// The clock; the system clock by default. Tests pass
    /// [`Clock::manual`].
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Seeds the random choices, for reproducible tests.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Builds the balancer over a first snapshot.
    pub fn build(self, snapshot: impl Into<Arc<Snapshot>>) -> Balancer {
        let snapshot = snapshot.into();
        let shared = Arc::new_cyclic(|owner| self.shared(owner, &snapshot));
        let balancer = Balancer { shared };
        balancer.update(snapshot);
        balancer
    }

    fn shared(self, owner: &Weak<Shared>, snapshot: &Arc<Snapshot>) -> Shared {
        let empty = Arc::new(Snapshot::new(snapshot.service(), 0, Vec::new(), 0));
        let feedback = Arc::new(Feedback {
            timed: self.policy.observes_latency(),
            clock: self.clock,
            outlier: self.outlier,
            ejections: Ejections::default(),
            owner: owner.clone(),
        });
        let state = State {
            loads: HashMap::new(),
            snapshot: empty.clone(),
        };
        let inputs = Inputs {
            loads: &state.loads,
            zone: None,
            feedback: &feedback,
            now: 1,
        };
        Shared {
            generation: Padded(AtomicU64::new(0)),
            table: RwLock::new(Arc::new(Table::build(&empty, &inputs))),
            policy: self.policy,
            zone: self.zone,
            ewma: Ewma::new(self.default_rtt, self.decay),
            rng: Padded(Rng::new(self.seed)),
            feedback,
            state: Mutex::new(state),
        }
    }
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            policy: BuiltinPolicy::P2c.policy(),
            zone: None,
            default_rtt: Duration::from_millis(30),
            decay: Duration::from_secs(10),
            outlier: OutlierDetection::default(),
            clock: Clock::system(),
            seed: None,
        }
    }
}

// === impl Shared ===

impl Shared {
    fn pick(&self, table: &Table, route: &Route) -> Result<Pick, Error> {
        let set = table.resolve(route)?;
        let cx = Context::new(
            set.members(),
            route.hash_key.as_deref(),
            &self.rng.0,
            &self.feedback.clock,
        );
        let candidate = set.pick(&*self.policy, &cx).clone();
        let start = if self.feedback.timed { cx.now() } else { 0 };
        Ok(Pick::start(candidate, start))
    }

    /// Runs `f` on the table in force, first rebuilt if an ejection has run
    /// out.
    ///
    /// The hot path touches no shared cache line in write mode: each thread
    /// keeps the last table it used and checks it against the current
    /// generation (a plain load). Only after a rebuild does it take the
    /// read lock and clone the new `Arc`. A thread keeps at most one stale
    /// table alive until its next pick.
    fn with_table<R>(&self, f: impl FnOnce(&Table) -> R) -> R {
        let generation = self.generation.0.load(Ordering::Acquire);
        let mut f = Some(f);
        let out = CACHED.try_with(|cell| f.take().map(|f| self.with_cached(cell, generation, f)));
        match (out, f) {
            (Ok(Some(out)), _) => out,
            // The thread-local is gone (thread teardown): no cache.
            (_, Some(f)) => f(&self.fresh_table()),
            // The closure takes `f` only to return its result.
            (_, None) => unreachable!("f was called"),
        }
    }

    fn with_cached<R>(
        &self,
        cell: &RefCell<Option<Arc<Table>>>,
        generation: u64,
        f: impl FnOnce(&Table) -> R,
    ) -> R {
        if let Ok(cached) = cell.try_borrow() {
            let hit = cached.as_ref().filter(|t| t.generation == generation);
            if let Some(table) = hit.filter(|t| !self.expired(t)) {
                return f(table);
            }
        }
        let table = self.fresh_table();
        // A pick nested in a custom policy finds the cell borrowed: it just
        // does not cache.
        if let Ok(mut cached) = cell.try_borrow_mut() {
            *cached = Some(table.clone());
        }
        f(&table)
    }

    /// Whether an outlier ejection in `table` has run out.
    fn expired(&self, table: &Table) -> bool {
        table.next_return != u64::MAX && self.feedback.clock.now() >= table.next_return
    }

    /// The table in force, rebuilt first if an ejection has run out.
    fn fresh_table(&self) -> Arc<Table> {
        let table = self.read_table();
        if !self.expired(&table) {
            return table;
        }
        // Another thread rebuilding will bring it back; don't queue behind it.
        if let Ok(state) = self.state.try_lock() {
            self.install(&state);
        }
        self.read_table()
    }

    fn read_table(&self) -> Arc<Table> {
        self.table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Rebuilds the table from `state` and swaps it in.
    fn install(&self, state: &State) {
        let now = self.feedback.clock.now();
        for load in state.loads.values() {
            OutlierDetection::expire(load, &self.feedback.ejections, now);
        }
        let inputs = Inputs {
            loads: &state.loads,
            zone: self.zone.as_deref(),
            feedback: &self.feedback,
            now,
        };
        let mut table = Table::build(&state.snapshot, &inputs);
        table.generation = GENERATIONS.fetch_add(1, Ordering::Relaxed);
        let generation = table.generation;
        self.feedback.ejections.set_total(state.snapshot.len());
        let old = {
            let mut slot = self.table.write().unwrap_or_else(PoisonError::into_inner);
            let old = std::mem::replace(&mut *slot, Arc::new(table));
            self.generation.0.store(generation, Ordering::Release);
            old
        };
        // The old table (and the candidates only it holds) is freed here,
        // outside the write lock.
        drop(old);
    }

    /// Keeps the load of every instance that stays, adds fresh ones, and
    /// forgets the rest.
    fn sync_loads(&self, state: &mut State, snapshot: &Snapshot) {
        let now = self.feedback.clock.now();
        let mut old = std::mem::take(&mut state.loads);
        state.loads.reserve(snapshot.len());
        for instance in snapshot.instances() {
            let load = old
                .remove(&instance.id)
                .unwrap_or_else(|| Arc::new(Load::new(self.ewma, now)));
            state.loads.insert(instance.id.clone(), load);
        }
        for load in old.values() {
            OutlierDetection::retire(load, &self.feedback.ejections);
        }
    }

    fn rebuild(&self) {
        self.install(&self.lock_state());
    }
}

// === impl Feedback ===

impl Feedback {
    fn complete(&self, candidate: &Candidate, start: u64, outcome: Outcome) {
        let load = &candidate.load;
        load.finish();
        let now = if start != 0 || outcome == Outcome::Failure {
            self.clock.now()
        } else {
            0
        };
        if start != 0 {
            load.observe(now.saturating_sub(start), now);
        }
        match outcome {
            Outcome::Success => self.outlier.on_success(load),
            Outcome::Failure => self.on_failure(candidate, now),
            Outcome::Cancelled => {}
        }
    }

    fn on_failure(&self, candidate: &Candidate, now: u64) {
        if !self
            .outlier
            .on_failure(&candidate.load, &self.ejections, now)
        {
            return;
        }
        let instance = candidate.instance();
        tracing::warn!(
            service = %instance.service, id = %instance.id,
            "ejecting an instance after consecutive failures"
        );
        if let Some(shared) = self.owner.upgrade() {
            shared.rebuild();
        }
    }
}

// === impl Pick ===

impl Pick {
    /// `start` is the clock time of the pick, 0 if untimed.
    fn start(candidate: Arc<Candidate>, start: u64) -> Self {
        candidate.load.start();
        Self {
            candidate,
            start,
            done: false,
        }
    }

    /// The instance picked.
    pub fn instance(&self) -> &Instance {
        self.candidate.instance()
    }

    /// The candidate picked, with its weight and load.
    pub fn candidate(&self) -> &Candidate {
        &self.candidate
    }

    /// The picked instance's first endpoint with this scheme (`grpc`,
    /// `http`...).
    pub fn endpoint(&self, scheme: &str) -> Option<&Endpoint> {
        self.instance().endpoint(scheme)
    }

    /// The request succeeded.
    pub fn success(self) {
        self.finish(Outcome::Success);
    }

    /// The request failed in a way that blames the endpoint (connection
    /// refused, reset, `Unavailable`...): counts toward outlier detection.
    pub fn failure(self) {
        self.finish(Outcome::Failure);
    }

    fn finish(mut self, outcome: Outcome) {
        self.done = true;
        let feedback = &self.candidate.feedback;
        feedback.complete(&self.candidate, self.start, outcome);
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        if !self.done {
            let feedback = &self.candidate.feedback;
            feedback.complete(&self.candidate, self.start, Outcome::Cancelled);
        }
    }
}

impl fmt::Debug for Pick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pick")
            .field("id", &self.candidate.id())
            .field("in_flight", &self.candidate.in_flight())
            .finish()
    }
}
