//! The picker's view of one snapshot: candidates grouped by version, colour
//! lane and zone, so a route finds its candidate set without scanning.
//!
//! Every instance sits in two groups (its version's, and "any version"),
//! each split into lanes by colour and, within a lane, into the caller's
//! zone and the rest. Ejected instances are counted but left out, so the
//! policies only ever see instances in rotation; a change of ejections
//! rebuilds the table. Policy state (a Maglev table, a WRR cycle) is built
//! per candidate set on its first pick.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use crate::{
    Instance, Snapshot,
    balance::{Candidate, Context, Error, Picker, Policy, Route, balancer::Feedback, load::Load},
    instance::DEFAULT_WEIGHT,
};

/// Candidate sets of one snapshot.
#[derive(Debug)]
pub(crate) struct Table {
    service: String,
    len: usize,
    any_version: Lanes,
    versions: HashMap<String, Lanes>,
    /// Earliest clock time an outlier ejection ends; `u64::MAX` if none.
    pub(crate) next_return: u64,
    /// Unique among all tables of the process; see `Shared::with_table`.
    pub(crate) generation: u64,
}

/// What [`Table::build`] needs besides the snapshot.
#[derive(Debug)]
pub(crate) struct Inputs<'a> {
    pub(crate) loads: &'a HashMap<String, Arc<Load>>,
    pub(crate) zone: Option<&'a str>,
    pub(crate) feedback: &'a Arc<Feedback>,
    pub(crate) now: u64,
}

#[derive(Debug, Default)]
struct Lanes {
    base: Group,
    colors: HashMap<String, Group>,
}

#[derive(Debug, Default)]
struct Group {
    all: CandidateSet,
    local: CandidateSet,
    ejected: usize,
}

/// Candidates one route resolves to, with the policy's picker for them.
#[derive(Debug, Default)]
pub(crate) struct CandidateSet {
    members: Vec<Arc<Candidate>>,
    picker: OnceLock<Box<dyn Picker>>,
}

// === impl Table ===

impl Table {
    pub(crate) fn build(snapshot: &Arc<Snapshot>, inputs: &Inputs<'_>) -> Self {
        let mut table = Self {
            service: snapshot.service().to_string(),
            len: snapshot.len(),
            any_version: Lanes::default(),
            versions: HashMap::new(),
            next_return: u64::MAX,
            generation: 0,
        };
        for instance in snapshot.instances() {
            if let Some(load) = inputs.loads.get(&instance.id) {
                table.add(instance, load, inputs);
            }
        }
        table
    }

    fn add(&mut self, instance: &Arc<Instance>, load: &Arc<Load>, inputs: &Inputs<'_>) {
        let ejected = load.ejected(inputs.now);
        if ejected && load.serving() {
            let until = load
                .ejected_until
                .load(std::sync::atomic::Ordering::Relaxed);
            self.next_return = self.next_return.min(until);
        }
        let weight = weight(instance, load);
        let candidate = Arc::new(Candidate::new(
            instance.clone(),
            weight,
            load.clone(),
            inputs.feedback.clone(),
        ));
        let local = inputs.zone.is_some() && instance.zone() == inputs.zone;
        let entry = Entry {
            candidate,
            ejected,
            local,
        };
        self.any_version.add(instance.color(), &entry);
        if !instance.version.is_empty() {
            if let Some(lanes) = slot(&mut self.versions, &instance.version) {
                lanes.add(instance.color(), &entry);
            }
        }
    }

    /// The candidates for `route`, after the version, colour, zone and
    /// ejection filters.
    pub(crate) fn resolve(&self, route: &Route) -> Result<&CandidateSet, Error> {
        if self.len == 0 {
            return Err(Error::NoInstances {
                service: self.service.clone(),
            });
        }
        let lanes = match route.version.as_deref().filter(|v| !v.is_empty()) {
            None => &self.any_version,
            Some(version) => self.versions.get(version).ok_or_else(|| Error::NoVersion {
                service: self.service.clone(),
                version: version.to_string(),
            })?,
        };
        lanes.resolve(route.color.as_deref(), &self.service)
    }
}

struct Entry {
    candidate: Arc<Candidate>,
    ejected: bool,
    local: bool,
}

/// The value under `key`, inserted if missing; allocates the key only
/// then (always `Some`).
fn slot<'a, V: Default>(map: &'a mut HashMap<String, V>, key: &str) -> Option<&'a mut V> {
    if !map.contains_key(key) {
        map.insert(key.to_string(), V::default());
    }
    map.get_mut(key)
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

// === impl Lanes ===

impl Lanes {
    fn add(&mut self, color: Option<&str>, entry: &Entry) {
        let group = match color {
            None => Some(&mut self.base),
            Some(color) => slot(&mut self.colors, color),
        };
        if let Some(group) = group {
            group.add(entry);
        }
    }

    /// A coloured request goes to its lane while the lane has an instance in
    /// rotation, else to the base lane; an uncoloured one to the base lane only.
    fn resolve(&self, color: Option<&str>, service: &str) -> Result<&CandidateSet, Error> {
        let lane = color
            .filter(|c| !c.is_empty())
            .and_then(|c| self.colors.get(c));
        if let Some(set) = lane.and_then(Group::available) {
            return Ok(set);
        }
        if let Some(set) = self.base.available() {
            return Ok(set);
        }
        let count = self.base.ejected + lane.map_or(0, |g| g.ejected);
        let service = service.to_string();
        Err(if count > 0 {
            Error::AllEjected { service, count }
        } else {
            Error::NoBaseLane { service }
        })
    }
}

// === impl Group ===

impl Group {
    fn add(&mut self, entry: &Entry) {
        if entry.ejected {
            self.ejected += 1;
            return;
        }
        self.all.members.push(entry.candidate.clone());
        if entry.local {
            self.local.members.push(entry.candidate.clone());
        }
    }

    /// The caller's zone if it has an instance in rotation, else every zone.
    fn available(&self) -> Option<&CandidateSet> {
        [&self.local, &self.all]
            .into_iter()
            .find(|set| !set.members.is_empty())
    }
}

// === impl CandidateSet ===

impl CandidateSet {
    /// Runs the policy: the chosen candidate.
    pub(crate) fn pick(&self, policy: &dyn Policy, cx: &Context<'_>) -> &Arc<Candidate> {
        let picker = self.picker.get_or_init(|| policy.picker(&self.members));
        let index = picker.pick(cx) % self.members.len();
        &self.members[index]
    }

    pub(crate) fn members(&self) -> &[Arc<Candidate>] {
        &self.members
    }
}
