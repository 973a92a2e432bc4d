//! The driver's state machine against a scripted backend, in paused time:
//! what a registration does when its registry fails, and when.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    sync::{mpsc, watch},
    time::{Instant, sleep, timeout},
};

use super::*;

const EVERY: Duration = Duration::from_secs(3);
const BASE: Duration = Duration::from_millis(100);

/// What the fake backend answers, in order; an empty queue answers `Ok`.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    Ok,
    Transient,
    Gone,
}

/// A request the driver made, with the lease generation it was about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Establish,
    KeepAlive(u32),
    Resume(u32),
}

#[derive(Default)]
struct Script {
    establish: VecDeque<Outcome>,
    keep_alive: VecDeque<Outcome>,
    resume: VecDeque<Outcome>,
    /// Every request, with when it was made (time since the start).
    calls: Vec<(Call, Duration)>,
}

/// A backend whose answers are scripted; its leases are generations 1, 2...
struct Fake {
    script: Arc<Mutex<Script>>,
    start: Instant,
    generation: u32,
    broken: mpsc::UnboundedReceiver<Failure>,
}

struct Harness {
    driver: Driver<Fake>,
    script: Arc<Mutex<Script>>,
    /// Breaks keep-alives between two of them, as etcd's stream does.
    broken: mpsc::UnboundedSender<Failure>,
    state: watch::Receiver<RegistrationState>,
    start: Instant,
}

fn error(text: &'static str) -> Error {
    Error::Request {
        registry: "fake".into(),
        source: text.into(),
    }
}

fn failure(outcome: Outcome) -> Result<(), Failure> {
    match outcome {
        Outcome::Ok => Ok(()),
        Outcome::Transient => Err(Failure::Transient(error("connection refused"))),
        Outcome::Gone => Err(Failure::Gone(error("lease not found"))),
    }
}

fn retrying(attempt: u32) -> impl Fn(&RegistrationState) -> bool {
    move |state| matches!(state, RegistrationState::Retrying { attempt: a, .. } if *a == attempt)
}

// === impl Fake ===

impl Fake {
    fn answer(
        &mut self,
        call: Call,
        queue: fn(&mut Script) -> &mut VecDeque<Outcome>,
    ) -> Result<(), Failure> {
        let mut script = self.script.lock().unwrap();
        script.calls.push((call, self.start.elapsed()));
        failure(queue(&mut script).pop_front().unwrap_or(Outcome::Ok))
    }
}

impl Backend for Fake {
    type Lease = u32;

    async fn establish(&mut self) -> Result<u32, Failure> {
        self.answer(Call::Establish, |s| &mut s.establish)?;
        self.generation += 1;
        Ok(self.generation)
    }

    async fn keep_alive(&mut self, lease: &mut u32) -> Result<(), Failure> {
        self.answer(Call::KeepAlive(*lease), |s| &mut s.keep_alive)
    }

    async fn resume(&mut self, lease: &mut u32) -> Result<(), Failure> {
        self.answer(Call::Resume(*lease), |s| &mut s.resume)
    }

    async fn broken(&mut self, _: &mut u32) -> Failure {
        match self.broken.recv().await {
            Some(failure) => failure,
            None => std::future::pending().await,
        }
    }
}

// === impl Harness ===

impl Harness {
    /// A driver serving one handle, scripted by `script`, not established.
    fn new(script: impl FnOnce(&mut Script)) -> Self {
        let mut scripted = Script::default();
        script(&mut scripted);
        let script = Arc::new(Mutex::new(scripted));
        let (broken, broken_rx) = mpsc::unbounded_channel();
        let start = Instant::now();
        let fake = Fake {
            script: script.clone(),
            start,
            generation: 0,
            broken: broken_rx,
        };
        let mut driver = Driver::new(fake, EVERY, Backoff::new(BASE, Duration::from_secs(5)));
        let (tx, state) = watch::channel(RegistrationState::Registered);
        driver.serve(0, tx);
        Self {
            driver,
            script,
            broken,
            state,
            start,
        }
    }

    /// Established and live.
    async fn live(script: impl FnOnce(&mut Script)) -> Self {
        let mut harness = Self::new(script);
        harness.driver.establish().await.unwrap();
        harness
    }

    /// Waits for the next piece of work and does it; when it was due.
    async fn step(&mut self) -> Duration {
        let ready = self.driver.ready().await;
        let at = self.start.elapsed();
        self.driver.advance(ready).await;
        at
    }

