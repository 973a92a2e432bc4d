//! A slowloris attack and a well-behaved client measured during it: many
//! connections that trickle a request head a byte at a time and never
//! finish it, while normal requests go on.
//!
//! [`attack`] returns how long the server held each slow connection (until
//! it closed it) and the latencies of the normal requests made meanwhile;
//! tests check both and print the figures.

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
};

/// What an attack measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Per slow connection: how long the server kept it open, `None` when
    /// it was still open when the attack gave up.
    pub held: Vec<Option<Duration>>,
    /// Latency of each normal request made during the attack (failed ones
    /// are left out and counted in `failed`).
    pub normal: Vec<Duration>,
    /// Normal requests that failed or answered other than 2xx.
    pub failed: usize,
}

/// Opens `connections` slow connections to `addr`, each sending the start
/// of a `GET path` and then one header byte every `trickle`, for at most
/// `give_up`; meanwhile sends a normal `GET normal_path` every 50 ms.
/// Everything ends within `give_up` (plus one request timeout).
pub async fn attack(
    addr: &str,
    connections: usize,
    trickle: Duration,
    normal_path: &str,
    give_up: Duration,
) -> Report {
    let closed = Arc::new(AtomicUsize::new(0));
    let mut slow = JoinSet::new();
    for _ in 0..connections {
        let addr = addr.to_string();
        let closed = closed.clone();
        slow.spawn(async move {
            let held = tokio::time::timeout(give_up, slow_connection(addr, trickle))
                .await
                .ok()
                .and_then(Result::ok);
            closed.fetch_add(1, Ordering::Relaxed);
            held
        });
    }
    let started = Instant::now();
    let mut normal = Vec::new();
    let mut failed = 0;
    let mut after_all_closed = 0;
    // Until `give_up`, or until every slow connection is closed and ten
    // more normal requests went through.
    while started.elapsed() < give_up && after_all_closed < 10 {
        let sent = Instant::now();
        match crate::http::get(addr, normal_path).await {
            Ok(answer) if (200..300).contains(&answer.status) => normal.push(sent.elapsed()),
            _ => failed += 1,
        }
        if closed.load(Ordering::Relaxed) == connections {
            after_all_closed += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut held = Vec::new();
    while let Some(joined) = slow.join_next().await {
        held.push(joined.ok().flatten());
    }
    Report {
        held,
        normal,
        failed,
    }
}

/// One slow connection: how long until the server closed it.
async fn slow_connection(addr: String, trickle: Duration) -> io::Result<Duration> {
    let mut stream = TcpStream::connect(&addr).await?;
    let opened = Instant::now();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
        .await?;
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                // Closed, or an error answer (408/400) then closed.
                Ok(0) | Err(_) => return Ok(opened.elapsed()),
                Ok(_) => continue,
            },
            () = tokio::time::sleep(trickle) => {
                if stream.write_all(b"a").await.is_err() {
                    return Ok(opened.elapsed());
                }
            }
        }
    }
}

// === impl Report ===

impl Report {
    /// The longest time a slow connection was held, `None` if one never
    /// closed.
    pub fn longest_held(&self) -> Option<Duration> {
        self.held
            .iter()
            .try_fold(Duration::ZERO, |max, held| held.map(|h| h.max(max)))
    }

    /// The `q` quantile of the normal requests' latency.
    pub fn normal_quantile(&self, q: f64) -> Duration {
        let mut sorted = self.normal.clone();
        sorted.sort();
        crate::bench::quantile(&sorted, q)
    }

    /// Checks what a server with a `timeout` on request heads must show:
    /// every slow connection closed, none before the timeout (less 10 %)
    /// nor long after it (3 x), no normal request failed and at least ten
    /// answered during the attack.
    ///
    /// # Panics
    ///
    /// Panics, with the summary, when one of those does not hold.
    pub fn assert_cut_off_at(&self, timeout: Duration) {
        let longest = self
            .longest_held()
            .unwrap_or_else(|| panic!("a slow connection was never closed: {}", self.summary()));
        assert!(longest < timeout * 3, "{}", self.summary());
        assert!(
            self.held.iter().flatten().all(|h| *h >= timeout * 9 / 10),
            "some cut before the timeout: {:?}",
            self.held
        );
        assert_eq!(self.failed, 0, "{}", self.summary());
        assert!(self.normal.len() >= 10, "{}", self.summary());
    }

    /// One line of figures, for the test's output.
    pub fn summary(&self) -> String {
        format!(
            "{} slow connections, held at most {:?}; {} normal requests during the attack \
             (p50 {:?}, p99 {:?}, max {:?}), {} failed",
            self.held.len(),
            self.longest_held(),
            self.normal.len(),
            self.normal_quantile(0.5),
            self.normal_quantile(0.99),
            self.normal.iter().max().copied().unwrap_or_default(),
            self.failed,
        )
    }
}
