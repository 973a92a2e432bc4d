//! What a snapshot means to a gRPC client: the routes of a service, in match
//! order, and the instances of each lane. Pure functions of the snapshot.
//!
//! The routes reproduce lodestar's balancer (`lodestar::balance`'s table)
//! exactly:
//!
//! - a `lodestar-version` pin restricts to that version's instances; a pin
//!   to a version no instance has fails (here: an empty cluster, UNAVAILABLE);
//! - a `lodestar-color` request goes to the instances of that colour while
//!   one of them is in rotation, else to the base lane;
//! - the base lane is the instances with no colour; a request without a
//!   colour goes there only.
//!
//! "In rotation" is known here: an instance an operator set `down` is not,
//! nor one whose own gRPC health answers NOT_SERVING.
//! The server decides the fallback, so a colour whose instances are all down
//! gets no route and its requests take the base lane's.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
};

use envoy_types::pb::google::protobuf::Any;

use lodestar::{Instance, Snapshot};

use crate::names::{ClusterName, Lane};

/// The scheme of the endpoint gRPC clients connect to.
pub const GRPC_SCHEME: &str = "grpc";

/// A service as the server knows it: the registry's snapshot and the
/// instances whose own gRPC health says NOT_SERVING ([`health`](crate::health)).
///
/// A published view is never changed: its [`View::cached`] resources are
/// shared by every stream (a clone starts with an empty cache).
#[derive(Clone, Debug)]
pub struct View {
    /// The registry's view.
    pub snapshot: Arc<Snapshot>,
    /// Ids of the instances answering NOT_SERVING.
    pub not_serving: BTreeSet<String>,
    cache: Cache,
}

/// Resources built from one view, by key: built once per change, not once
/// per stream.
#[derive(Debug, Default)]
struct Cache(Mutex<HashMap<String, Any>>);

/// One route: requests whose headers match go to `cluster`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// `lodestar-version` must be this exactly (`None`: not looked at).
    pub version: Option<String>,
    /// `lodestar-version` must be present, whatever its value.
    pub any_version: bool,
    /// `lodestar-color` must be this exactly (`None`: not looked at).
    pub color: Option<String>,
    /// Where matching requests go.
    pub cluster: ClusterName,
}

/// The routes of `snapshot`'s service, most specific first, ending with the
/// catch-all to the base lane.
pub fn routes(view: &View) -> Vec<Rule> {
    let service = view.service();
    let mut rules = Vec::new();
    for version in versions(view) {
        for color in live_colors(view, Some(&version)) {
            rules.push(Rule::new(Some(&version), Some(&color), service));
        }
        rules.push(Rule::new(Some(&version), None, service));
    }
    rules.push(Rule {
        version: None,
        any_version: true,
        color: None,
        cluster: ClusterName::nothing(service),
    });
    for color in live_colors(view, None) {
        rules.push(Rule::new(None, Some(&color), service));
    }
    rules.push(Rule::new(None, None, service));
    rules
}

/// The instances a lane holds, in id order: those with a `grpc://`
/// endpoint, whether in rotation or not.
pub fn members<'a>(view: &'a View, lane: &Lane) -> Vec<&'a Arc<Instance>> {
    let Lane::Subset { version, color } = lane else {
        return Vec::new();
    };
    usable(view)
        .filter(|i| version.as_deref().is_none_or(|v| i.version == v))
        .filter(|i| i.color() == color.as_deref())
        .collect()
}

// === impl View ===

impl View {
    /// A view of `snapshot` with every instance's own health unknown.
    pub fn new(snapshot: Arc<Snapshot>) -> Self {
        Self {
            snapshot,
            not_serving: BTreeSet::new(),
            cache: Cache::default(),
        }
    }

    /// The resource under `key`, built by `build` on the first call.
    pub fn cached(&self, key: String, build: impl FnOnce() -> Any) -> Any {
        let mut cache = self.cache.0.lock().unwrap_or_else(|e| e.into_inner());
        cache.entry(key).or_insert_with(build).clone()
    }

    /// The service.
    pub fn service(&self) -> &str {
        self.snapshot.service()
    }

    /// Whether an instance takes new calls: not set `down` by an operator,
    /// not answering NOT_SERVING.
    pub fn in_rotation(&self, instance: &Instance) -> bool {
        !instance.is_down() && !self.not_serving.contains(&instance.id)
    }
}

/// Instances gRPC clients can reach: those with a `grpc://` endpoint.
fn usable(view: &View) -> impl Iterator<Item = &Arc<Instance>> {
    view.snapshot
        .instances()
        .iter()
        .filter(|i| i.endpoint(GRPC_SCHEME).is_some())
}

/// The versions instances announce (an empty version is no version).
fn versions(view: &View) -> BTreeSet<String> {
    usable(view)
        .filter(|i| !i.version.is_empty())
        .map(|i| i.version.clone())
        .collect()
}

/// The colours with an instance in rotation, among `version`'s instances
/// (any version's if `None`).
fn live_colors(view: &View, version: Option<&str>) -> BTreeSet<String> {
    usable(view)
        .filter(|i| version.is_none_or(|v| i.version == v))
        .filter(|i| view.in_rotation(i))
        .filter_map(|i| i.color().map(str::to_string))
        .collect()
}

// === impl Rule ===

impl Rule {
    fn new(version: Option<&str>, color: Option<&str>, service: &str) -> Self {
        Self {
            version: version.map(str::to_string),
            any_version: false,
            color: color.map(str::to_string),
            cluster: ClusterName::subset(service, version, color),
        }
    }
}

// === impl Cache ===

impl Clone for Cache {
    /// A clone is another view: nothing built yet.
    fn clone(&self) -> Self {
        Self::default()
    }
}

#[cfg(test)]
mod tests;
