//! Steady call load through a balanced channel.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed},
    },
    time::Duration,
};

use lodestar_echo::{EchoRequest, echo_client::EchoClient};
use lodestar_tonic::Channel;
use tokio::task::JoinHandle;

/// Callers sending one call after another through a channel until stopped.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    tasks: Vec<JoinHandle<()>>,
}

/// What a [`Load`] saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Successful calls.
    pub ok: usize,
    /// Failed calls.
    pub failed: usize,
    /// Successful calls per instance id.
    pub by_instance: BTreeMap<String, usize>,
    /// The first few errors, for the failure message.
    pub errors: Vec<String>,
}

#[derive(Debug, Default)]
struct Counts {
    ok: AtomicUsize,
    failed: AtomicUsize,
    by_instance: Mutex<BTreeMap<String, usize>>,
    errors: Mutex<Vec<String>>,
}

// === impl Load ===

impl Load {
    /// `callers` tasks calling through `channel`, each call bounded by
    /// `deadline` (a caller's own timeout) and followed by a 2 ms pause, so
    /// the load is steady without saturating a shared machine.
    pub fn start(channel: &Channel, callers: usize, deadline: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let tasks = (0..callers)
            .map(|_| {
                let client = EchoClient::new(channel.clone());
                tokio::spawn(call_loop(client, stop.clone(), counts.clone(), deadline))
            })
            .collect();
        Load {
            stop,
            counts,
            tasks,
        }
    }

    /// What it saw so far.
    pub fn tally(&self) -> Tally {
        Tally {
            ok: self.counts.ok.load(Relaxed),
            failed: self.counts.failed.load(Relaxed),
            by_instance: copy(&self.counts.by_instance),
            errors: copy(&self.counts.errors),
        }
    }

    /// Waits until `more` calls have succeeded beyond now, at most
    /// `limit`; whether they did.
    pub async fn progress(&self, more: usize, limit: Duration) -> bool {
        let target = self.counts.ok.load(Relaxed) + more;
        crate::time_until(limit, || async { self.counts.ok.load(Relaxed) >= target })
            .await
            .is_some()
    }

    /// Stops the callers, waits for their calls in flight, and tells.
    pub async fn stop(self) -> Tally {
        self.stop.store(true, Relaxed);
        for task in &self.tasks {
            while !task.is_finished() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        self.tally()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

fn copy<T: Clone>(m: &Mutex<T>) -> T {
    m.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

async fn call_loop(
    mut client: EchoClient<Channel>,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    deadline: Duration,
) {
    while !stop.load(Relaxed) {
        let mut request = tonic::Request::new(EchoRequest {
            message: "fault".into(),
            delay_ms: 0,
        });
        request.set_timeout(deadline);
        match tokio::time::timeout(deadline * 2, client.say(request)).await {
            Ok(Ok(reply)) => {
                counts.ok.fetch_add(1, Relaxed);
                let mut by = counts
                    .by_instance
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                *by.entry(reply.into_inner().instance).or_default() += 1;
            }
            outcome => {
                counts.failed.fetch_add(1, Relaxed);
                let mut errors = counts.errors.lock().unwrap_or_else(PoisonError::into_inner);
                if errors.len() < 10 {
                    errors.push(match outcome {
                        Ok(Err(status)) => format!("{status}"),
                        _ => "no answer within twice the deadline".to_string(),
                    });
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
