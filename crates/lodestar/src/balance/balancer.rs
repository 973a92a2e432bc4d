//! The [`Balancer`]: the published candidate table behind an atomically
//! swapped `Arc`, and the state it is derived from, changed one instance at
//! a time.
//!
//! Every change (a snapshot's adds, updates and removals from
//! [`Snapshot::changes`], a health verdict, an outlier ejection or return)
//! edits a working [`Table`] in place and publishes a clone of it that
//! shares every untouched group, so its cost is what changed, never the
//! size of the service.

use std::{
    cell::RefCell,
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use crate::{
    Instance, Snapshot,
    balance::{
        BuiltinPolicy, Candidate, Context, Error, OutlierDetection, Pick, Policy, Route,
        clock::{Clock, Rng, nanos},
        context::Env,
        feedback::{Eject, Feedback},
        load::{Ewma, Load},
        outlier::Ejections,
        table::Table,
    },
    discovery::Change,
    instance::DEFAULT_WEIGHT,
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
    force_pick: Duration,
    outlier: OutlierDetection,
    initial_health: Health,
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

/// Source of table generations, unique in the process.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The last table this thread picked from, by generation.
    static CACHED: RefCell<Option<Arc<Table>>> = const { RefCell::new(None) };
}

/// State shared by clones of a balancer.
#[derive(Debug)]
struct Shared {
    /// The generation of `table`: read on every pick, written on changes
    /// only, so it sits alone on its cache line (nothing written per pick
    /// may share it).
    generation: Padded<AtomicU64>,
    table: RwLock<Arc<Table>>,
    policy: Arc<dyn Policy>,
    ewma: Ewma,
    initial_health: Health,
    rng: Padded<Rng>,
    feedback: Arc<Feedback>,
    state: Mutex<State>,
}

/// Keeps a value on its own cache line (128 bytes: adjacent-line prefetch
/// pairs lines on x86).
#[derive(Debug)]
#[repr(align(128))]
struct Padded<T>(T);

/// What the published table is derived from; locked only to change it,
/// never to pick.
#[derive(Debug)]
struct State {
    snapshot: Arc<Snapshot>,
    entries: HashMap<String, Entry>,
    /// The working copy; published as a clone sharing its groups.
    table: Table,
    /// Instances outlier detection has ejected, until they return.
    outliers: HashSet<String>,
}

/// One instance of the snapshot.
#[derive(Debug)]
struct Entry {
    candidate: Arc<Candidate>,
    /// Where the table has it.
    in_rotation: bool,
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

    /// Replaces the snapshot, applying its differences from the one in force
    /// ([`Snapshot::changes`]): the cost is that of what changed. Endpoints
    /// that stay keep their load, latency estimate, health and outlier
    /// state; new ones start with the [initial health](Builder::initial_health);
    /// picks in flight are not blocked and complete against the endpoint
    /// they got.
    pub fn update(&self, snapshot: impl Into<Arc<Snapshot>>) {
        let snapshot = snapshot.into();
        let mut state = self.shared.lock_state();
        if self.shared.apply(&mut state, &snapshot) {
            self.shared.publish(&mut state);
        }
        state.snapshot = snapshot;
    }

    /// Records a health checker's verdict on the instance `id`; false if the
    /// current snapshot has no such instance. A `NotServing` instance is
    /// skipped until it is `Serving` again.
    pub fn set_health(&self, id: &str, health: Health) -> bool {
        self.set_healths([(id, health)]) == 1
    }

    /// Records several verdicts at once, publishing the table once; the
    /// number of ids found.
    pub fn set_healths<'a>(&self, verdicts: impl IntoIterator<Item = (&'a str, Health)>) -> usize {
        let mut state = self.shared.lock_state();
        let now = self.shared.feedback.clock.now();
        let (mut found, mut changed) = (0, false);
        for (id, health) in verdicts {
            let Some(entry) = state.entries.get(id) else {
                continue;
            };
            found += 1;
            if entry.candidate.load.set_serving(health == Health::Serving) {
                tracing::debug!(service = %state.snapshot.service(), %id, ?health, "health changed");
                changed |= state.sync(id, now);
            }
        }
        if changed {
            self.shared.publish(&mut state);
        }
        found
    }

    /// Ids of the instances currently out of rotation (health, outlier
    /// detection, or set down by an operator), in id order.
    pub fn ejected(&self) -> Vec<String> {
        let state = self.shared.lock_state();
        let now = self.shared.feedback.clock.now();
        let mut ids: Vec<String> = state
            .entries
            .iter()
            .filter(|(_, e)| !rotates(&e.candidate, now))
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort_unstable();
        ids
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

    /// The peak-EWMA decay window; 10 s by default (Finagle's and
    /// go-zero's).
    pub fn decay(mut self, decay: Duration) -> Self {
        self.decay = decay;
        self
    }

    /// The force-pick interval of [`P2c`](crate::balance::P2c): a candidate
    /// not picked for this long is picked the next time it is drawn, even if
    /// it costs more, and the latency of a pick after such a silence replaces
    /// its estimate; so are a candidate's first three picks. 250 ms by
    /// default (go-zero uses 1 s, kratos 3 s): with two equal candidates
    /// called one at a time, 1 s still left the busier with 65-95 % of the
    /// calls over 3 s, 250 ms with 51-60 %; the price is that a slow
    /// candidate gets up to four calls a second whatever the traffic. `Duration::MAX` turns forced
    /// picks and probes off (tower's and Finagle's peak-EWMA).
    pub fn force_pick(mut self, interval: Duration) -> Self {
        self.force_pick = interval;
        self
    }

    /// Outlier detection settings.
    pub fn outlier_detection(mut self, outlier: OutlierDetection) -> Self {
        self.outlier = outlier;
        self
    }

    /// The health a new instance starts with: `Serving` by default;
    /// `NotServing` keeps new instances out of rotation until
    /// [`Balancer::set_health`] says they serve (a client that must connect
    /// first).
    pub fn initial_health(mut self, health: Health) -> Self {
        self.initial_health = health;
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
        let shared = Arc::new_cyclic(|owner: &Weak<Shared>| {
            let eject: Weak<dyn Eject> = owner.clone();
            self.shared(eject, &snapshot)
        });
        let balancer = Balancer { shared };
        balancer.update(snapshot);
        balancer
    }

    fn shared(self, eject: Weak<dyn Eject>, snapshot: &Snapshot) -> Shared {
        let empty = Arc::new(Snapshot::new(snapshot.service(), 0, Vec::new(), 0));
        let table = Table::new(snapshot.service(), self.zone.as_deref());
        let feedback = Arc::new(Feedback {
            timed: self.policy.observes_latency(),
            clock: Clock::new(),
            outlier: self.outlier,
            ejections: Ejections::default(),
            silence: nanos(self.force_pick).max(1),
            eject,
        });
        Shared {
            generation: Padded(AtomicU64::new(0)),
            table: RwLock::new(Arc::new(table.clone())),
            policy: self.policy,
            ewma: Ewma::new(self.default_rtt, self.decay),
            initial_health: self.initial_health,
            rng: Padded(Rng::new(self.seed)),
            feedback,
            state: Mutex::new(State {
                snapshot: empty,
                entries: HashMap::new(),
                table,
                outliers: HashSet::new(),
            }),
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
            force_pick: Duration::from_millis(250),
            outlier: OutlierDetection::default(),
            initial_health: Health::Serving,
            seed: None,
        }
    }
}

