//! The registry's memory: applications and their instances, renews,
//! eviction and self-protection.
//!
//! One mutex guards everything: every operation is a few map lookups, far
//! cheaper than the HTTP exchange around it, and one lock keeps the
//! timestamps of a node strictly increasing in the order changes happen, so
//! a poller that saw timestamp T never misses a change stamped below it.
//!
//! Eviction follows Eureka and discovery: an instance not renewed for
//! `evict_after` goes, except while **self-protection** is on, which is
//! when the renews of the last window fell below 85 % of those expected
//! (`instances x window / renew_interval`, counting only instances that were
//! there for the whole window): a partition between this node and healthy
//! providers then leaves the registry as it is rather than emptying it,
//! up to a hard ceiling. A round removes at most about 15 % of the
//! instances, chosen at random, so a burst of expiries drains over several
//! rounds. An instance that asked for its own TTL chose lease semantics and
//! is evicted once its TTL passes, protection or not.
//!
//! As in discovery, an application whose last instance leaves is gone: reads
//! answer "not found" and polls of it are held until it is back, rather than
//! answered with an empty view (see [`PollKind`]).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rand::seq::SliceRandom;
use tokio::{sync::watch, time::Instant};

use super::Config;
use crate::wire::{Fetched, Instance, STATUS_UP};

/// An application in one environment.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct AppKey {
    pub(crate) env: String,
    pub(crate) appid: String,
}

/// Why a write was refused.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// No such instance (or, for a replicated renew, an older copy here).
    NotFound,
    /// A replicated write older than the copy here, which is given.
    Conflict(Box<Instance>),
    /// The application is full.
    TooMany,
}

/// Which endpoint a poll came through: they answer differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PollKind {
    /// `/discovery/poll`: an application newer than the poller's timestamp
    /// is answered even when no instance of it is up (a client that keeps
    /// the timestamp it is given learns that its view emptied); an unknown
    /// application, when it is the first one asked for, is answered
    /// "not found" at once, as discovery does.
    One,
    /// `/discovery/polls`, what discovery's Go clients use: only views with
    /// an instance up are answered. Those clients skip an empty answer
    /// without keeping its timestamp and poll again at once, so an empty
    /// view answered at once would have them spin; it is held instead, like
    /// an unknown application.
    Many,
}

/// The answer to a poll.
#[derive(Debug)]
pub(crate) enum Polled {
    /// Applications with something newer than the poller has (up instances
    /// only, by zone), and the applications asked for that are unknown.
    Ready {
        changed: BTreeMap<String, Fetched>,
        missing: Vec<String>,
    },
    /// [`PollKind::One`] only: the first application asked for is unknown.
    Unknown(String),
    /// Nothing to answer: wait for one of these to change.
    Wait(Vec<watch::Receiver<i64>>),
}

/// Changes to one instance with [`Store::set`]; `None` leaves a field
/// alone.
#[derive(Clone, Debug, Default)]
pub(crate) struct Changes {
    pub(crate) status: Option<u32>,
    pub(crate) color: Option<String>,
    /// Merged into the instance's metadata, as discovery's `set` does.
    pub(crate) metadata: Option<BTreeMap<String, String>>,
}

/// The registry's memory; see the [module docs](self).
#[derive(Debug)]
pub(crate) struct Store {
    inner: Mutex<Inner>,
    config: Arc<Config>,
}

#[derive(Debug)]
struct Inner {
    apps: HashMap<AppKey, App>,
    guard: Guard,
    next_general: Instant,
    /// The last timestamp handed out: timestamps strictly increase.
    last_ts: i64,
}

#[derive(Debug)]
struct App {
    entries: BTreeMap<String, Entry>,
    latest: i64,
    changed: watch::Sender<i64>,
}

#[derive(Debug)]
struct Entry {
    instance: Instance,
    renewed: Instant,
    /// When it first appeared here, to count only instances that could have
    /// renewed during a whole protection window.
    since: Instant,
}

/// Self-protection: renews counted per window.
#[derive(Debug)]
struct Guard {
    window_start: Instant,
    renews: u64,
    protecting: bool,
    /// The last whole window's renews and those expected, for operators.
    last: Option<(u64, f64)>,
}

