//! Following one application: discovery's requests for the core's resync
//! driver ([`lodestar::discovery::resync`]), which owns the loop.
//!
//! - [`Source::list`] is a `fetch`: every instance and the application's
//!   `latest_timestamp`.
//! - [`Source::follow`] long-polls from that timestamp; each answer is the
//!   whole application again (discovery's poll has no deltas), which the
//!   driver turns into what changed.
//! - Timestamps are per node: a poll that fails, or a client that moved to
//!   another node meanwhile, cannot resume, so the driver fetches again.
//!
//! Nodes keep no data: one that restarted answers "no such application"
//! until the instances' next renews register them again, and a watch shows
//! that. Clients that send calls keep such vanished instances for a while
//! through the core's self-protection ([`lodestar::discovery::protect`]),
//! the same for every backend.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use lodestar::{
    BoxFuture, Error, Snapshot, Watch,
    discovery::resync::{self, Follow, Interrupted, Listing, Record, Source, Update},
};

use super::Shared;
use crate::{
    form::Form,
    wire::{Code, Fetched, STATUS_UP},
};

/// Time allowed for a poll on top of the request timeout: the server holds
/// a poll 30 s when nothing changes.
const POLL_HOLD: Duration = Duration::from_secs(35);

/// discovery's requests for one application.
#[derive(Debug)]
struct App {
    shared: Arc<Shared>,
    service: String,
}

/// Long polls of one application on one node.
struct Poll {
    shared: Arc<Shared>,
    service: String,
    latest: i64,
    /// The node the timestamp came from.
    node: usize,
    /// Whether the node has the application. A node deletes an application
    /// whose last instance left; `poll` then answers `-404` at once, and
    /// `polls` holds until the application is back.
    known: bool,
    /// What the last update showed: hostname -> (set down, dirty
    /// timestamp). `None` until this follow yielded one.
    shown: Option<HashMap<String, (bool, i64)>>,
}

/// What one long poll learnt.
enum Polled {
    Changed(Fetched),
    NotModified,
    Gone,
}

/// Fetches `service` and starts following it.
pub(super) async fn start(shared: Arc<Shared>, service: String) -> Result<Watch, Error> {
    resync::watch(&service.clone(), App::new(shared, service)).await
}

/// One snapshot of `service`. An application the registry does not know is
/// empty.
pub(super) async fn get(shared: &Arc<Shared>, service: &str) -> Result<Snapshot, Error> {
    resync::get(service, &App::new(shared.clone(), service.to_string())).await
}

// === impl App ===

impl App {
    fn new(shared: Arc<Shared>, service: String) -> Self {
        Self { shared, service }
    }
}

impl Source for App {
    fn list(&self) -> BoxFuture<'_, Result<Listing, Error>> {
        Box::pin(async move {
            Ok(match fetch(&self.shared, &self.service).await? {
                None => Listing::new(0, Vec::new()),
                Some(fetched) => listing(&fetched),
            })
        })
    }

    fn follow(&self, after: u64) -> BoxFuture<'_, Result<Box<dyn Follow>, Error>> {
        let poll = Poll {
            shared: self.shared.clone(),
            service: self.service.clone(),
            latest: i64::try_from(after).unwrap_or(i64::MAX),
            node: self.shared.nodes.current(),
            known: true,
            shown: None,
        };
        Box::pin(async move { Ok(Box::new(poll) as Box<dyn Follow>) })
    }
}

/// Every instance of `service` (status mask 3: up and down), or `None` if
/// the registry has no such application.
pub(super) async fn fetch(shared: &Shared, service: &str) -> Result<Option<Fetched>, Error> {
    let query = Form::new()
        .pair("appid", service)
        .pair("env", &shared.config.env)
        .pair("status", "3")
        .finish();
    let reply = shared.get(&format!("/discovery/fetch?{query}")).await?;
    if reply.code() == Some(Code::NotFound) {
        return Ok(None);
    }
    shared.data(reply).map(Some)
}

