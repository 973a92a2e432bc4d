//! Operator overrides: `<prefix>/overrides/<service>/<id>` holds the JSON of
//! an [`Override`], without a lease, so it outlives the instance's restarts
//! until cleared; the owner's record stays the owner's. Watches merge it
//! into every snapshot (see the `watch` module).
//!
//! `set` merges the change into the override in force in one transaction
//! that also checks the instance is registered and that nobody changed the
//! override meanwhile (retried when someone did): an unknown instance gets
//! nothing written.

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use lodestar::{Error, Override};

use crate::Shared;

/// Attempts of a `set` that races other writers of the same override.
const ATTEMPTS: usize = 5;

/// Merges `change` into the override of `service`/`id`; false if no such
/// instance is registered.
pub(crate) async fn set(
    shared: &Shared,
    service: &str,
    id: &str,
    change: Override,
) -> Result<bool, Error> {
    change.validate()?;
    let key = shared.layout.override_key(service, id);
    for _ in 0..ATTEMPTS {
        let Some(instance_key) = instance_key(shared, service, id).await? else {
            return Ok(false);
        };
        let current = get(shared, &key).await?;
        let (mut merged, written) = match &current {
            Some((value, revision)) => (parse(value), *revision),
            None => (Override::new(), 0),
        };
        merged.merge(change.clone());
        let value = serde_json::to_string(&merged).unwrap_or_default();
        let txn = Txn::new()
            .when(vec![
                Compare::version(instance_key.clone(), CompareOp::Greater, 0),
                Compare::mod_revision(key.clone(), CompareOp::Equal, written),
            ])
            .and_then(vec![TxnOp::put(key.clone(), value, None)]);
        let done = shared
            .call(|mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        if done.succeeded() {
            return Ok(true);
        }
    }
    Err(Error::Request {
        registry: shared.config.display_endpoints(),
        source: format!(
            "the override of {service}/{id} kept changing under {ATTEMPTS} attempts to set it"
        )
        .into(),
    })
}

/// Deletes the override of `service`/`id`; whether there was one.
pub(crate) async fn clear(shared: &Shared, service: &str, id: &str) -> Result<bool, Error> {
    let key = shared.layout.override_key(service, id);
    let deleted = shared
        .call(|mut c| {
            let key = key.clone();
            async move { c.delete(key, None).await }
        })
        .await?;
    Ok(deleted.deleted() > 0)
}

/// The key of the record of `service`/`id`, if registered. In the Go
/// layout the key holds the address, so the records are decoded.
async fn instance_key(shared: &Shared, service: &str, id: &str) -> Result<Option<String>, Error> {
    let prefix = shared.layout.service_prefix(service);
    let response = shared
        .call(|mut c| {
            let prefix = prefix.clone();
            async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })
        .await?;
    Ok(response.kvs().iter().find_map(|kv| {
        let key = kv.key_str().ok()?;
        let found = shared.layout.split_key(key) == Some((service, id))
            || shared
                .layout
                .decode(service, key, kv.value())
                .is_ok_and(|i| i.id == id);
        found.then(|| key.to_string())
    }))
}

/// The value at `key` and its mod revision.
async fn get(shared: &Shared, key: &str) -> Result<Option<(Vec<u8>, i64)>, Error> {
    let response = shared
        .call(|mut c| {
            let key = key.to_string();
            async move { c.get(key, None).await }
        })
        .await?;
    Ok(response
        .kvs()
        .first()
        .map(|kv| (kv.value().to_vec(), kv.mod_revision())))
}

/// The override in force; one that does not parse is replaced, with a
/// warning (watches skip it meanwhile).
fn parse(value: &[u8]) -> Override {
    serde_json::from_slice(value).unwrap_or_else(|error| {
        tracing::warn!(%error, "replacing an override that does not parse");
        Override::new()
    })
}