// === impl Shared ===

impl Shared {
    fn pick(&self, table: &Table, route: &Route) -> Result<Pick, Error> {
        let set = table.resolve(route)?;
        let members = set.members();
        let cx = Context::new(members, route.hash_key.as_deref(), self.env());
        let index = set.pick(&*self.policy, &cx);
        let candidate = cx.shared(index).clone();
        if !self.feedback.timed {
            return Ok(Pick::start(candidate, 0, false));
        }
        let now = cx.now();
        let silent = candidate.load.mark_picked(now, self.feedback.silence);
        let probe = silent || cx.forced() == Some(index);
        Ok(Pick::start(candidate, now, probe))
    }

    fn env(&self) -> Env<'_> {
        Env {
            rng: &self.rng.0,
            clock: &self.feedback.clock,
            force_after: self.feedback.silence,
        }
    }

    /// Runs `f` on the table in force, first refreshed if an outlier
    /// ejection has run out.
    ///
    /// The hot path touches no shared cache line in write mode: each thread
    /// keeps the last table it used and checks it against the current
    /// generation (a plain load). Only after a change does it take the
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

    /// The table in force, with the instances whose ejection ran out back.
    fn fresh_table(&self) -> Arc<Table> {
        let table = self.read_table();
        if !self.expired(&table) {
            return table;
        }
        // Another thread refreshing will bring them back; don't queue
        // behind it.
        if let Ok(mut state) = self.state.try_lock() {
            self.bring_back(&mut state);
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

    /// Puts back the instances whose outlier ejection is over.
    fn bring_back(&self, state: &mut State) {
        let now = self.feedback.clock.now();
        let ejections = &self.feedback.ejections;
        let over: Vec<String> = state
            .outliers
            .iter()
            .filter(|id| {
                state.entries.get(*id).is_none_or(|e| {
                    OutlierDetection::expire(&e.candidate.load, ejections, now)
                        || e.candidate.load.ejected_until.load(Ordering::Relaxed) == 0
                })
            })
            .cloned()
            .collect();
        for id in &over {
            state.outliers.remove(id);
            state.sync(id, now);
        }
        self.publish(state);
    }

    /// Brings the entries and the working table in line with `snapshot`;
    /// true if the table changed.
    fn apply(&self, state: &mut State, snapshot: &Snapshot) -> bool {
        state.table.set_service(snapshot.service());
        self.feedback
            .ejections
            .set_total(snapshot.instances().len());
        let now = self.feedback.clock.now();
        if state.snapshot.instances().is_empty() {
            // Everything is new: no diff to compute, and the records are
            // shared with the snapshot rather than copied out of it.
            state.entries.reserve(snapshot.instances().len());
            for instance in snapshot.instances().iter() {
                self.add(state, instance.clone(), now);
            }
            return !snapshot.instances().is_empty();
        }
        let changes = snapshot.changes(&state.snapshot);
        let changed = !changes.is_empty();
        for change in changes {
            self.change(state, change, now);
        }
        changed
    }

    fn change(&self, state: &mut State, change: Change, now: u64) {
        match change {
            Change::Add(instance) => self.add(state, instance, now),
            Change::Update(instance) => self.replace(state, instance, now),
            Change::Remove(instance) => self.remove(state, &instance.id),
        }
    }

    fn add(&self, state: &mut State, instance: Arc<Instance>, now: u64) {
        let serving = self.initial_health == Health::Serving;
        let load = Arc::new(Load::new(self.ewma, now, serving));
        let candidate = self.candidate(instance, load);
        let in_rotation = rotates(&candidate, now);
        state.table.insert(&candidate, in_rotation);
        let id = candidate.id().to_string();
        let entry = Entry {
            candidate,
            in_rotation,
        };
        if let Some(old) = state.entries.insert(id, entry) {
            // A snapshot never holds an id twice; if one did, the table
            // must not keep the first.
            state.table.remove(&old.candidate, old.in_rotation);
        }
    }

    /// A changed record: a new candidate with the same load.
    fn replace(&self, state: &mut State, instance: Arc<Instance>, now: u64) {
        let Some(old) = state.entries.remove(&instance.id) else {
            return self.add(state, instance, now);
        };
        state.table.remove(&old.candidate, old.in_rotation);
        let candidate = self.candidate(instance, old.candidate.load.clone());
        // An operator may have set it down or up: that is in the record.
        let in_rotation = rotates(&candidate, now);
        state.table.insert(&candidate, in_rotation);
        let id = candidate.id().to_string();
        let entry = Entry {
            candidate,
            in_rotation,
        };
        state.entries.insert(id, entry);
    }

    fn remove(&self, state: &mut State, id: &str) {
        let Some(old) = state.entries.remove(id) else {
            return;
        };
        state.table.remove(&old.candidate, old.in_rotation);
        state.outliers.remove(id);
        OutlierDetection::retire(&old.candidate.load, &self.feedback.ejections);
    }

    fn candidate(&self, instance: Arc<Instance>, load: Arc<Load>) -> Arc<Candidate> {
        let weight = weight(&instance, &load);
        Arc::new(Candidate::new(
            instance,
            weight,
            load,
            self.feedback.clone(),
        ))
    }

    /// Swaps in a clone of the working table.
    fn publish(&self, state: &mut State) {
        state.table.next_return = state.next_return();
        state.table.generation = GENERATIONS.fetch_add(1, Ordering::Relaxed);
        let generation = state.table.generation;
        let old = {
            let mut slot = self.table.write().unwrap_or_else(PoisonError::into_inner);
            let old = std::mem::replace(&mut *slot, Arc::new(state.table.clone()));
            self.generation.0.store(generation, Ordering::Release);
            old
        };
        // The old table (and the chunks only it holds) is freed here,
        // outside the write lock.
        drop(old);
    }
}

impl Eject for Shared {
    fn ejected(&self, id: &str) {
        let mut state = self.lock_state();
        let now = self.feedback.clock.now();
        state.outliers.insert(id.to_string());
        if state.sync(id, now) {
            self.publish(&mut state);
        }
    }
}

// === impl State ===

impl State {
    /// Moves the instance into or out of rotation as its load says; true if
    /// the table changed.
    fn sync(&mut self, id: &str, now: u64) -> bool {
        let Some(entry) = self.entries.get_mut(id) else {
            return false;
        };
        let in_rotation = rotates(&entry.candidate, now);
        if in_rotation == entry.in_rotation {
            return false;
        }
        entry.in_rotation = in_rotation;
        self.table.rotate(&entry.candidate, in_rotation);
        true
    }

    /// When the first outlier ejection of an instance that serves ends.
    fn next_return(&self) -> u64 {
        self.outliers
            .iter()
            .filter_map(|id| self.entries.get(id))
            .map(|e| &e.candidate.load)
            .filter(|load| load.serving())
            .map(|load| load.ejected_until.load(Ordering::Relaxed))
            .filter(|&until| until != 0)
            .min()
            .unwrap_or(u64::MAX)
    }
}

/// Whether a candidate is in rotation at `now`: not set down by an operator
/// ([`Instance::is_down`]), serving, not ejected. A down instance gets no new
/// picks; picks in flight complete against it as usual.
fn rotates(candidate: &Candidate, now: u64) -> bool {
    !candidate.instance().is_down() && !candidate.load.ejected(now)
}

/// The instance's weight; an invalid one is the default, warned about once.
fn weight(instance: &Instance, load: &Load) -> u32 {
    match instance.weight() {
        Ok(weight) => {
            load.warn_weight(false);
            weight
        }
        Err(error) => {
            if load.warn_weight(true) {
                tracing::warn!(
                    service = %instance.service, id = %instance.id, %error,
                    "using the default weight {DEFAULT_WEIGHT}"
                );
            }
            DEFAULT_WEIGHT
        }
    }
}
