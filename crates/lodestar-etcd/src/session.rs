//! The lease session behind every registration of one [`EtcdRegistry`].
//!
//! One task per registry owns one lease, every record registered through it
//! and the keep-alive stream, the way etcd's own `concurrency.Session` does:
//! registering a second instance is then a single put, and a process with
//! many instances costs etcd one lease.
//!
//! Keeping the lease alive is the core [`Driver`]'s loop; this module
//! supplies etcd's requests ([`Records`] is its [`Backend`]): establishing
//! grants a lease and puts every record under it, keeping alive sends on the
//! lease's keep-alive stream, resuming opens a new stream on the same lease,
//! and etcd saying the lease is gone (etcd restarted empty, a cut longer
//! than the TTL) makes the driver establish again. It never gives up:
//! go-kratos' etcd registry stops after five tries, so one etcd restart
//! silently drops a service (go-kratos issue #3883); etcd-client does not
//! resume keep-alives by itself (its issues #17, #54).
//!
//! The task serves the registry's commands in between, selecting on them
//! and on [`Driver::ready`]. It ends, revoking its lease, when the registry
//! and every handle are dropped; it revokes the lease and stops keeping
//! alive whenever its last record is deregistered.
//!
//! [`EtcdRegistry`]: crate::EtcdRegistry

use std::{collections::BTreeMap, sync::atomic::Ordering, time::Duration};

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp};
use lodestar::{
    Error, ErrorChain, RegistrationState,
    backoff::Backoff,
    registry::keepalive::{Backend, Driver, Failure},
};
use tokio::{
    sync::{mpsc, oneshot, watch},
    time::{Instant, sleep_until},
};
use tracing::Instrument;

use crate::{Shared, is_lease_gone};

/// Puts per transaction when re-registering many records (etcd's default
/// `--max-txn-ops` is 128).
const TXN_CHUNK: usize = 100;

/// What handles and the registry ask of the session task.
#[derive(Debug)]
pub(crate) enum Command {
    Register {
        key: String,
        value: String,
        owner: u64,
        state: watch::Sender<RegistrationState>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// A record the caller already put under `lease` (the fast path).
    Adopt {
        key: String,
        value: String,
        owner: u64,
        state: watch::Sender<RegistrationState>,
        lease: i64,
    },
    Deregister {
        key: String,
        owner: u64,
        reply: Option<oneshot::Sender<Result<(), Error>>>,
    },
}

pub(crate) struct Session {
    rx: mpsc::UnboundedReceiver<Command>,
    driver: Driver<Records>,
}

/// Every record the session keeps under its lease: the driver's backend.
struct Records {
    shared: Shared,
    records: BTreeMap<String, Record>,
}

/// One record; its handle is served by the driver as `owner`.
struct Record {
    value: String,
    owner: u64,
}

/// A lease etcd granted, with its keep-alive stream.
struct Lease {
    id: i64,
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
    /// When etcd will expire the lease if no keep-alive gets through.
    expires: Instant,
}

// === impl Session ===

impl Session {
    pub(crate) fn spawn(shared: Shared) -> mpsc::UnboundedSender<Command> {
        let (tx, rx) = mpsc::unbounded_channel();
        let ttl = shared.config.ttl;
        let span =
            tracing::info_span!("etcd_lease", endpoints = %shared.config.display_endpoints());
        let records = Records {
            shared,
            records: BTreeMap::new(),
        };
        let driver = Driver::new(records, ttl / 3, Backoff::registration(ttl));
        tokio::spawn(Session { rx, driver }.run().instrument(span));
        tx
    }

