//! Following one service: etcd's requests for the core's resync driver
//! ([`lodestar::discovery::resync`]), which owns the loop.
//!
//! - [`Source::list`] is a prefix get: every record and the revision R.
//! - [`Source::follow`] is a watch from R+1 with previous values and progress
//!   notifications; each response becomes one update, so a change costs what
//!   changed.
//! - A watch cancelled for compaction, or an etcd whose revision is lower
//!   than the one followed (it lost its data), is a gap: the driver lists
//!   again. A broken stream is resumed from the last revision.
//! - Operator overrides (`<prefix>/overrides/<service>/<id>`) are listed at
//!   the same revision as the records and followed by a second watch on the
//!   same stream, so they reach the driver in the same revision order; the
//!   driver merges each into its instance ([`Record::overriding`]). (A
//!   stream resumes from the last header revision seen; both watchers start
//!   from the same revision and catch up together, but a break while one
//!   still catches up a backlog could skip that watcher's backlog until the
//!   next listing.) An
//!   override that does not parse is skipped, counted and warned about like
//!   a bad record.

use etcd_client::{EventType, GetOptions, KeyValue, WatchOptions, WatchResponse, WatchStream};
use lodestar::{
    BoxFuture, Error, Snapshot, Watch,
    discovery::resync::{self, Delta, Follow, Interrupted, Listing, Record, Source, Update},
};

use crate::Shared;

/// etcd's requests for one service.
struct Service {
    shared: Shared,
    service: String,
    prefix: String,
    overrides: String,
}

/// An open etcd watch of one service: two watchers on one stream, the
/// records' and the overrides'.
struct Stream {
    service: String,
    shared: Shared,
    stream: WatchStream,
    /// The revision the watch started after.
    after: u64,
}

/// Lists `service` and starts following it.
pub(crate) async fn start(shared: Shared, service: &str) -> Result<Watch, Error> {
    resync::watch(service, Service::new(shared, service)).await
}

/// One snapshot of `service`.
pub(crate) async fn get(shared: &Shared, service: &str) -> Result<Snapshot, Error> {
    resync::get(service, &Service::new(shared.clone(), service)).await
}

// === impl Service ===

impl Service {
    /// Up to [`PAGE`] keys of the service from `from` on, at `revision` (0:
    /// the current one).
    async fn page(
        &self,
        prefix: &str,
        from: &[u8],
        revision: i64,
    ) -> Result<etcd_client::GetResponse, Error> {
        let end = prefix_end(prefix);
        let options = GetOptions::new()
            .with_range(end)
            .with_limit(PAGE)
            .with_revision(revision);
        self.shared
            .call(|mut c| {
                let (from, options) = (from.to_vec(), options.clone());
                async move { c.get(from, Some(options)).await }
            })
            .await
    }
}

/// The end of the range of keys that start with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("service", &self.service)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Service {
    fn new(shared: Shared, service: &str) -> Self {
        Self {
            prefix: shared.layout.service_prefix(service),
            overrides: shared.layout.overrides_prefix(service),
            service: service.to_string(),
            shared,
        }
    }
}

