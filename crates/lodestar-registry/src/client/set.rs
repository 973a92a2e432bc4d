//! Operator overrides over discovery's `set`: status 2 takes an instance out
//! of traffic (discovery's own clients honour it too), 1 puts it back;
//! weight and metadata entries are merged into the instance's metadata.
//!
//! discovery keeps one record per instance, so an override is written into
//! it, and the keys it replaced are remembered beside it under
//! [`OVERRIDE_KEY`] (`{"set": Override, "owner": {key: value or null}}`),
//! so that `clear` can put the owner's values back: status up, each
//! replaced metadata value restored (discovery cannot delete a metadata key:
//! a key the owner did not have is left empty, and a weight it did not give
//! becomes the default weight). An override lasts as long as the record: an
//! instance the registry lost and that registers again (its owner
//! restarted, or it was evicted) starts without one, as in discovery.

use std::collections::BTreeMap;

use lodestar::{Error, Override, Status, instance};
use serde::{Deserialize, Serialize};

use super::Shared;
use crate::{
    form::Form,
    wire::{self, Code, OVERRIDE_KEY, STATUS_UP, STATUS_WAITING},
};

/// What [`OVERRIDE_KEY`] holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Kept {
    /// The override in force.
    set: Override,
    /// The owner's values of the metadata keys the override replaced
    /// (`None`: the owner had no such key).
    owner: BTreeMap<String, Option<String>>,
}

/// Merges `change` into the override of `service`/`id`; false if the
/// registry has no such instance (nothing is written then).
pub(super) async fn set(
    shared: &Shared,
    service: &str,
    id: &str,
    change: Override,
) -> Result<bool, Error> {
    change.validate()?;
    let Some(record) = find(shared, service, id).await? else {
        return Ok(false);
    };
    let mut kept = kept(&record);
    let mut metadata = change.metadata.clone();
    if let Some(weight) = change.weight {
        metadata.insert(instance::WEIGHT.into(), weight.to_string());
    }
    for key in metadata.keys() {
        if !kept.owner.contains_key(key) {
            kept.owner
                .insert(key.clone(), record.metadata.get(key).cloned());
        }
    }
    let status = change.status;
    kept.set.merge(change);
    metadata.insert(OVERRIDE_KEY.into(), to_json(&kept));
    let status = status.map(|s| match s {
        Status::Up => STATUS_UP,
        Status::Down => STATUS_WAITING,
    });
    write(shared, service, id, status, &metadata).await
}

/// Puts the owner's values back; false if no override was in force.
pub(super) async fn clear(shared: &Shared, service: &str, id: &str) -> Result<bool, Error> {
    let Some(record) = find(shared, service, id).await? else {
        return Ok(false);
    };
    if record
        .metadata
        .get(OVERRIDE_KEY)
        .is_none_or(String::is_empty)
    {
        return Ok(false);
    }
    let kept = kept(&record);
    let mut metadata: BTreeMap<String, String> = kept
        .owner
        .into_iter()
        .map(|(key, value)| {
            let value = value.unwrap_or_else(|| match key.as_str() {
                instance::WEIGHT => instance::DEFAULT_WEIGHT.to_string(),
                _ => String::new(),
            });
            (key, value)
        })
        .collect();
    metadata.insert(OVERRIDE_KEY.into(), String::new());
    write(shared, service, id, Some(STATUS_UP), &metadata).await
}

/// The record of `service`/`id`, whatever its status.
async fn find(shared: &Shared, service: &str, id: &str) -> Result<Option<wire::Instance>, Error> {
    let Some(fetched) = super::watch::fetch(shared, service).await? else {
        return Ok(None);
    };
    Ok(fetched
        .instances
        .into_values()
        .flatten()
        .find(|record| record.hostname == id))
}

/// Sends `set`; false if the instance left meanwhile (discovery answers an
/// unknown hostname `-400`, so that is checked by fetching again).
async fn write(
    shared: &Shared,
    service: &str,
    id: &str,
    status: Option<u32>,
    metadata: &BTreeMap<String, String>,
) -> Result<bool, Error> {
    let mut form = Form::new()
        .pair("appid", service)
        .pair("env", &shared.config.env)
        .pair("hostname", id);
    if let Some(status) = status {
        form = form.pair("status", &status.to_string());
    }
    form = form.pair("metadata", &to_json(metadata));
    let reply = shared.post("/discovery/set", form.finish()).await?;
    match reply.code() {
        Some(Code::Ok) => Ok(true),
        _ if find(shared, service, id).await?.is_none() => Ok(false),
        _ => Err(shared.refused(&reply)),
    }
}

/// The bookkeeping of a record; a missing or unreadable one is none.
fn kept(record: &wire::Instance) -> Kept {
    record
        .metadata
        .get(OVERRIDE_KEY)
        .filter(|v| !v.is_empty())
        .and_then(|v| match serde_json::from_str(v) {
            Ok(kept) => Some(kept),
            Err(error) => {
                tracing::warn!(
                    service = %record.appid, id = %record.hostname, %error,
                    "ignoring unreadable override bookkeeping"
                );
                None
            }
        })
        .unwrap_or_default()
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Maps of strings and an Override cannot fail to serialize.
    serde_json::to_string(value).unwrap_or_default()
}
