//! The picker's view of one service: candidates grouped by version, colour
//! lane and zone, so a route finds its candidate set without scanning.
//!
//! Every instance sits in two groups (its version's, and "any version"),
//! each split into lanes by colour and, within a lane, into the caller's
//! zone and the rest. Instances out of rotation are counted but left out, so
//! the policies only ever see instances in rotation.
//!
//! A table changes one instance at a time ([`Table::insert`],
//! [`Table::remove`], [`Table::rotate`]) and is published as a clone: the
//! groups are copied (a few pointers per chunk of their [`Candidates`]),
//! the chunks and the policy state are shared. A change thus costs what it
//! changed, the groups of one instance, each copying one chunk, and picks
//! reach a set in as few pointer hops as a table rebuilt from scratch.
//! Policy state (a Maglev table, a WRR cycle) is built per candidate set on
//! its first pick, and only a set that changed builds it again.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use crate::balance::{Candidate, Candidates, Context, Error, Picker, Policy, Route};

/// Candidate sets of one service.
#[derive(Clone, Debug)]
pub(crate) struct Table {
    service: Arc<str>,
    zone: Option<Arc<str>>,
    /// Instances, in rotation or not.
    len: usize,
    any_version: Lanes,
    versions: HashMap<Arc<str>, Lanes>,
    /// Earliest clock time an outlier ejection ends; `u64::MAX` if none.
    pub(crate) next_return: u64,
    /// Unique among all published tables of the process; see
    /// `Shared::with_table`.
    pub(crate) generation: u64,
}

#[derive(Clone, Debug, Default)]
struct Lanes {
    base: Group,
    colors: HashMap<Arc<str>, Group>,
}

#[derive(Clone, Debug, Default)]
struct Group {
    all: CandidateSet,
    local: CandidateSet,
    /// Members out of rotation.
    out: usize,
}

/// Candidates one route resolves to, with the policy's picker for them.
///
/// A clone (a published table) shares the picker; a change gives the set a
/// new one.
#[derive(Clone, Debug, Default)]
pub(crate) struct CandidateSet {
    members: Candidates,
    picker: Arc<OnceLock<Box<dyn Picker>>>,
}

/// Where one instance goes in a group.
#[derive(Clone, Copy)]
struct Place<'a> {
    candidate: &'a Arc<Candidate>,
    local: bool,
    in_rotation: bool,
}

// === impl Table ===

impl Table {
    /// An empty table of `service`, preferring `zone`.
    pub(crate) fn new(service: &str, zone: Option<&str>) -> Self {
        Self {
            service: service.into(),
            zone: zone.map(Into::into),
            len: 0,
            any_version: Lanes::default(),
            versions: HashMap::new(),
            next_return: u64::MAX,
            generation: 0,
        }
    }

    /// Adds an instance's candidate, in rotation or not.
    pub(crate) fn insert(&mut self, candidate: &Arc<Candidate>, in_rotation: bool) {
        self.len += 1;
        let place = self.place(candidate, in_rotation);
        self.any_version.add(place);
        let version = candidate.instance().version.as_str();
        if !version.is_empty() {
            if let Some(lanes) = slot(&mut self.versions, version) {
                lanes.add(place);
            }
        }
    }

    /// Removes an instance's candidate, placed as `in_rotation` says.
    pub(crate) fn remove(&mut self, candidate: &Arc<Candidate>, in_rotation: bool) {
        self.len = self.len.saturating_sub(1);
        let place = self.place(candidate, in_rotation);
        self.any_version.take(place);
        let version = candidate.instance().version.as_str();
        if let Some(lanes) = self.versions.get_mut(version) {
            lanes.take(place);
            if lanes.is_empty() {
                self.versions.remove(version);
            }
        }
    }

    /// Moves an instance's candidate into rotation or out of it.
    pub(crate) fn rotate(&mut self, candidate: &Arc<Candidate>, in_rotation: bool) {
        self.remove(candidate, !in_rotation);
        self.insert(candidate, in_rotation);
    }

    /// Renames the service (error messages only).
    pub(crate) fn set_service(&mut self, service: &str) {
        if *self.service != *service {
            self.service = service.into();
        }
    }