/// Self-protection as an operator sees it: what `/lodestar/status` shows.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub(crate) struct Protection {
    /// Whether self-protection is on (eviction paused).
    pub(crate) protecting: bool,
    /// The window renews are counted over, in seconds.
    pub(crate) window_secs: f64,
    /// The share of expected renews below which protection turns on.
    pub(crate) threshold: f64,
    /// Renews counted in the window under way.
    pub(crate) renews_current: u64,
    /// Seconds into the window under way.
    pub(crate) current_elapsed_secs: f64,
    /// Renews of the last whole window, if one has passed.
    pub(crate) renews_last_window: Option<u64>,
    /// Renews expected in the last whole window, if one has passed.
    pub(crate) expected_last_window: Option<f64>,
    /// Renews expected in a whole window from the instances present now
    /// (those without a TTL of their own).
    pub(crate) expected_now: f64,
    /// The renews below which a window turns protection on, from
    /// `expected_now`.
    pub(crate) threshold_renews: f64,
}

// === impl Store ===

impl Store {
    pub(crate) fn new(config: Arc<Config>) -> Self {
        let now = Instant::now();
        let inner = Inner {
            apps: HashMap::new(),
            guard: Guard {
                window_start: now,
                renews: 0,
                protecting: false,
                last: None,
            },
            next_general: now + config.evict_every,
            last_ts: 0,
        };
        Self {
            inner: Mutex::new(inner),
            config,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere mid-update leaves maps that are still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds or replaces an instance. A client's write is stamped now; a
    /// replicated one keeps its dirty timestamp and loses to a newer copy.
    pub(crate) fn register(
        &self,
        mut instance: Instance,
        replication: bool,
    ) -> Result<Instance, Refusal> {
        instance.reconcile_color();
        let key = key_of(&instance);
        let mut inner = self.lock();
        let now = inner.now();
        let max = self.config.max_instances_per_app;
        let app = inner.app(key);
        if let Some(existing) = app.entries.get_mut(&instance.hostname) {
            if replication && existing.instance.dirty_timestamp > instance.dirty_timestamp {
                return Err(Refusal::Conflict(Box::new(existing.instance.clone())));
            }
            if replication && existing.instance.dirty_timestamp == instance.dirty_timestamp {
                existing.renewed = Instant::now();
                return Ok(existing.instance.clone());
            }
        } else if app.entries.len() >= max {
            return Err(Refusal::TooMany);
        }
        stamp(&mut instance, now, replication);
        let since = app
            .entries
            .get(&instance.hostname)
            .map_or_else(Instant::now, |e| e.since);
        let entry = Entry {
            instance: instance.clone(),
            renewed: Instant::now(),
            since,
        };
        app.entries.insert(instance.hostname.clone(), entry);
        app.touch(now);
        Ok(instance)
    }

    /// Renews an instance; its dirty timestamp on success. A replicated
    /// renew carries the sender's dirty timestamp: newer than ours means we
    /// miss a write (`NotFound`, the sender then sends the instance), older
    /// means the sender does (`Conflict`, with ours).
    pub(crate) fn renew(
        &self,
        key: &AppKey,
        hostname: &str,
        dirty: Option<i64>,
    ) -> Result<i64, Refusal> {
        let mut inner = self.lock();
        let now = inner.now();
        let Inner { apps, guard, .. } = &mut *inner;
        let entry = apps
            .get_mut(key)
            .and_then(|app| app.entries.get_mut(hostname))
            .ok_or(Refusal::NotFound)?;
        match dirty {
            Some(d) if d > entry.instance.dirty_timestamp => return Err(Refusal::NotFound),
            Some(d) if d < entry.instance.dirty_timestamp => {
                return Err(Refusal::Conflict(Box::new(entry.instance.clone())));
            }
            _ => {}
        }
        entry.renewed = Instant::now();
        entry.instance.renew_timestamp = now;
        if entry.instance.ttl == 0 {
            guard.renews += 1;
        }
        Ok(entry.instance.dirty_timestamp)
    }

    /// Removes an instance; the dirty timestamp of the copy removed. A
    /// replicated cancel carries the sender's: a newer copy here (registered
    /// again meanwhile) stays, and is answered as a conflict.
    pub(crate) fn cancel(
        &self,
        key: &AppKey,
        hostname: &str,
        dirty: Option<i64>,
    ) -> Result<i64, Refusal> {
        let mut inner = self.lock();
        let now = inner.now();
        let app = inner.apps.get_mut(key).ok_or(Refusal::NotFound)?;
        let entry = app.entries.get(hostname).ok_or(Refusal::NotFound)?;
        if dirty.is_some_and(|d| d < entry.instance.dirty_timestamp) {
            return Err(Refusal::Conflict(Box::new(entry.instance.clone())));
        }
        let removed = app.entries.remove(hostname).ok_or(Refusal::NotFound)?;
        app.touch(now);
        Ok(removed.instance.dirty_timestamp)
    }

    /// Changes status, colour or metadata of instances, all or none: the
    /// new records, or the first hostname the application does not have
    /// (discovery stops at it, having changed those before it).
    pub(crate) fn set(
        &self,
        key: &AppKey,
        changes: Vec<(String, Changes)>,
    ) -> Result<Vec<Instance>, String> {
        let mut inner = self.lock();
        let now = inner.now();
        let Some(app) = inner.apps.get_mut(key) else {
            return Err(changes.into_iter().next().map(|c| c.0).unwrap_or_default());
        };
        if let Some((missing, _)) = changes.iter().find(|(h, _)| !app.entries.contains_key(h)) {
            return Err(missing.clone());
        }
        let mut updated = Vec::with_capacity(changes.len());
        for (hostname, change) in changes {
            if let Some(entry) = app.entries.get_mut(&hostname) {
                apply(&mut entry.instance, change, now);
                updated.push(entry.instance.clone());
            }
        }
        app.touch(now);
        Ok(updated)
    }

    /// One instance, as it is now.
    pub(crate) fn get(&self, key: &AppKey, hostname: &str) -> Option<Instance> {
        let inner = self.lock();
        let entry = inner.apps.get(key)?.entries.get(hostname)?;
        Some(entry.instance.clone())
    }

    /// The instances of an application, filtered by zone and by status (a
    /// bit mask: 1 up, 2 waiting, 3 both); `None` if it has none, or none
    /// in that zone.
    pub(crate) fn fetch(&self, key: &AppKey, zone: Option<&str>, status: u32) -> Option<Fetched> {
        self.lock().apps.get(key)?.fetched(zone, status)
    }

    /// What a poll with these (application, last timestamp seen) pairs is
    /// answered, or what to wait on; see [`PollKind`].
    pub(crate) fn poll(
        &self,
        wants: &[(AppKey, i64)],
        zone: Option<&str>,
        kind: PollKind,
    ) -> Polled {
        let mut inner = self.lock();
        let mut changed = BTreeMap::new();
        let mut missing = Vec::new();
        for (key, seen) in wants {
            let Some(app) = inner.apps.get(key).filter(|a| !a.entries.is_empty()) else {
                missing.push(key.appid.clone());
                continue;
            };
            if app.latest <= *seen {
                continue;
            }
            match app.fetched(zone, STATUS_UP) {
                None => missing.push(key.appid.clone()),
                Some(view) if kind == PollKind::Many && is_empty(&view) => {}
                Some(view) => {
                    changed.insert(key.appid.clone(), view);
                }
            }
        }
        if let (PollKind::One, Some((first, _))) = (kind, wants.first()) {
            if missing.first() == Some(&first.appid) {
                return Polled::Unknown(first.appid.clone());
            }
        }
        if !changed.is_empty() {
            return Polled::Ready { changed, missing };
        }
        let waits = wants
            .iter()
            .map(|(key, _)| inner.app(key.clone()).changed.subscribe())
            .collect();
        Polled::Wait(waits)
    }

    /// Every instance, by application, optionally of one environment only.
    pub(crate) fn fetch_all(&self, env: Option<&str>) -> BTreeMap<String, Vec<Instance>> {
        let inner = self.lock();
        let mut all: BTreeMap<String, Vec<Instance>> = BTreeMap::new();
        for (key, app) in &inner.apps {
            if env.is_some_and(|env| env != key.env) || app.entries.is_empty() {
                continue;
            }
            let list = all.entry(key.appid.clone()).or_default();
            list.extend(app.entries.values().map(|e| e.instance.clone()));
        }
        all
    }

    /// The number of instances.
    pub(crate) fn len(&self) -> usize {
        self.lock().apps.values().map(|a| a.entries.len()).sum()
    }

    /// Whether self-protection is on.
    pub(crate) fn protecting(&self) -> bool {
        self.lock().guard.protecting
    }

    /// Self-protection's counters, for `/lodestar/status`.
    pub(crate) fn protection(&self) -> Protection {
        let inner = self.lock();
        let config = &self.config;
        let subject = inner
            .apps
            .values()
            .flat_map(|a| a.entries.values())
            .filter(|e| e.instance.ttl == 0)
            .count();
        let per_instance = config.protect_window.as_secs_f64()
            / config.renew_interval.as_secs_f64().max(f64::EPSILON);
        let expected_now = subject as f64 * per_instance;
        let guard = &inner.guard;
        Protection {
            protecting: guard.protecting,
            window_secs: config.protect_window.as_secs_f64(),
            threshold: config.protect_threshold,
            renews_current: guard.renews,
            current_elapsed_secs: guard.window_start.elapsed().as_secs_f64(),
            renews_last_window: guard.last.map(|(renews, _)| renews),
            expected_last_window: guard.last.map(|(_, expected)| expected),
            expected_now,
            threshold_renews: expected_now * config.protect_threshold,
        }
    }

    /// One eviction tick (every second at most): rolls the protection
    /// window, evicts instances past their own TTL and, every
    /// `evict_every`, those not renewed for `evict_after`. The evicted.
    pub(crate) fn tick(&self) -> Vec<Instance> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.roll_window(now, &self.config);
        let general = now >= inner.next_general;
        if general {
            inner.next_general = now + self.config.evict_every;
        }
        let (mut stale, expired, total) = inner.expired(now, general, &self.config);
        let limit = total.saturating_sub(total * 85 / 100).max(1);
        if stale.len() > limit {
            stale.shuffle(&mut rand::rng());
            stale.truncate(limit);
        }
        let ts = inner.now();
        let mut evicted = Vec::new();
        for (key, hostname) in stale.into_iter().chain(expired) {
            if let Some(app) = inner.apps.get_mut(&key) {
                evicted.extend(app.entries.remove(&hostname).map(|e| e.instance));
                app.touch(ts);
            }
        }
        if general {
            // Forget applications nobody has or polls.
            inner
                .apps
                .retain(|_, app| !app.entries.is_empty() || app.changed.receiver_count() > 0);
        }
        evicted
    }
}

/// Applies one instance's [`Changes`] at `now`.
fn apply(instance: &mut Instance, change: Changes, now: i64) {
    if let Some(status) = change.status {
        if status != instance.status && status == STATUS_UP {
            instance.up_timestamp = now;
        }
        instance.status = status;
    }
    if let Some(metadata) = change.metadata {
        // A colour in the metadata is the instance's colour.
        if let Some(color) = metadata.get(lodestar::instance::COLOR) {
            instance.color.clone_from(color);
        }
        instance.metadata.extend(metadata);
    }
    if let Some(color) = change.color {
        instance.color = color;
        instance.metadata.remove(lodestar::instance::COLOR);
    }
    instance.reconcile_color();
    instance.dirty_timestamp = now;
    instance.latest_timestamp = now;
}

/// Whether a view has no instance at all.
fn is_empty(view: &Fetched) -> bool {
    view.instances.values().all(Vec::is_empty)
}

fn key_of(instance: &Instance) -> AppKey {
    AppKey {
        env: instance.env.clone(),
        appid: instance.appid.clone(),
    }
}

/// Sets the timestamps of a record about to be stored at `now`.
fn stamp(instance: &mut Instance, now: i64, replication: bool) {
    if !replication || instance.dirty_timestamp == 0 {
        instance.dirty_timestamp = now;
    }
    for ts in [
        &mut instance.reg_timestamp,
        &mut instance.up_timestamp,
        &mut instance.renew_timestamp,
    ] {
        if !replication || *ts == 0 {
            *ts = now;
        }
    }
    instance.latest_timestamp = now;
}

fn wall_clock_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

// === impl Inner ===

impl Inner {
    /// Wall-clock nanoseconds, strictly increasing.
    fn now(&mut self) -> i64 {
        self.last_ts = wall_clock_ns().max(self.last_ts + 1);
        self.last_ts
    }