    fn calls(&self) -> Vec<Call> {
        let script = self.script.lock().unwrap();
        script.calls.iter().map(|(call, _)| *call).collect()
    }

    fn times(&self) -> Vec<Duration> {
        let script = self.script.lock().unwrap();
        script.calls.iter().map(|(_, at)| *at).collect()
    }

    fn state(&self) -> RegistrationState {
        self.state.borrow().clone()
    }
}

#[tokio::test(start_paused = true)]
async fn keeps_alive_on_schedule() {
    let mut h = Harness::live(|_| {}).await;
    for _ in 0..3 {
        h.step().await;
    }
    use Call::*;
    assert_eq!(
        h.calls(),
        [Establish, KeepAlive(1), KeepAlive(1), KeepAlive(1)]
    );
    assert_eq!(h.times(), [0, 3, 6, 9].map(Duration::from_secs));
    assert_eq!(h.state(), RegistrationState::Registered);
}

#[tokio::test(start_paused = true)]
async fn a_transient_failure_resumes_the_same_lease_at_once() {
    let mut h = Harness::live(|s| s.keep_alive.push_back(Outcome::Transient)).await;
    h.step().await;
    assert!(retrying(0)(&h.state()), "{:?}", h.state());
    assert_eq!(h.step().await, EVERY, "the first attempt is at once");
    assert_eq!(h.state(), RegistrationState::Registered);
    h.step().await;
    use Call::*;
    assert_eq!(
        h.calls(),
        [Establish, KeepAlive(1), Resume(1), KeepAlive(1)],
        "resumed on the same lease, never re-established"
    );
}

#[tokio::test(start_paused = true)]
async fn a_gone_lease_is_established_again_at_once() {
    let mut h = Harness::live(|s| s.keep_alive.push_back(Outcome::Gone)).await;
    h.step().await;
    assert!(retrying(0)(&h.state()));
    assert_eq!(h.step().await, EVERY);
    h.step().await;
    use Call::*;
    assert_eq!(
        h.calls(),
        [Establish, KeepAlive(1), Establish, KeepAlive(2)]
    );
    assert_eq!(h.driver.live(), Some(&2));
}