    async fn run(mut self) {
        loop {
            tokio::select! {
                command = self.rx.recv() => match command {
                    Some(command) => self.handle(command).await,
                    None => break,
                },
                ready = self.driver.ready() => self.driver.advance(ready).await,
            }
        }
        if let Err(e) = self.revoke().await {
            tracing::warn!(error = %ErrorChain(&e), "could not revoke the etcd lease on shutdown; it expires after its TTL");
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Register {
                key,
                value,
                owner,
                state,
                reply,
            } => {
                let result = self.register(key, value, owner, state).await;
                let _ = reply.send(result);
            }
            Command::Adopt {
                key,
                value,
                owner,
                state,
                lease,
            } => self.adopt(key, value, owner, state, lease).await,
            Command::Deregister { key, owner, reply } => {
                let result = self.deregister(&key, owner).await;
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
        }
    }

    async fn register(
        &mut self,
        key: String,
        value: String,
        owner: u64,
        state: watch::Sender<RegistrationState>,
    ) -> Result<(), Error> {
        if let Some(id) = self.driver.live().map(|lease| lease.id) {
            match self.records().put(&key, &value, id).await {
                Ok(()) => {
                    self.insert(key, value, owner, state);
                    return Ok(());
                }
                Err(Failure::Transient(e)) => return Err(e),
                // Establishing below puts every record back.
                Err(gone @ Failure::Gone(_)) => self.lose(gone),
            }
        }
        // Nothing alive: establishing a lease puts every record, so add
        // this one first and take it back if that fails.
        let previous = self
            .records_mut()
            .insert(key.clone(), Record { value, owner });
        self.driver.serve(owner, state);
        if let Err(e) = self.driver.establish().await {
            self.take_back(&key, owner, previous);
            return Err(e);
        }
        if let Some(old) = previous {
            // The same key registered again: the older handle no longer owns it.
            self.driver.release(old.owner);
        }
        Ok(())
    }

    /// Undoes adding a record whose registration failed.
    fn take_back(&mut self, key: &str, owner: u64, previous: Option<Record>) {
        self.driver.release(owner);
        match previous {
            Some(old) => self.records_mut().insert(key.to_string(), old),
            None => self.records_mut().remove(key),
        };
        if self.records().records.is_empty() {
            // Nothing left to retry for; no lease was granted.
            self.driver.stop();
        }
    }

    /// Takes over a record put by the caller under `lease`, making sure it
    /// ends up under the lease that is kept alive.
    async fn adopt(
        &mut self,
        key: String,
        value: String,
        owner: u64,
        state: watch::Sender<RegistrationState>,
        lease: i64,
    ) {
        self.insert(key.clone(), value.clone(), owner, state);
        if self
            .driver
            .lease()
            .is_some_and(|current| current.id == lease)
        {
            return;
        }
        if self.driver.is_idle() {
            // The lease was revoked meanwhile; a failure is retried.
            let _ = self.driver.establish().await;
            return;
        }
        let stray = match self.driver.live().map(|current| current.id) {
            // The lease changed since the caller read it: put it again.
            Some(id) => match self.records().put(&key, &value, id).await {
                Ok(()) => return,
                Err(failure) => failure.into_error(),
            },
            None => text_error(self.shared(), "the record was put under another lease"),
        };
        // The lease kept alive does not hold this record, so resuming it
        // would not bring the record back: establish afresh, which puts
        // every record.
        self.lose(Failure::Gone(stray));
    }

    fn insert(
        &mut self,
        key: String,
        value: String,
        owner: u64,
        state: watch::Sender<RegistrationState>,
    ) {
        let replaced = self.records_mut().insert(key, Record { value, owner });
        self.driver.serve(owner, state);
        if let Some(old) = replaced {
            // The same key registered again: the older handle no longer owns it.
            self.driver.release(old.owner);
        }
    }

    async fn deregister(&mut self, key: &str, owner: u64) -> Result<(), Error> {
        if self
            .records()
            .records
            .get(key)
            .is_none_or(|r| r.owner != owner)
        {
            return Ok(());
        }
        self.records_mut().remove(key);
        self.driver.release(owner);
        if self.records().records.is_empty() {
            // Revoking the lease deletes the key with it, in one request.
            return self.revoke().await;
        }
        let key = key.to_string();
        self.shared()
            .call(|mut c| {
                let key = key.clone();
                async move { c.delete(key, None).await }
            })
            .await
            .map(drop)
    }

    /// Stops keeping alive and revokes the lease (deleting every key under
    /// it).
    async fn revoke(&mut self) -> Result<(), Error> {
        let lease = self.driver.stop();
        self.shared().live_lease.store(0, Ordering::Release);
        let Some(Lease { id, .. }) = lease else {
            return Ok(());
        };
        match self
            .shared()
            .call(|mut c| async move { c.lease_revoke(id).await })
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_lease_gone(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The live lease failed outside the driver.
    fn lose(&mut self, failure: Failure) {
        self.shared().live_lease.store(0, Ordering::Release);
        self.driver.fail(failure);
    }

    fn records(&self) -> &Records {
        self.driver.backend()
    }

    fn records_mut(&mut self) -> &mut BTreeMap<String, Record> {
        &mut self.driver.backend_mut().records
    }

    fn shared(&self) -> &Shared {
        &self.driver.backend().shared
    }
}

// === impl Records ===

impl Records {
    async fn put_all(&self, lease: i64) -> Result<(), Error> {
        let puts: Vec<TxnOp> = self
            .records
            .iter()
            .map(|(key, r)| TxnOp::put(key.as_str(), r.value.as_str(), Some(lease_opt(lease))))
            .collect();
        for chunk in puts.chunks(TXN_CHUNK) {
            self.shared
                .call(|mut c| {
                    let txn = Txn::new().and_then(chunk.to_vec());
                    async move { c.txn(txn).await }
                })
                .await?;
        }
        Ok(())
    }

    async fn put(&self, key: &str, value: &str, lease: i64) -> Result<(), Failure> {
        let put = self.shared.call(|mut c| {
            let (key, value) = (key.to_string(), value.to_string());
            async move { c.put(key, value, Some(lease_opt(lease))).await }
        });
        put.await.map(drop).map_err(failure)
    }

    /// Opens a keep-alive stream on lease `id`; etcd-client waits for the
    /// first answer, so a missing lease fails here.
    async fn open(&self, id: i64) -> Result<(LeaseKeeper, LeaseKeepAliveStream), Failure> {
        let keep_alive = self
            .shared
            .call(|mut c| async move { c.lease_keep_alive(id).await });
        keep_alive.await.map_err(failure)
    }

    /// A lease (re)opened: from now on etcd expires it a TTL after the last
    /// keep-alive, and registering can put under it directly.
    fn live(&self, lease: &mut Lease) {
        lease.expires = Instant::now() + self.shared.config.ttl;
        self.shared.live_lease.store(lease.id, Ordering::Release);
    }

    fn lost(&self, failure: Failure) -> Failure {
        self.shared.live_lease.store(0, Ordering::Release);
        failure
    }
}

impl Backend for Records {
    type Lease = Lease;

    /// Grants a lease, puts every record under it and opens its keep-alive
    /// stream. A lease granted by a failed attempt is left to expire: its
    /// records may not all be under it, so it is not worth resuming.
    async fn establish(&mut self) -> Result<Lease, Failure> {
        let ttl = ttl_secs(self.shared.config.ttl);
        let grant = self
            .shared
            .call(|mut c| async move { c.lease_grant(ttl, None).await });
        let id = grant.await.map_err(failure)?.id();
        self.put_all(id).await.map_err(failure)?;
        let (keeper, stream) = self.open(id).await?;
        let mut lease = Lease {
            id,
            keeper,
            stream,
            expires: Instant::now(),
        };
        self.live(&mut lease);
        Ok(lease)
    }

    async fn keep_alive(&mut self, lease: &mut Lease) -> Result<(), Failure> {
        // Only sends on the stream; `broken` reads the answers.
        match lease.keeper.keep_alive().await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.lost(Failure::Transient(self.shared.request_error(e)))),
        }
    }

    async fn resume(&mut self, lease: &mut Lease) -> Result<(), Failure> {
        (lease.keeper, lease.stream) = self.open(lease.id).await?;
        self.live(lease);
        Ok(())
    }

    async fn broken(&mut self, lease: &mut Lease) -> Failure {
        let failure = answers(&self.shared, lease).await;
        self.lost(failure)
    }
}

/// Reads keep-alive answers, pushing the expiry back; resolves when they
/// say the lease is gone or stop coming. Cancel-safe.
async fn answers(shared: &Shared, lease: &mut Lease) -> Failure {
    loop {
        tokio::select! {
            message = lease.stream.message() => match message {
                Ok(Some(answer)) if answer.ttl() > 0 => {
                    let ttl = Duration::from_secs(answer.ttl().unsigned_abs());
                    lease.expires = Instant::now() + ttl;
                }
                // etcd answers a keep-alive of a lease it does not have
                // with TTL 0.
                Ok(Some(_)) => {
                    return Failure::Gone(text_error(shared, "the lease expired or etcd lost it"));
                }
                Ok(None) => {
                    return Failure::Transient(text_error(shared, "keep-alive stream ended"));
                }
                Err(e) => return Failure::Transient(shared.request_error(e)),
            },
            () = sleep_until(lease.expires) => {
                return Failure::Transient(Error::Timeout {
                    registry: shared.config.display_endpoints(),
                    timeout: shared.config.ttl,
                });
            }
        }
    }
}

/// A failure etcd did not word itself.
fn text_error(shared: &Shared, text: &'static str) -> Error {
    Error::Request {
        registry: shared.config.display_endpoints(),
        source: text.into(),
    }
}

/// Sorts an etcd error into what the driver does about it.
fn failure(e: Error) -> Failure {
    if is_lease_gone(&e) {
        Failure::Gone(e)
    } else {
        Failure::Transient(e)
    }
}

fn lease_opt(lease: i64) -> PutOptions {
    PutOptions::new().with_lease(lease)
}

fn ttl_secs(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use lodestar_test_support::EtcdNode;

    use super::*;
    use crate::EtcdRegistry;

    /// A lease id etcd never granted.
    const NO_SUCH_LEASE: i64 = 0x1ea5e;

    async fn records(etcd: &EtcdNode) -> Records {
        let registry = EtcdRegistry::connect(etcd.url().parse().unwrap())
            .await
            .unwrap();
        Records {
            shared: registry.shared,
            records: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn etcd_saying_the_lease_is_gone_is_told_apart_by_its_code() {
        let etcd = EtcdNode::start().await;
        let records = records(&etcd).await;

        let put = records.put("/lodestar/k", "v", NO_SUCH_LEASE).await;
        assert!(matches!(put, Err(Failure::Gone(_))), "{put:?}");
        let opened = records.open(NO_SUCH_LEASE).await;
        assert!(
            matches!(opened, Err(Failure::Gone(_))),
            "a keep-alive stream"
        );
        // Another refusal is not a lost lease.
        let empty_key = records.put("", "v", 0).await;
        assert!(
            matches!(empty_key, Err(Failure::Transient(_))),
            "{empty_key:?}"
        );
        // The message stays readable.
        let Err(Failure::Gone(e)) = put else {
            unreachable!()
        };
        assert!(
            ErrorChain(&e)
                .to_string()
                .ends_with("etcdserver: requested lease not found"),
            "{e:?}"
        );
    }
}