    fn app(&mut self, key: AppKey) -> &mut App {
        self.apps.entry(key).or_insert_with(|| App {
            entries: BTreeMap::new(),
            latest: 0,
            changed: watch::channel(0).0,
        })
    }

    fn roll_window(&mut self, now: Instant, config: &Config) {
        let guard = &mut self.guard;
        let elapsed = now.duration_since(guard.window_start);
        if elapsed < config.protect_window {
            return;
        }
        let settled = self
            .apps
            .values()
            .flat_map(|a| a.entries.values())
            .filter(|e| e.instance.ttl == 0 && e.since <= guard.window_start)
            .count();
        // Over the time the window actually lasted: the evict tick that
        // rolls it may come late, and a window of twice the length holds
        // twice the renews.
        let per_instance =
            elapsed.as_secs_f64() / config.renew_interval.as_secs_f64().max(f64::EPSILON);
        let expected = settled as f64 * per_instance;
        let protecting =
            expected > 0.0 && (guard.renews as f64) < config.protect_threshold * expected;
        if protecting != guard.protecting {
            let renews = guard.renews;
            if protecting {
                tracing::warn!(
                    renews,
                    expected,
                    "renews fell below the threshold: self-protection on, eviction paused"
                );
            } else {
                tracing::info!(renews, expected, "renews are back: self-protection off");
            }
        }
        guard.protecting = protecting;
        guard.last = Some((guard.renews, expected));
        guard.renews = 0;
        guard.window_start = now;
    }