/// Every instance, keyed by hostname, at the application's timestamp.
fn listing(fetched: &Fetched) -> Listing {
    let revision = u64::try_from(fetched.latest_timestamp).unwrap_or_default();
    Listing::new(revision, records(fetched))
}

/// Every instance, keyed by hostname. One an operator set down (status 2)
/// stays, marked `status=down` ([`crate::wire::Instance::to_lodestar`]): `watch`
/// and the dashboard show it, and no lodestar client sends it new calls.
fn records(fetched: &Fetched) -> Vec<Record> {
    fetched
        .instances
        .values()
        .flatten()
        .map(|record| {
            let version = u64::try_from(record.dirty_timestamp).unwrap_or_default();
            Record::new(&record.hostname, version, record.to_lodestar())
        })
        .collect()
}

// === impl Poll ===

impl Follow for Poll {
    fn next(&mut self) -> BoxFuture<'_, Result<Update, Interrupted>> {
        Box::pin(async move {
            loop {
                if self.shared.nodes.current() != self.node {
                    return Err(Interrupted::Gap("moved to another registry node".into()));
                }
                let polled = if self.known {
                    self.poll().await
                } else {
                    self.poll_absent().await
                };
                // A request fails over to the next node by itself: an answer
                // from another node speaks of its own timestamps, and a
                // `-404` there may only mean it has not had the application
                // replicated yet. Fetch from the new node instead.
                if self.shared.nodes.current() != self.node {
                    return Err(Interrupted::Gap("moved to another registry node".into()));
                }
                match polled.map_err(Interrupted::Lost)? {
                    Polled::Changed(fetched) => {
                        self.known = true;
                        self.latest = fetched.latest_timestamp;
                        return self.with_down(Some(fetched)).await;
                    }
                    Polled::NotModified => {}
                    Polled::Gone => {
                        self.known = false;
                        return self.with_down(None).await;
                    }
                }
            }
        })
    }
}

impl Poll {
    /// Polls answer up instances only (what discovery's clients see); the
    /// snapshot keeps those set down too. So when an instance the last
    /// update showed is missing from the answer (it left, or was set down),
    /// the last update showed one down (it may have come back up), or the
    /// answer shows no change among up instances (so the change is a
    /// hidden one: an instance that joined and was set down before the
    /// answer), the whole application is fetched again; a change among up
    /// instances only
    /// (a join, an update) is taken from the poll's answer as it is. The
    /// fetch is at least as new as the poll's answer; the poll's timestamp
    /// stays the one to poll from, so nothing after it is missed. (An
    /// application whose every instance is down is answered by `poll` as an
    /// empty view, and fetched here.)
    async fn with_down(&mut self, polled: Option<Fetched>) -> Result<Update, Interrupted> {
        let up: HashMap<&str, i64> = polled
            .iter()
            .flat_map(|f| f.instances.values().flatten())
            .map(|record| (record.hostname.as_str(), record.dirty_timestamp))
            .collect();
        let fetch_all = self.shown.as_ref().is_none_or(|shown| may_hide(shown, &up));
        let fetched = if fetch_all {
            let fetched = fetch(&self.shared, &self.service)
                .await
                .map_err(Interrupted::Lost)?;
            if self.shared.nodes.current() != self.node {
                return Err(Interrupted::Gap("moved to another registry node".into()));
            }
            // The application was gone when polled, and is back: follow it
            // with `poll` from what was fetched. (`polls` would hold until
            // an instance is up, and miss it if every instance is down.)
            if let (None, Some(full)) = (&polled, &fetched) {
                self.known = true;
                self.latest = full.latest_timestamp;
            }
            fetched.or(polled)
        } else {
            polled
        };
        self.shown = Some(
            fetched
                .iter()
                .flat_map(|f| f.instances.values().flatten())
                .map(|record| {
                    let down = record.status != STATUS_UP;
                    (record.hostname.clone(), (down, record.dirty_timestamp))
                })
                .collect(),
        );
        let revision = u64::try_from(self.latest).unwrap_or_default();
        let records = fetched.as_ref().map_or_else(Vec::new, records);
        Ok(Update::Reset(Listing::new(revision, records)))
    }

