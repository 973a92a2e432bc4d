//! The event feed: joins, leaves, status and weight changes, turned from
//! two snapshots' [`Change`]s and kept in a bounded ring.

use std::collections::VecDeque;

use lodestar::{Change, Instance};
use serde::Serialize;

/// What happened to an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    /// It appeared.
    Join,
    /// It disappeared.
    Leave,
    /// An operator took it out of traffic.
    Down,
    /// It is back in traffic.
    Up,
    /// Its weight changed.
    Weight,
    /// Something else in its record changed.
    Update,
}

/// One entry of the feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Event {
    /// Strictly increasing within a dashboard: the SSE event id.
    pub(crate) seq: u64,
    /// When the dashboard saw it, in milliseconds since the Unix epoch.
    pub(crate) at_ms: u64,
    pub(crate) service: String,
    pub(crate) id: String,
    pub(crate) kind: Kind,
    /// A short human description ("weight 100 -> 20").
    pub(crate) detail: String,
}

/// The last events, oldest first, at most `max`.
#[derive(Debug)]
pub(crate) struct Ring {
    events: VecDeque<Event>,
    max: usize,
    next_seq: u64,
}

// === impl Ring ===

impl Ring {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            events: VecDeque::new(),
            max: max.max(1),
            next_seq: 1,
        }
    }

    /// Records an event, numbering it; the recorded event.
    pub(crate) fn push(&mut self, at_ms: u64, draft: Draft) -> Event {
        let event = Event {
            seq: self.next_seq,
            at_ms,
            service: draft.service,
            id: draft.id,
            kind: draft.kind,
            detail: draft.detail,
        };
        self.next_seq += 1;
        if self.events.len() == self.max {
            self.events.pop_front();
        }
        self.events.push_back(event.clone());
        event
    }

    /// The events kept, oldest first.
    pub(crate) fn all(&self) -> Vec<Event> {
        self.events.iter().cloned().collect()
    }
}

/// An event before it gets its number and time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Draft {
    pub(crate) service: String,
    pub(crate) id: String,
    pub(crate) kind: Kind,
    pub(crate) detail: String,
}

/// The events of one change. `before` is the instance's previous record,
/// for updates.
pub(crate) fn describe(change: &Change, before: Option<&Instance>) -> Draft {
    let instance = change.instance();
    let (kind, detail) = match (change, before) {
        (Change::Add(i), _) => (Kind::Join, summary(i)),
        (Change::Remove(_), _) => (Kind::Leave, String::new()),
        (Change::Update(i), Some(old)) => updated(old, i),
        (Change::Update(i), None) => (Kind::Update, summary(i)),
    };
    Draft {
        service: instance.service.clone(),
        id: instance.id.clone(),
        kind,
        detail,
    }
}

fn updated(old: &Instance, new: &Instance) -> (Kind, String) {
    if old.is_down() != new.is_down() {
        let kind = if new.is_down() { Kind::Down } else { Kind::Up };
        return (kind, format!("status {}", status(new)));
    }
    let weight = |i: &Instance| i.metadata.get(lodestar::instance::WEIGHT).cloned();
    if weight(old) != weight(new) {
        let show = |w: Option<String>| w.unwrap_or_else(|| "default".to_string());
        return (
            Kind::Weight,
            format!("weight {} -> {}", show(weight(old)), show(weight(new))),
        );
    }
    (Kind::Update, summary(new))
}

/// `up` or `down`.
pub(crate) fn status(instance: &Instance) -> &'static str {
    if instance.is_down() { "down" } else { "up" }
}

fn summary(instance: &Instance) -> String {
    let endpoints: Vec<String> = instance.endpoints.iter().map(|e| e.to_string()).collect();
    let version = if instance.version.is_empty() {
        String::new()
    } else {
        format!("{} ", instance.version)
    };
    format!("{version}{}", endpoints.join(" "))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn inst(id: &str) -> Instance {
        Instance::new("s", id)
            .with_version("v1")
            .with_endpoint("grpc://127.0.0.1:1".parse().unwrap())
    }

    #[test]
    fn changes_become_events() {
        let old = inst("a");
        let join = describe(&Change::Add(Arc::new(old.clone())), None);
        assert_eq!(
            (join.kind, join.detail.as_str()),
            (Kind::Join, "v1 grpc://127.0.0.1:1")
        );
        let down = old.clone().with_metadata("status", "down");
        let d = describe(&Change::Update(Arc::new(down.clone())), Some(&old));
        assert_eq!(d.kind, Kind::Down);
        let up = describe(&Change::Update(Arc::new(old.clone())), Some(&down));
        assert_eq!(up.kind, Kind::Up);
        let heavy = old.clone().with_metadata("weight", "20");
        let w = describe(&Change::Update(Arc::new(heavy)), Some(&old));
        assert_eq!(
            (w.kind, w.detail.as_str()),
            (Kind::Weight, "weight default -> 20")
        );
        let gone = describe(&Change::Remove(Arc::new(old)), None);
        assert_eq!(gone.kind, Kind::Leave);
    }

    #[test]
    fn the_ring_is_bounded_and_numbered() {
        let mut ring = Ring::new(3);
        for i in 0..5 {
            let draft = describe(&Change::Add(Arc::new(inst(&i.to_string()))), None);
            ring.push(i, draft);
        }
        let seqs: Vec<u64> = ring.all().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
    }
}
