//! One stream's subscriptions and what it was sent.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use envoy_types::pb::{
    envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse},
    google::protobuf::Any,
};
use tokio::{sync::Notify, task::AbortHandle};
use tonic::Status;

use crate::{
    hub::{Hub, Interest},
    names::{ClusterName, service_of},
    plan::View,
    resources,
    server::Policies,
};

/// The resource types served, in the order a change is pushed (a route
/// before the clusters it names, a cluster before its endpoints).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Listeners, by service.
    Listener,
    /// RouteConfigurations, by service.
    Route,
    /// Clusters, by lane.
    Cluster,
    /// ClusterLoadAssignments, by lane.
    Endpoints,
}

/// One ADS stream's state; see the [module docs](super).
#[derive(Debug)]
pub struct Session {
    hub: Hub,
    policies: Arc<Policies>,
    node: Option<String>,
    zone: Option<String>,
    types: HashMap<Kind, Subscription>,
    held: HashMap<String, Held>,
    changes: Arc<Notify>,
    nonces: u64,
}

/// What a client subscribed to, of one type, and what it was sent.
#[derive(Debug, Default)]
struct Subscription {
    names: BTreeSet<String>,
    version: u64,
    nonce: String,
    sent: Option<Vec<Any>>,
}

/// A held service: its interest, and the task that wakes the session on
/// its changes (stopped when dropped).
#[derive(Debug)]
struct Held {
    interest: Interest,
    forward: AbortHandle,
}

// === impl Kind ===

impl Kind {
    /// Every type, in push order.
    pub const ALL: [Kind; 4] = [Self::Listener, Self::Route, Self::Cluster, Self::Endpoints];

    /// The type of `type_url`, if served.
    pub fn from_type_url(type_url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.type_url() == type_url)
    }

    /// Its `type_url`.
    pub fn type_url(self) -> &'static str {
        match self {
            Self::Listener => resources::LISTENER,
            Self::Route => resources::ROUTE,
            Self::Cluster => resources::CLUSTER,
            Self::Endpoints => resources::ENDPOINTS,
        }
    }
}

// === impl Session ===

impl Session {
    /// A session resolving services through `hub`.
    pub fn new(hub: Hub, policies: Arc<Policies>) -> Self {
        Self {
            hub,
            policies,
            node: None,
            zone: None,
            types: HashMap::new(),
            held: HashMap::new(),
            changes: Arc::new(Notify::new()),
            nonces: 0,
        }
    }

    /// Notified when a held service changed: call [`Session::refresh`].
    pub fn changes(&self) -> Arc<Notify> {
        self.changes.clone()
    }

    /// The client's node id, once its first request came.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// Takes a request; answers with the responses to send, or the status
    /// that ends the stream.
    pub fn handle(&mut self, request: DiscoveryRequest) -> Result<Vec<DiscoveryResponse>, Status> {
        self.identify(&request)?;
        let kind = Kind::from_type_url(&request.type_url).ok_or_else(|| {
            Status::invalid_argument(format!(
                "unknown type_url {:?}: this server serves envoy v3 Listener, \
                 RouteConfiguration, Cluster and ClusterLoadAssignment",
                request.type_url
            ))
        })?;
        let node = self.node.clone().unwrap_or_default();
        let subscription = self.types.entry(kind).or_default();
        if !request.response_nonce.is_empty()
            && !subscription.nonce.is_empty()
            && request.response_nonce != subscription.nonce
        {
            tracing::debug!(%node, ?kind, nonce = %request.response_nonce, "xds: stale request ignored");
            return Ok(Vec::new());
        }
        if request.response_nonce == subscription.nonce && !subscription.nonce.is_empty() {
            match &request.error_detail {
                Some(error) => tracing::warn!(
                    %node, ?kind, rejected = %subscription.version, kept = %request.version_info,
                    reason = %error.message,
                    "xds: the client rejected (NACK) the resources sent; it keeps those it accepted last"
                ),
                None => tracing::debug!(%node, ?kind, version = %request.version_info, "xds: ACK"),
            }
        }
        let names: BTreeSet<String> = request.resource_names.into_iter().collect();
        if names != subscription.names {
            subscription.names = names;
            self.hold();
        }
        Ok(self.respond(kind).into_iter().collect())
    }

