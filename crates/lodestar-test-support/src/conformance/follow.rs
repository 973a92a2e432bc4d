//! Helpers the cases share: records, bounded waits, and a [`Follower`]
//! that keeps every snapshot a watch yields.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lodestar::{Discovery, Instance, Registrar, Registration, RegistrationState, Snapshot, Watch};
use tokio::task::JoinHandle;

use crate::eventually;

/// The bound on every wait of the suite: nothing asserts speed, but nothing
/// waits forever either.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// How long a case lets clients notice a fault before it changes anything,
/// so watches resynchronise with the registry as the fault left it. A pause,
/// not a bound: nothing is asserted about how fast that happens.
const SETTLE: Duration = Duration::from_secs(3);

/// A watch read continuously by a task of its own, which keeps every
/// snapshot the watch yields, in order.
#[derive(Debug)]
pub(crate) struct Follower {
    backend: String,
    watch: Watch,
    seen: Arc<Mutex<Vec<Arc<Snapshot>>>>,
    task: JoinHandle<()>,
}

/// Lets clients notice a fault before the case changes anything.
pub(crate) async fn settle() {
    tokio::time::sleep(SETTLE).await;
}

/// A full record: version, two endpoints and the well-known metadata.
pub(crate) fn instance(service: &str, id: &str, port: u16) -> Instance {
    Instance::new(service, id)
        .with_version("v1")
        .with_endpoint(endpoint("grpc", port))
        .with_endpoint(endpoint("http", port.wrapping_add(1)))
        .with_metadata("color", "blue")
        .with_metadata("weight", "20")
        .with_metadata("zone", "z1")
}

fn endpoint(scheme: &str, port: u16) -> lodestar::Endpoint {
    lodestar::Endpoint::new(scheme, "127.0.0.1", port).expect("a valid endpoint")
}

/// The ids of a snapshot, in order.
pub(crate) fn ids(snapshot: &Snapshot) -> Vec<String> {
    snapshot.instances().iter().map(|i| i.id.clone()).collect()
}

/// Awaits `future`, failing the case if it takes longer than [`PATIENCE`].
pub(crate) async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {PATIENCE:?} waiting for {what}"),
    }
}

/// Registers `instance`, failing the case on an error or a hang.
pub(crate) async fn register<R: Registrar + ?Sized>(
    registry: &R,
    instance: Instance,
) -> Registration {
    let what = format!("registering {}/{}", instance.service, instance.id);
    bounded(&what, registry.register(instance))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// A snapshot of `service` now, failing the case on an error.
pub(crate) async fn get<R: Discovery + ?Sized>(registry: &R, service: &str) -> Snapshot {
    let what = format!("get({service})");
    bounded(&what, registry.get(service))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The subscribers of `service` now, failing the case on an error.
pub(crate) async fn subscribers<R: Discovery + ?Sized>(
    registry: &R,
    service: &str,
) -> Vec<lodestar::Subscriber> {
    let what = format!("subscribers({service})");
    bounded(&what, registry.subscribers(service))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Registers `instance`, retrying failed attempts for up to [`PATIENCE`]:
/// right after a fault, a client may take a moment to reconnect.
pub(crate) async fn register_retrying<R: Registrar + ?Sized>(
    registry: &R,
    instance: Instance,
) -> Registration {
    let what = format!("registering {}/{}", instance.service, instance.id);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let attempt = tokio::time::timeout_at(deadline, registry.register(instance.clone())).await;
        match attempt {
            Ok(Ok(registration)) => return registration,
            Ok(Err(e @ lodestar::Error::InvalidInstance(_))) => panic!("{what}: {e}"),
            Ok(Err(e)) if tokio::time::Instant::now() >= deadline => {
                panic!("{what}: still failing after {PATIENCE:?}: {e}")
            }
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(_) => panic!("timed out after {PATIENCE:?} {what}"),
        }
    }
}

/// Waits until the registration's state satisfies `check`.
pub(crate) async fn wait_state(
    what: &str,
    registration: &Registration,
    check: impl Fn(&RegistrationState) -> bool,
) {
    let check = &check;
    eventually(
        what,
        PATIENCE,
        || async move { check(&registration.state()) },
    )
    .await;
}

/// Whether the state receiver says the registration is over: it reads
/// [`RegistrationState::Deregistered`], or its sender is gone.
pub(crate) fn is_over(state: &tokio::sync::watch::Receiver<RegistrationState>) -> bool {
    state.has_changed().is_err() || *state.borrow() == RegistrationState::Deregistered
}

// === impl Follower ===

impl Follower {
    /// Watches `service` and starts reading the watch.
    pub(crate) async fn start<R: Discovery + ?Sized>(
        backend: &str,
        registry: &R,
        service: &str,
    ) -> Self {
        let what = format!("watch({service})");
        let watch = bounded(&what, registry.watch(service))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(read(watch.clone(), seen.clone()));
        Self {
            backend: backend.to_string(),
            watch,
            seen,
            task,
        }
    }

    /// The watch's newest snapshot.
    pub(crate) fn latest(&self) -> Arc<Snapshot> {
        self.watch.latest()
    }

    /// The ids of the newest snapshot.
    pub(crate) fn ids(&self) -> Vec<String> {
        ids(&self.latest())
    }

    /// Waits until the newest snapshot satisfies `check`.
    pub(crate) async fn wait(&self, what: &str, check: impl Fn(&Snapshot) -> bool) {
        let check = &check;
        let what = format!("{what} (in a watch on {})", self.backend);
        eventually(&what, PATIENCE, || async move { check(&self.latest()) }).await;
    }

    /// Waits until the newest snapshot holds exactly `expected`, by id.
    pub(crate) async fn wait_ids(&self, what: &str, expected: &[&str]) {
        self.wait(what, |s| ids(s) == expected).await;
    }

    /// How many snapshots were yielded so far: a mark for
    /// [`saw_since`](Self::saw_since).
    pub(crate) fn mark(&self) -> usize {
        self.seen().len()
    }

    /// Whether any snapshot yielded so far satisfies `check`.
    pub(crate) fn saw(&self, check: impl Fn(&Snapshot) -> bool) -> bool {
        self.saw_since(0, check)
    }

    /// Whether any snapshot yielded after `mark` satisfies `check`.
    pub(crate) fn saw_since(&self, mark: usize, check: impl Fn(&Snapshot) -> bool) -> bool {
        self.seen().iter().skip(mark).any(|s| check(s))
    }

    /// Every snapshot yielded so far.
    pub(crate) fn seen(&self) -> Vec<Arc<Snapshot>> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Fails the case unless every snapshot yielded has a revision strictly
    /// greater than the one before it.
    pub(crate) fn assert_revisions_grow(&self, during: &str) {
        let seen = self.seen();
        let Some(at) = seen
            .windows(2)
            .position(|w| w[1].revision() <= w[0].revision())
        else {
            return;
        };
        let mut history = String::new();
        for (i, snapshot) in seen.iter().enumerate() {
            let mark = if i == at + 1 { "  <== not greater" } else { "" };
            let _ = write!(
                history,
                "\n  #{i}: revision {} ids {:?}{mark}",
                snapshot.revision(),
                ids(snapshot)
            );
        }
        panic!(
            "a watch on {} went from revision {} to {} {during}: Snapshot::revision must \
             strictly grow along one Watch. Snapshots yielded:{history}",
            self.backend,
            seen[at].revision(),
            seen[at + 1].revision()
        );
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read(mut watch: Watch, seen: Arc<Mutex<Vec<Arc<Snapshot>>>>) {
    while let Some(snapshot) = watch.next().await {
        seen.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(snapshot);
    }
}