    fn place<'a>(&self, candidate: &'a Arc<Candidate>, in_rotation: bool) -> Place<'a> {
        let local = self
            .zone
            .as_deref()
            .is_some_and(|zone| candidate.instance().zone() == Some(zone));
        Place {
            candidate,
            local,
            in_rotation,
        }
    }

    /// The candidates for `route`, after the version, colour, zone and
    /// ejection filters.
    pub(crate) fn resolve(&self, route: &Route) -> Result<&CandidateSet, Error> {
        if self.len == 0 {
            return Err(Error::NoInstances {
                service: self.service.to_string(),
            });
        }
        let lanes = match route.version.as_deref().filter(|v| !v.is_empty()) {
            None => &self.any_version,
            Some(version) => self.versions.get(version).ok_or_else(|| Error::NoVersion {
                service: self.service.to_string(),
                version: version.to_string(),
            })?,
        };
        lanes.resolve(route.color.as_deref(), &self.service)
    }
}

/// The value under `key`, inserted if missing; allocates the key only then
/// (always `Some`).
fn slot<'a, V: Default>(map: &'a mut HashMap<Arc<str>, V>, key: &str) -> Option<&'a mut V> {
    if !map.contains_key(key) {
        map.insert(key.into(), V::default());
    }
    map.get_mut(key)
}

// === impl Lanes ===

impl Lanes {
    fn add(&mut self, place: Place<'_>) {
        match place.candidate.instance().color() {
            None => self.base.add(place),
            Some(color) => {
                if let Some(group) = slot(&mut self.colors, color) {
                    group.add(place);
                }
            }
        }
    }

    fn take(&mut self, place: Place<'_>) {
        match place.candidate.instance().color() {
            None => self.base.take(place),
            Some(color) => {
                let Some(group) = self.colors.get_mut(color) else {
                    return;
                };
                group.take(place);
                if group.is_empty() {
                    self.colors.remove(color);
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.base.is_empty() && self.colors.is_empty()
    }

    /// A coloured request goes to its lane while the lane has an instance in
    /// rotation, else to the base lane; an uncoloured one to the base lane only.
    fn resolve(&self, color: Option<&str>, service: &str) -> Result<&CandidateSet, Error> {
        let lane = color
            .filter(|c| !c.is_empty())
            .and_then(|c| self.colors.get(c));
        if let Some(set) = lane.and_then(|g| g.available()) {
            return Ok(set);
        }
        if let Some(set) = self.base.available() {
            return Ok(set);
        }
        let count = self.base.out + lane.map_or(0, |g| g.out);
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
    fn add(&mut self, place: Place<'_>) {
        if !place.in_rotation {
            self.out += 1;
            return;
        }
        self.all.insert(place.candidate);
        if place.local {
            self.local.insert(place.candidate);
        }
    }

    fn take(&mut self, place: Place<'_>) {
        if !place.in_rotation {
            self.out = self.out.saturating_sub(1);
            return;
        }
        let id = place.candidate.id();
        self.all.remove(id);
        if place.local {
            self.local.remove(id);
        }
    }

    fn is_empty(&self) -> bool {
        self.out == 0 && self.all.members.is_empty()
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
    /// Runs the policy: the index of the chosen candidate in `members`.
    pub(crate) fn pick(&self, policy: &dyn Policy, cx: &Context<'_>) -> usize {
        let picker = self.picker.get_or_init(|| policy.picker(&self.members));
        picker.pick(cx) % cx.len().max(1)
    }

    pub(crate) fn members(&self) -> &Candidates {
        &self.members
    }

    fn insert(&mut self, candidate: &Arc<Candidate>) {
        self.members.insert(candidate.clone());
        self.reset_picker();
    }

    fn remove(&mut self, id: &str) {
        if self.members.remove(id) {
            self.reset_picker();
        }
    }

    /// The members changed: the picker is built again on the next pick. A
    /// published table keeps the one it shares.
    fn reset_picker(&mut self) {
        // Neither built nor shared (a set being filled): nothing to reset.
        if Arc::strong_count(&self.picker) == 1 && self.picker.get().is_none() {
            return;
        }
        match Arc::get_mut(&mut self.picker) {
            Some(picker) => drop(picker.take()),
            None => self.picker = Arc::default(),
        }
    }
}