impl Source for Service {
    fn list(&self) -> BoxFuture<'_, Result<Listing, Error>> {
        Box::pin(async move {
            let (mut records, mut revision) = (Vec::new(), 0);
            // Overrides second, at the records' revision: one consistent view.
            for prefix in [&self.prefix, &self.overrides] {
                let mut from = prefix.as_bytes().to_vec();
                loop {
                    let page = self.page(prefix, &from, revision).await?;
                    // The first page fixes the revision of the whole listing;
                    // the header of a read at a given revision says etcd's
                    // revision now, which may be later.
                    if revision == 0 {
                        revision = page.header().map_or(0, |h| h.revision());
                    }
                    let kvs = page.kvs();
                    records.extend(
                        kvs.iter()
                            .filter_map(|kv| record(&self.shared, &self.service, kv)),
                    );
                    match kvs.last() {
                        // The next page starts just after the last key, at
                        // the same revision, so the pages make one view.
                        Some(last) if page.more() => from = next_key(last.key()),
                        _ => break,
                    }
                }
            }
            Ok(Listing::new(revision_u64(revision), records))
        })
    }

    fn follow(&self, after: u64) -> BoxFuture<'_, Result<Box<dyn Follow>, Error>> {
        Box::pin(async move {
            let start = i64::try_from(after).unwrap_or(i64::MAX).saturating_add(1);
            let options = WatchOptions::new()
                .with_prefix()
                .with_prev_key()
                .with_progress_notify()
                .with_start_revision(start);
            let (prefix, overrides) = (self.prefix.clone(), self.overrides.clone());
            let mut stream = self
                .shared
                .call(|mut c| {
                    let (prefix, options) = (prefix.clone(), options.clone());
                    async move { c.watch(prefix, Some(options)).await }
                })
                .await?;
            stream
                .watch(overrides, Some(options))
                .await
                .map_err(|e| self.shared.request_error(e))?;
            Ok(Box::new(Stream {
                service: self.service.clone(),
                shared: self.shared.clone(),
                stream,
                after,
            }) as Box<dyn Follow>)
        })
    }
}

/// Keys per page when listing: a large service is read in pages, so neither
/// etcd nor the client holds one response of every record at once.
const PAGE: i64 = 1_000;

/// The key right after `key` in etcd's byte order.
fn next_key(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

/// The record of `kv`, or `None` when the key is neither an instance nor an
/// override of `service` (under a Go target, a deeper key belongs to another
/// service).
fn record(shared: &Shared, service: &str, kv: &KeyValue) -> Option<Record> {
    let Ok(key) = kv.key_str() else {
        tracing::warn!(%service, key = ?kv.key(), "skipping a non-UTF-8 key");
        return None;
    };
    let version = revision_u64(kv.mod_revision());
    if let Some((id, value)) = shared.layout.decode_override(service, key, kv.value()) {
        return Some(Record::overriding(key, version, id, value));
    }
    if shared
        .layout
        .split_key(key)
        .is_none_or(|(s, _)| s != service)
    {
        return None;
    }
    let value = shared.layout.decode(service, key, kv.value());
    Some(Record::new(key, version, value))
}

fn revision_u64(revision: i64) -> u64 {
    u64::try_from(revision).unwrap_or_default()
}

// === impl Stream ===

impl Follow for Stream {
    fn next(&mut self) -> BoxFuture<'_, Result<Update, Interrupted>> {
        Box::pin(async move {
            let response = match self.stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => return Err(broken(&self.shared, "watch stream ended".into())),
                Err(e) => return Err(broken(&self.shared, crate::concise(e))),
            };
            self.update(&response)
        })
    }
}

impl Stream {
    fn update(&self, response: &WatchResponse) -> Result<Update, Interrupted> {
        let header = response.header().map_or(0, |h| revision_u64(h.revision()));
        if response.canceled() {
            if response.compact_revision() > 0 {
                return Err(Interrupted::Gap(format!(
                    "etcd compacted past the watch (to revision {})",
                    response.compact_revision()
                )));
            }
            let reason = format!("watch canceled: {}", response.cancel_reason());
            return Err(broken(&self.shared, reason.into()));
        }
        if response.created() && header < self.after {
            return Err(Interrupted::Gap(format!(
                "etcd's revision went backwards from {} to {header} (it lost its data?)",
                self.after
            )));
        }
        let revision = header;
        let changes: Vec<Delta> = response
            .events()
            .iter()
            .filter_map(|event| {
                let kv = event.kv()?;
                match event.event_type() {
                    EventType::Put => record(&self.shared, &self.service, kv).map(Delta::Put),
                    EventType::Delete => kv.key_str().ok().map(|k| Delta::Remove(k.to_string())),
                }
            })
            .collect();
        if changes.is_empty() {
            return Ok(Update::Progress(revision));
        }
        Ok(Update::Changes { revision, changes })
    }
}

fn broken(shared: &Shared, source: lodestar::BoxError) -> Interrupted {
    Interrupted::Broken(Error::Request {
        registry: shared.config.display_endpoints(),
        source,
    })
}