    fn query(&self) -> String {
        Form::new()
            .pair("appid", &self.service)
            .pair("env", &self.shared.config.env)
            .pair("latest_timestamp", &self.latest.to_string())
            .finish()
    }

    /// One long poll of an application the node has: `poll` answers the
    /// application's instances when it changed, `-404` when it was deleted
    /// (its last instance left).
    async fn poll(&self) -> Result<Polled, Error> {
        let path = format!("/discovery/poll?{}", self.query());
        let timeout = self.shared.config.request_timeout + POLL_HOLD;
        let reply = self.shared.nodes.get(&path, timeout).await?;
        match reply.code() {
            Some(Code::NotModified) => Ok(Polled::NotModified),
            Some(Code::NotFound) => Ok(Polled::Gone),
            _ => self.shared.data(reply).map(Polled::Changed),
        }
    }

    /// One long poll of an application the node does not have: `polls`
    /// holds until it has an instance up again.
    async fn poll_absent(&self) -> Result<Polled, Error> {
        let path = format!("/discovery/polls?{}", self.query());
        let timeout = self.shared.config.request_timeout + POLL_HOLD;
        let reply = self.shared.nodes.get(&path, timeout).await?;
        if reply.code() == Some(Code::NotModified) {
            return Ok(Polled::NotModified);
        }
        let mut changed: BTreeMap<String, Fetched> = self.shared.data(reply)?;
        // An answer without the application would make the next poll return
        // at once again: treat it as an error, so the driver backs off.
        changed
            .remove(&self.service)
            .map(Polled::Changed)
            .ok_or_else(|| Error::Request {
                registry: self.shared.config.nodes.join(","),
                source: format!("poll answered without application {:?}", self.service).into(),
            })
    }
}

/// Whether a poll's answer (`up`: hostname -> dirty timestamp of the up
/// instances it lists) may hide a change from the last update (`shown`):
/// see [`Poll::with_down`].
fn may_hide(shown: &HashMap<String, (bool, i64)>, up: &HashMap<&str, i64>) -> bool {
    let hidden = shown
        .iter()
        .any(|(id, &(down, _))| down || !up.contains_key(id.as_str()));
    // The application changed, yet no up instance did: the change is one
    // the poll does not show (an instance that joined and was set down
    // before the poll was answered).
    let unseen = up
        .iter()
        .all(|(id, dirty)| shown.get(*id).is_some_and(|&(_, d)| d == *dirty));
    hidden || unseen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(entries: &[(&str, bool, i64)]) -> HashMap<String, (bool, i64)> {
        entries
            .iter()
            .map(|&(id, down, dirty)| (id.to_string(), (down, dirty)))
            .collect()
    }

    #[test]
    fn a_join_or_an_update_among_up_instances_is_taken_as_polled() {
        let last = shown(&[("a", false, 1)]);
        assert!(!may_hide(&last, &HashMap::from([("a", 1), ("b", 2)])));
        assert!(!may_hide(&last, &HashMap::from([("a", 3)])));
    }

    #[test]
    fn a_missing_or_down_instance_is_fetched() {
        let last = shown(&[("a", false, 1), ("b", false, 1)]);
        assert!(may_hide(&last, &HashMap::from([("a", 1), ("c", 2)])));
        let last = shown(&[("a", false, 1), ("b", true, 1)]);
        assert!(may_hide(&last, &HashMap::from([("a", 1), ("b", 2)])));
    }

    #[test]
    fn a_change_the_answer_does_not_show_is_fetched() {
        // An instance joined and was set down before the poll was
        // answered: the answer lists only what was shown already...
        let last = shown(&[("a", false, 1)]);
        assert!(may_hide(&last, &HashMap::from([("a", 1)])));
        // ...or nothing at all, the application's only instance being down.
        assert!(may_hide(&shown(&[]), &HashMap::new()));
    }
}