#[tokio::test(start_paused = true)]
async fn a_resume_that_finds_the_lease_gone_establishes_in_the_same_attempt() {
    let mut h = Harness::live(|s| {
        s.keep_alive.push_back(Outcome::Transient);
        s.resume.push_back(Outcome::Gone);
    })
    .await;
    h.step().await;
    h.step().await;
    use Call::*;
    assert_eq!(h.calls(), [Establish, KeepAlive(1), Resume(1), Establish]);
    assert_eq!(h.state(), RegistrationState::Registered);
    assert_eq!(h.driver.live(), Some(&2));
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_until_back_and_starts_again_after() {
    use Outcome::*;
    let mut h = Harness::live(|s| {
        s.keep_alive.extend([Transient, Transient]);
        s.resume
            .extend([Transient, Transient, Transient, Ok, Transient, Transient]);
    })
    .await;
    // Lost, then three failed attempts and one that works.
    let mut attempts = Vec::new();
    for _ in 0..5 {
        attempts.push(h.step().await);
    }
    assert_eq!(h.state(), RegistrationState::Registered);
    // Lost again one interval later: the backoff starts from the base.
    for _ in 0..3 {
        attempts.push(h.step().await);
    }
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    let window = |doublings: u32| BASE * 2u32.pow(doublings);
    let within = |gap: Duration, w: Duration| gap >= w / 2 && gap <= w;
    assert_eq!(gaps[0], Duration::ZERO, "first attempt at once");
    assert!(within(gaps[1], window(0)), "{gaps:?}");
    assert!(within(gaps[2], window(1)), "{gaps:?}");
    assert!(within(gaps[3], window(2)), "{gaps:?}");
    assert!(
        gaps[4] >= EVERY,
        "live again until the next keep-alive: {gaps:?}"
    );
    assert_eq!(gaps[5], Duration::ZERO, "first attempt at once again");
    assert!(within(gaps[6], window(0)), "reset after success: {gaps:?}");
}

#[tokio::test(start_paused = true)]
async fn states_are_published_in_order_to_every_handle() {
    use Outcome::*;
    let mut h = Harness::live(|s| {
        s.keep_alive.push_back(Transient);
        s.resume.extend([Transient, Gone]);
    })
    .await;
    // The re-establishing fails once; the first establish above went through.
    h.script.lock().unwrap().establish.push_back(Transient);
    let (tx, mut other) = watch::channel(RegistrationState::Registered);
    h.driver.serve(1, tx);
    let mut seen = Vec::new();
    for _ in 0..4 {
        h.step().await;
        assert!(other.has_changed().unwrap(), "each step is a real change");
        seen.push(other.borrow_and_update().clone());
        assert_eq!(h.state(), *seen.last().unwrap());
    }
    assert!(retrying(0)(&seen[0]), "lost: {seen:?}");
    assert!(retrying(1)(&seen[1]), "resume failed: {seen:?}");
    assert!(
        retrying(2)(&seen[2]),
        "resume gone, establish failed: {seen:?}"
    );
    assert_eq!(seen[3], RegistrationState::Registered);
    let RegistrationState::Retrying { error, .. } = &seen[0] else {
        unreachable!()
    };
    assert!(error.contains("connection refused"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn broken_keep_alives_are_noticed_between_keep_alives() {
    let mut h = Harness::live(|_| {}).await;
    sleep(Duration::from_secs(1)).await;
    h.broken
        .send(Failure::Transient(error("stream ended")))
        .unwrap();
    assert_eq!(h.step().await, Duration::from_secs(1));
    assert!(retrying(0)(&h.state()));
    h.step().await;
    use Call::*;
    assert_eq!(h.calls(), [Establish, Resume(1)]);
    assert_eq!(h.state(), RegistrationState::Registered);
}

#[tokio::test(start_paused = true)]
async fn a_failure_the_backend_reports_loses_the_live_lease() {
    let mut h = Harness::live(|_| {}).await;
    h.driver.fail(Failure::Gone(error("lease not found")));
    assert!(retrying(0)(&h.state()));
    assert_eq!(h.driver.live(), None);
    assert_eq!(h.driver.lease(), None, "gone: nothing to resume");
    h.step().await;
    assert_eq!(h.calls(), [Call::Establish, Call::Establish]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_first_establish_returns_its_error_and_retries() {
    let mut h = Harness::new(|s| s.establish.push_back(Outcome::Transient));
    let err = h.driver.establish().await.unwrap_err();
    assert!(matches!(err, Error::Request { .. }), "{err}");
    assert!(retrying(1)(&h.state()));
    let at = h.step().await;
    assert!(at >= BASE / 2 && at <= BASE, "{at:?}");
    assert_eq!(h.state(), RegistrationState::Registered);
}

#[tokio::test(start_paused = true)]
async fn a_new_handle_starts_from_where_the_registration_stands() {
    let mut h = Harness::live(|s| {
        s.keep_alive.push_back(Outcome::Transient);
        s.resume.push_back(Outcome::Transient);
    })
    .await;
    h.step().await;
    h.step().await;
    let (tx, late) = watch::channel(RegistrationState::Registered);
    h.driver.serve(1, tx);
    assert!(retrying(1)(&late.borrow()));
}

#[tokio::test(start_paused = true)]
async fn stop_deregisters_every_handle_and_goes_quiet() {
    let mut h = Harness::live(|_| {}).await;
    let (tx, other) = watch::channel(RegistrationState::Registered);
    h.driver.serve(1, tx);
    assert_eq!(h.driver.stop(), Some(1), "the lease, to revoke");
    assert_eq!(h.state(), RegistrationState::Deregistered);
    assert_eq!(*other.borrow(), RegistrationState::Deregistered);
    assert!(h.driver.is_idle());
    let quiet = timeout(Duration::from_secs(3600), h.driver.ready()).await;
    assert!(quiet.is_err(), "an idle driver has nothing to do");
    assert_eq!(h.calls(), [Call::Establish]);
}

#[tokio::test(start_paused = true)]
async fn a_released_handle_is_deregistered_and_the_last_one_stops_retries() {
    let mut h = Harness::live(|s| s.keep_alive.push_back(Outcome::Gone)).await;
    h.step().await;
    h.driver.release(0);
    assert_eq!(h.state(), RegistrationState::Deregistered);
    assert_eq!(h.driver.handles(), 0);
    h.step().await;
    assert!(h.driver.is_idle());
    assert_eq!(h.calls(), [Call::Establish, Call::KeepAlive(1)]);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_driver_stops_keeping_alive() {
    let h = Harness::live(|_| {}).await;
    let script = h.script.clone();
    let task = tokio::spawn(h.driver.run());
    sleep(EVERY + EVERY / 2).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    sleep(EVERY * 10).await;
    let calls = script.lock().unwrap().calls.len();
    assert_eq!(calls, 2, "establish and one keep-alive, nothing after");
}