    /// Instances due for eviction: (stale ones, TTL-expired ones, how many
    /// instances are subject to the general rule).
    #[allow(clippy::type_complexity)] // a private helper's tuple, named at its one call site
    fn expired(
        &self,
        now: Instant,
        general: bool,
        config: &Config,
    ) -> (Vec<(AppKey, String)>, Vec<(AppKey, String)>, usize) {
        let protect = self.guard.protecting;
        let (mut stale, mut expired, mut total) = (Vec::new(), Vec::new(), 0);
        for (key, app) in &self.apps {
            for (hostname, entry) in &app.entries {
                let idle = now.duration_since(entry.renewed);
                if entry.instance.ttl > 0 {
                    if idle > Duration::from_secs(entry.instance.ttl) {
                        expired.push((key.clone(), hostname.clone()));
                    }
                    continue;
                }
                total += 1;
                let due = idle > config.evict_after && (!protect || idle > config.protect_ceiling);
                if general && due {
                    stale.push((key.clone(), hostname.clone()));
                }
            }
        }
        (stale, expired, total)
    }
}

// === impl App ===

impl App {
    fn touch(&mut self, now: i64) {
        self.latest = now;
        self.changed.send_replace(now);
    }

    /// The view of a fetch or a poll, as discovery builds it: every zone of
    /// the application (or the one asked for) is listed, empty when the
    /// status filter leaves nothing; `None` when the application has no
    /// instance there at all.
    fn fetched(&self, zone: Option<&str>, status: u32) -> Option<Fetched> {
        let mut fetched = Fetched {
            latest_timestamp: self.latest,
            ..Fetched::default()
        };
        let in_zone = self
            .entries
            .values()
            .map(|e| &e.instance)
            .filter(|i| zone.is_none_or(|z| z == i.zone));
        for instance in in_zone {
            let list = fetched.instances.entry(instance.zone.clone()).or_default();
            if instance.status & status != 0 {
                list.push(instance.clone());
            }
        }
        (!fetched.instances.is_empty()).then_some(fetched)
    }
}

#[cfg(test)]
mod tests;
