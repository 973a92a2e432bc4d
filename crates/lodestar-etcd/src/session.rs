//! The lease session behind every registration of one [`EtcdRegistry`].
//!
//! One task per registry owns one lease, every record registered through it
//! and the keep-alive stream, the way etcd's own `concurrency.Session` does:
//! registering a second instance is then a single put, and a process with
//! many instances costs etcd one lease.
//!
//! The task never gives up. When the keep-alive stream ends or errors, it
//! tries to resume keep-alives on the same lease; when etcd says the lease is
//! gone (etcd restarted empty, a cut longer than the TTL), it grants a new
//! one and puts every record again, with capped, jittered backoff, for as
//! long as it takes. go-kratos' etcd registry stops after five tries, so one
//! etcd restart silently drops a service (go-kratos issue #3883);
//! etcd-client does not resume keep-alives by itself (its issues #17, #54).
//!
//! The task ends, revoking its lease, when the registry and every handle are
//! dropped; it revokes the lease and stops keeping alive whenever its last
//! record is deregistered.
//!
//! [`EtcdRegistry`]: crate::EtcdRegistry

use std::{collections::BTreeMap, sync::atomic::Ordering, time::Duration};

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp};
use lodestar::{Error, RegistrationState, backoff::Backoff};
use tokio::{
    sync::{mpsc, oneshot, watch},
    time::{Instant, sleep_until},
};

use crate::{Shared, concise, is_lease_gone};

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

struct Record {
    value: String,
    owner: u64,
    state: watch::Sender<RegistrationState>,
}

/// A lease that is being kept alive.
struct Live {
    id: i64,
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
    next_keepalive: Instant,
    /// When etcd will expire the lease if no keep-alive gets through.
    expires: Instant,
}

/// The lease, as far as the task knows.
enum Lease {
    /// No record, no lease.
    Idle,
    Live(Box<Live>),
    /// Keep-alives failed or the lease is gone; the next attempt is due at
    /// `retry_at`. `id` is the old lease, worth resuming if etcd still has it.
    Lost {
        id: Option<i64>,
        retry_at: Instant,
    },
}

pub(crate) struct Session {
    shared: Shared,
    rx: mpsc::UnboundedReceiver<Command>,
    records: BTreeMap<String, Record>,
    lease: Lease,
    backoff: Backoff,
}

/// Why keeping the lease alive stopped.
enum Failure {
    /// etcd answered that the lease does not exist.
    Gone,
    /// etcd could not be reached or the stream broke.
    Unreachable(String),
}

// === impl Session ===

impl Session {
    pub(crate) fn spawn(shared: Shared) -> mpsc::UnboundedSender<Command> {
        let (tx, rx) = mpsc::unbounded_channel();
        let backoff = Backoff::registration(shared.config.ttl);
        let session = Session {
            shared,
            rx,
            records: BTreeMap::new(),
            lease: Lease::Idle,
            backoff,
        };
        tokio::spawn(session.run());
        tx
    }

