//! Writes: an operator's `set` (status, weight) or `clear` through
//! [`Registrar::set`](lodestar::Registrar::set), allowed only with
//! `--allow-writes` and the token, each one recorded in the audit list.

use std::{collections::VecDeque, net::SocketAddr, time::Duration};

use axum::http::{HeaderMap, header};
use lodestar::{Override, Status};
use serde::{Deserialize, Serialize};

use crate::state::{Shared, now_ms};

/// The bound on one write to the registry.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest operator name kept.
const MAX_WHO: usize = 64;

/// A write as the page sends it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Request {
    /// The operator's name, as typed.
    #[serde(default)]
    pub(crate) who: String,
    #[serde(default)]
    pub(crate) status: Option<Status>,
    #[serde(default)]
    pub(crate) weight: Option<u32>,
    /// Removes every override of the instance instead.
    #[serde(default)]
    pub(crate) clear: bool,
}

/// One write made through the dashboard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Entry {
    /// When (ms since the epoch).
    pub(crate) at_ms: u64,
    /// The name the operator typed.
    pub(crate) who: String,
    /// The address the request came from.
    pub(crate) remote: String,
    pub(crate) service: String,
    pub(crate) id: String,
    /// What was asked: `status down`, `weight 20`, `clear`.
    pub(crate) what: String,
    /// `ok`, `no such instance`, or the registry's error.
    pub(crate) result: String,
}

/// The last writes, newest last.
#[derive(Debug)]
pub(crate) struct Audit {
    entries: VecDeque<Entry>,
    max: usize,
}

/// Why a write was refused before reaching the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The dashboard is read-only.
    ReadOnly,
    /// No token, or the wrong one.
    Unauthorized,
    /// The request does not make sense.
    Invalid(String),
}

// === impl Audit ===

impl Audit {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            max: max.max(1),
        }
    }

    fn push(&mut self, entry: Entry) {
        if self.entries.len() == self.max {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    /// Newest first.
    pub(crate) fn newest_first(&self) -> Vec<Entry> {
        self.entries.iter().rev().cloned().collect()
    }
}

// === impl Request ===

impl Request {
    /// The override asked for, and its description for the audit list.
    fn change(&self) -> Result<(Option<Override>, String), Refused> {
        if self.clear {
            if self.status.is_some() || self.weight.is_some() {
                return Err(Refused::Invalid(
                    "clear removes every override; send it alone".into(),
                ));
            }
            return Ok((None, "clear".into()));
        }
        let mut change = Override::new();
        let mut what = Vec::new();
        if let Some(status) = self.status {
            change = change.with_status(status);
            what.push(format!("status {status}"));
        }
        if let Some(weight) = self.weight {
            if weight == 0 {
                return Err(Refused::Invalid("weight must be a positive integer".into()));
            }
            change = change.with_weight(weight);
            what.push(format!("weight {weight}"));
        }
        if change.is_empty() {
            return Err(Refused::Invalid(
                "nothing to set: give status, weight or clear".into(),
            ));
        }
        Ok((Some(change), what.join(", ")))
    }

    /// The operator's name, checked.
    fn who(&self) -> Result<String, Refused> {
        let who = self.who.trim();
        if who.is_empty() {
            return Err(Refused::Invalid("say who you are (who)".into()));
        }
        if who.chars().count() > MAX_WHO || who.chars().any(char::is_control) {
            return Err(Refused::Invalid(format!(
                "who must be at most {MAX_WHO} printable characters"
            )));
        }
        Ok(who.to_string())
    }
}

/// Whether the request may write: writes allowed and the right bearer
/// token.
pub(crate) fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), Refused> {
    if !shared.config.writable() {
        return Err(Refused::ReadOnly);
    }
    let expected = shared.config.token.as_deref().unwrap_or_default();
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if same(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(Refused::Unauthorized)
    }
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell how much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Makes an authorized write and records it; the audit entry.
pub(crate) async fn apply(
    shared: &Shared,
    remote: Option<SocketAddr>,
    service: &str,
    id: &str,
    request: &Request,
) -> Result<Entry, Refused> {
    let who = request.who()?;
    let (change, what) = request.change()?;
    let registry = &shared.registry;
    let done = match change {
        Some(change) => {
            tokio::time::timeout(WRITE_TIMEOUT, registry.set(service, id, change)).await
        }
        None => tokio::time::timeout(WRITE_TIMEOUT, registry.clear(service, id)).await,
    };
    let result = match done {
        Ok(Ok(true)) => "ok".to_string(),
        Ok(Ok(false)) => "no such instance".to_string(),
        Ok(Err(e)) => format!("failed: {}", lodestar::ErrorChain(&e)),
        Err(_) => format!("failed: the registry did not answer within {WRITE_TIMEOUT:?}"),
    };
    let entry = Entry {
        at_ms: now_ms(),
        who,
        remote: remote.map_or_else(|| "unknown".to_string(), |a| a.to_string()),
        service: service.to_string(),
        id: id.to_string(),
        what,
        result,
    };
    tracing::info!(
        who = %entry.who, remote = %entry.remote, service, id, what = %entry.what,
        result = %entry.result, "dashboard write"
    );
    shared.lock().audit.push(entry.clone());
    shared.refresh();
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> Request {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn requests_become_overrides() {
        let (change, what) = request(r#"{"who":"ann","status":"down","weight":5}"#)
            .change()
            .unwrap();
        let change = change.unwrap();
        assert_eq!(change.status, Some(Status::Down));
        assert_eq!(change.weight, Some(5));
        assert_eq!(what, "status down, weight 5");
        assert_eq!(request(r#"{"clear":true}"#).change().unwrap().1, "clear");
    }

    #[test]
    fn bad_requests_are_refused() {
        for json in [
            r#"{"who":"ann"}"#,
            r#"{"who":"ann","weight":0}"#,
            r#"{"who":"ann","clear":true,"weight":3}"#,
        ] {
            assert!(
                matches!(request(json).change(), Err(Refused::Invalid(_))),
                "{json}"
            );
        }
        assert!(request(r#"{"who":"  "}"#).who().is_err());
        assert!(request(r#"{"who":"a\nb"}"#).who().is_err());
        assert!(serde_json::from_str::<Request>(r#"{"status":"sideways"}"#).is_err());
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"ab", b"abc"));
    }
}
