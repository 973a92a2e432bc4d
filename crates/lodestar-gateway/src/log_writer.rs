//! A log writer that never holds up a request: lines (the access log's,
//! one per request) are appended to a buffer in memory, and a background
//! thread writes the buffer to stderr in large writes. A request pays a
//! short lock and a copy instead of a write system call under stderr's
//! lock; a stderr nobody reads (a full pipe) blocks only the background
//! thread, and once [`MAX_BUFFERED`] bytes wait, further lines are dropped
//! and counted (reported when writing resumes) instead of stalling the
//! gateway.
//!
//! ```no_run
//! let (writer, guard) = lodestar_gateway::log_writer::stderr();
//! // tracing_subscriber::fmt().with_writer(move || writer.clone()).init();
//! // ... serve ...
//! guard.flush(); // before exiting: what is buffered is written
//! ```

use std::{
    io::{self, Write},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread,
    time::Duration,
};

/// Bytes waiting at most; lines beyond are dropped and counted.
pub const MAX_BUFFERED: usize = 8 << 20;

/// How long a line waits at most before it is written.
const INTERVAL: Duration = Duration::from_millis(20);

/// Buffered bytes that wake the writer before the interval.
const WAKE_AT: usize = 64 << 10;

/// The writing half: cheap to clone, one per event (tracing's `MakeWriter`
/// is any `Fn() -> impl Write`).
#[derive(Clone, Debug)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Flushes what is buffered and stops the background thread when flushed
/// or dropped.
#[derive(Debug)]
pub struct Guard {
    shared: Arc<Shared>,
    thread: Option<thread::JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct State {
    buffer: Vec<u8>,
    dropped: u64,
    closed: bool,
}

/// A writer to stderr through a background thread, and its guard.
pub fn stderr() -> (LogWriter, Guard) {
    to(io::stderr())
}

/// A writer to `out` through a background thread, and its guard.
pub fn to(mut out: impl Write + Send + 'static) -> (LogWriter, Guard) {
    let shared = Arc::new(Shared::default());
    let background = shared.clone();
    let thread = thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || background.run(&mut out))
        .ok();
    let writer = LogWriter {
        shared: shared.clone(),
    };
    (writer, Guard { shared, thread })
}

// === impl LogWriter ===

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut state = self.shared.lock();
        if state.buffer.len() + bytes.len() > MAX_BUFFERED {
            state.dropped += 1;
        } else {
            state.buffer.extend_from_slice(bytes);
            if state.buffer.len() >= WAKE_AT {
                self.shared.wake.notify_one();
            }
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// === impl Guard ===

impl Guard {
    /// Writes what is buffered and stops the background thread.
    pub fn flush(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

// === impl Shared ===

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The background thread: take the buffer, write it, until closed and
    /// empty.
    fn run(&self, out: &mut dyn Write) {
        let mut batch = Vec::new();
        loop {
            let (dropped, closed) = {
                let mut state = self.lock();
                if state.buffer.is_empty() && !state.closed {
                    state = self
                        .wake
                        .wait_timeout(state, INTERVAL)
                        .map_or_else(|p| p.into_inner().0, |(s, _)| s);
                }
                std::mem::swap(&mut batch, &mut state.buffer);
                (std::mem::take(&mut state.dropped), state.closed)
            };
            // A failed write (stderr closed) loses the batch, never the
            // process.
            let _ = out.write_all(&batch);
            if dropped > 0 {
                let _ = writeln!(
                    out,
                    "lodestar: {dropped} log lines dropped: stderr was not read fast enough"
                );
            }
            let _ = out.flush();
            batch.clear();
            if closed && self.lock().buffer.is_empty() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that records what reached it.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_reach_the_output_in_order_and_all_by_the_flush() {
        let sink = Sink::default();
        let (writer, guard) = to(sink.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut writer = writer.clone();
                thread::spawn(move || {
                    for i in 0..1000 {
                        writer.write_all(format!("{t} {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        guard.flush();
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 4000);
        for t in 0..4 {
            let mine: Vec<usize> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("{t} ")))
                .map(|i| i.parse().unwrap())
                .collect();
            assert_eq!(mine, (0..1000).collect::<Vec<_>>(), "thread {t}");
        }
    }

    /// An output that blocks until released: a full pipe nobody reads.
    struct Stuck(Arc<(Mutex<bool>, Condvar)>);

    impl Write for Stuck {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let (released, cv) = &*self.0;
            let mut released = released.lock().unwrap();
            while !*released {
                released = cv.wait(released).unwrap();
            }
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_output_drops_lines_instead_of_blocking_writers() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let (mut writer, guard) = to(Stuck(gate.clone()));
        let line = [b'x'; 1024];
        // Far more than MAX_BUFFERED: every write returns at once.
        for _ in 0..(3 * MAX_BUFFERED / line.len()) {
            writer.write_all(&line).unwrap();
        }
        let state = writer.shared.lock();
        assert!(state.buffer.len() <= MAX_BUFFERED);
        assert!(state.dropped > 0, "lines beyond the bound are counted");
        drop(state);
        let (released, cv) = &*gate;
        *released.lock().unwrap() = true;
        cv.notify_all();
        guard.flush();
    }
}