    async fn run(mut self) {
        loop {
            tokio::select! {
                command = self.rx.recv() => match command {
                    Some(command) => self.handle(command).await,
                    None => break,
                },
                event = lease_event(&mut self.lease, self.shared.config.ttl) => match event {
                    Some(failure) => self.lost(failure),
                    None => self.recover().await,
                },
            }
        }
        if let Err(e) = self.revoke().await {
            tracing::warn!(error = %error_chain(&e), "could not revoke the etcd lease on shutdown; it expires after its TTL");
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
        let result = match &self.lease {
            Lease::Live(live) => self.put(&key, &value, live.id).await,
            // Nothing alive: establishing a lease puts every record, so add
            // this one first and take it back if that fails.
            Lease::Idle | Lease::Lost { .. } => Err(None),
        };
        let result = match result {
            Ok(()) => Ok(()),
            Err(Some(e)) => Err(e),
            Err(None) => {
                let previous = self.insert(key.clone(), value.clone(), owner, state.clone());
                let established = self.establish().await;
                if established.is_err() {
                    self.records.remove(&key);
                    if let Some(previous) = previous {
                        self.records.insert(key.clone(), previous);
                    }
                }
                return established;
            }
        };
        if result.is_ok() {
            self.insert(key, value, owner, state);
        }
        result
    }

    /// Takes over a record put by the caller under `lease`, making sure it
    /// ends up under the lease that is live now.
    async fn adopt(
        &mut self,
        key: String,
        value: String,
        owner: u64,
        state: watch::Sender<RegistrationState>,
        lease: i64,
    ) {
        self.insert(key.clone(), value.clone(), owner, state);
        match &self.lease {
            Lease::Live(live) if live.id == lease => {}
            // The lease changed since the caller read it: put it again.
            Lease::Live(live) => {
                let id = live.id;
                if let Err(e) = self.put(&key, &value, id).await {
                    let error =
                        e.map_or_else(|| "lease not found".to_string(), |e| error_chain(&e));
                    self.lost(Failure::Unreachable(error));
                }
            }
            // Recovery puts every record, this one included.
            Lease::Lost { .. } => {}
            Lease::Idle => {
                // A failure is retried with backoff; the state says so.
                let _ = self.establish().await;
            }
        }
    }

    fn insert(
        &mut self,
        key: String,
        value: String,
        owner: u64,
        state: watch::Sender<RegistrationState>,
    ) -> Option<Record> {
        state.send_replace(RegistrationState::Registered);
        let replaced = self.records.insert(
            key,
            Record {
                value,
                owner,
                state,
            },
        );
        if let Some(old) = &replaced {
            // The same key registered again: the older handle no longer owns it.
            old.state.send_replace(RegistrationState::Deregistered);
        }
        replaced
    }

    async fn deregister(&mut self, key: &str, owner: u64) -> Result<(), Error> {
        if self.records.get(key).is_none_or(|r| r.owner != owner) {
            return Ok(());
        }
        if let Some(record) = self.records.remove(key) {
            record.state.send_replace(RegistrationState::Deregistered);
        }
        if self.records.is_empty() {
            // Revoking the lease deletes the key with it, in one request.
            return self.revoke().await;
        }
        let key = key.to_string();
        self.shared
            .call(|mut c| {
                let key = key.clone();
                async move { c.delete(key, None).await }
            })
            .await
            .map(drop)
    }

    /// Grants a lease, puts every record under it and starts keep-alives.
    async fn establish(&mut self) -> Result<(), Error> {
        let ttl = ttl_secs(self.shared.config.ttl);
        let granted = self
            .shared
            .call(|mut c| async move { c.lease_grant(ttl, None).await });
        let id = match granted.await {
            Ok(grant) => grant.id(),
            Err(e) => return self.failed(None, e),
        };
        if let Err(e) = self.put_all(id).await {
            // Not resumable: the records may not be under it. It expires.
            return self.failed(None, e);
        }
        self.start_keepalive(id).await
    }

    async fn start_keepalive(&mut self, id: i64) -> Result<(), Error> {
        let keep_alive = self
            .shared
            .call(|mut c| async move { c.lease_keep_alive(id).await });
        match keep_alive.await {
            Ok((keeper, stream)) => {
                let ttl = self.shared.config.ttl;
                self.shared.live_lease.store(id, Ordering::Release);
                self.lease = Lease::Live(Box::new(Live {
                    id,
                    keeper,
                    stream,
                    next_keepalive: Instant::now() + ttl / 3,
                    expires: Instant::now() + ttl,
                }));
                self.backoff.reset();
                self.set_state(RegistrationState::Registered);
                Ok(())
            }
            Err(e) => self.failed(Some(id), e),
        }
    }

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

    async fn put(&self, key: &str, value: &str, lease: i64) -> Result<(), Option<Error>> {
        let put = self.shared.call(|mut c| {
            let (key, value) = (key.to_string(), value.to_string());
            async move { c.put(key, value, Some(lease_opt(lease))).await }
        });
        match put.await {
            Ok(_) => Ok(()),
            Err(e) if is_lease_gone(&e) => Err(None),
            Err(e) => Err(Some(e)),
        }
    }

    /// Records a failed attempt and schedules the next one.
    fn failed(&mut self, id: Option<i64>, error: Error) -> Result<(), Error> {
        self.shared.live_lease.store(0, Ordering::Release);
        let text = error_chain(&error);
        let attempt = self.backoff.attempt() + 1;
        self.lease = Lease::Lost {
            id,
            retry_at: Instant::now() + self.backoff.next_delay(),
        };
        if !self.records.is_empty() {
            tracing::warn!(attempt, error = %text, "etcd registration not re-established yet; retrying");
            self.set_state(RegistrationState::Retrying {
                attempt,
                error: text,
            });
        }
        Err(error)
    }

    fn lost(&mut self, failure: Failure) {
        self.shared.live_lease.store(0, Ordering::Release);
        let old = std::mem::replace(&mut self.lease, Lease::Idle);
        let Lease::Live(live) = old else { return };
        let (id, error) = match failure {
            Failure::Gone => (None, "lease expired or etcd lost it".to_string()),
            Failure::Unreachable(e) => (Some(live.id), e),
        };
        tracing::warn!(lease = live.id, %error, "etcd lease keep-alive lost; re-establishing");
        self.set_state(RegistrationState::Retrying { attempt: 0, error });
        // First attempt at once: a broken stream is usually a reconnect away.
        self.lease = Lease::Lost {
            id,
            retry_at: Instant::now(),
        };
    }

    /// One attempt to get back to a live lease: resume the old one if etcd
    /// still has it, else grant a new one and put everything again.
    async fn recover(&mut self) {
        let Lease::Lost { id, .. } = self.lease else {
            return;
        };
        if self.records.is_empty() {
            self.lease = Lease::Idle;
            return;
        }
        if let Some(id) = id {
            match self.start_keepalive(id).await {
                Ok(()) => {
                    tracing::info!(lease = id, "etcd lease keep-alive resumed");
                    return;
                }
                Err(e) if !is_lease_gone(&e) => return,
                Err(_) => {}
            }
        }
        if self.establish().await.is_ok() {
            tracing::info!(
                records = self.records.len(),
                "etcd registration re-established"
            );
        }
    }

    /// Revokes the lease (deleting every key under it) and goes idle.
    async fn revoke(&mut self) -> Result<(), Error> {
        self.shared.live_lease.store(0, Ordering::Release);
        let id = match std::mem::replace(&mut self.lease, Lease::Idle) {
            Lease::Live(live) => live.id,
            Lease::Lost { id: Some(id), .. } => id,
            Lease::Lost { id: None, .. } | Lease::Idle => return Ok(()),
        };
        match self
            .shared
            .call(|mut c| async move { c.lease_revoke(id).await })
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_lease_gone(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn set_state(&self, state: RegistrationState) {
        for record in self.records.values() {
            record.state.send_if_modified(|current| {
                let changed = *current != state;
                *current = state.clone();
                changed
            });
        }
    }
}

/// Resolves with the failure of a live lease's keep-alives, or with `None`
/// when a lost lease is due for another attempt; never while idle.
async fn lease_event(lease: &mut Lease, ttl: Duration) -> Option<Failure> {
    match lease {
        Lease::Live(live) => Some(keep_alive(live, ttl).await),
        Lease::Lost { retry_at, .. } => {
            sleep_until(*retry_at).await;
            None
        }
        Lease::Idle => std::future::pending().await,
    }
}

/// Drives keep-alives of a live lease; resolves only when they fail.
async fn keep_alive(live: &mut Live, ttl: Duration) -> Failure {
    loop {
        tokio::select! {
            () = sleep_until(live.next_keepalive) => {
                live.next_keepalive = Instant::now() + ttl / 3;
                if let Err(e) = live.keeper.keep_alive().await {
                    return Failure::Unreachable(concise(e).to_string());
                }
            }
            message = live.stream.message() => match message {
                Ok(Some(response)) if response.ttl() > 0 => {
                    live.expires = Instant::now() + Duration::from_secs(response.ttl().unsigned_abs());
                }
                Ok(Some(_)) => return Failure::Gone,
                Ok(None) => return Failure::Unreachable("keep-alive stream ended".into()),
                Err(e) => return Failure::Unreachable(concise(e).to_string()),
            },
            () = sleep_until(live.expires) => {
                return Failure::Unreachable("no keep-alive answer within the TTL".into());
            }
        }
    }
}

fn lease_opt(lease: i64) -> PutOptions {
    PutOptions::new().with_lease(lease)
}

fn ttl_secs(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX)
}

/// An error and its sources on one line, for logs and state.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