    /// The responses a change of the held services calls for: only the
    /// types whose resources changed.
    pub fn refresh(&mut self) -> Vec<DiscoveryResponse> {
        let kinds: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|k| self.types.contains_key(k))
            .collect();
        kinds.into_iter().filter_map(|k| self.respond(k)).collect()
    }

    /// Notes the node from the first request; it is required there.
    fn identify(&mut self, request: &DiscoveryRequest) -> Result<(), Status> {
        if self.node.is_some() {
            return Ok(());
        }
        let node = request.node.as_ref().ok_or_else(|| {
            Status::invalid_argument(
                "the first DiscoveryRequest of a stream must carry the client's node",
            )
        })?;
        let zone = node.locality.as_ref().map_or("", |l| l.zone.as_str());
        tracing::info!(node = %node.id, %zone, "xds: client connected");
        self.node = Some(node.id.clone());
        self.zone = node
            .locality
            .as_ref()
            .map(|l| l.zone.clone())
            .filter(|z| !z.is_empty());
        Ok(())
    }

    /// Holds an interest in every service some subscription names, and only
    /// those.
    fn hold(&mut self) {
        let wanted: BTreeSet<String> = self
            .types
            .values()
            .flat_map(|s| s.names.iter())
            .filter_map(|name| service_of(name))
            .map(str::to_string)
            .collect();
        self.held.retain(|service, _| wanted.contains(service));
        for service in wanted {
            if !self.held.contains_key(&service) {
                let held = Held::new(self.hub.subscribe(&service), self.changes.clone());
                self.held.insert(service, held);
            }
        }
    }

    /// A response for `kind` if its resources differ from those last sent
    /// and every service they need is in hand.
    fn respond(&mut self, kind: Kind) -> Option<DiscoveryResponse> {
        let resources = self.build(kind)?;
        let subscription = self.types.get_mut(&kind)?;
        if subscription.sent.as_ref() == Some(&resources) {
            return None;
        }
        self.nonces += 1;
        subscription.version += 1;
        subscription.nonce = self.nonces.to_string();
        subscription.sent = Some(resources.clone());
        Some(DiscoveryResponse {
            version_info: subscription.version.to_string(),
            resources,
            type_url: kind.type_url().to_string(),
            nonce: subscription.nonce.clone(),
            ..Default::default()
        })
    }

    /// The resources of `kind` the client subscribed to; `None` while a
    /// service they need is still being read.
    fn build(&self, kind: Kind) -> Option<Vec<Any>> {
        let names = &self.types.get(&kind)?.names;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let Some(service) = service_of(name) else {
                continue;
            };
            let policy = self.policies.get(service);
            let view = || self.view(service);
            let key = |zone: Option<&str>| format!("{kind:?} {name} {policy} {zone:?}");
            match kind {
                Kind::Listener | Kind::Route if name.contains('/') => {}
                Kind::Listener => {
                    let view = view()?;
                    out.push(view.cached(key(None), || resources::listener(&view, policy)));
                }
                Kind::Route => {
                    let view = view()?;
                    out.push(view.cached(key(None), || resources::route(&view, policy)));
                }
                Kind::Cluster => {
                    if let Some(cluster) = ClusterName::parse(name) {
                        out.push(resources::cluster(&cluster, policy));
                    }
                }
                Kind::Endpoints => {
                    let Some(cluster) = ClusterName::parse(name) else {
                        continue;
                    };
                    let view = view()?;
                    let zone = self.zone.as_deref();
                    out.push(view.cached(key(zone), || {
                        resources::assignment(&view, &cluster, policy, zone)
                    }));
                }
            }
        }
        Some(out)
    }

    fn view(&self, service: &str) -> Option<Arc<View>> {
        self.held.get(service)?.interest.view()
    }
}

// === impl Held ===

impl Held {
    fn new(interest: Interest, changes: Arc<Notify>) -> Self {
        // Not an interest: the task must not keep the watch open.
        let mut rx = interest.receiver();
        let forward = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                changes.notify_one();
            }
        })
        .abort_handle();
        Self { interest, forward }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.forward.abort();
    }
}

#[cfg(test)]
mod tests;
