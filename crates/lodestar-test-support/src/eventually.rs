//! Bounded polling for conditions that become true asynchronously.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often [`eventually`] re-checks.
const POLL: Duration = Duration::from_millis(20);

/// Polls `check` every 20 ms until it returns `true`.
///
/// The wait is bounded: a `check` still running at the deadline is
/// abandoned. Uses tokio's clock, so it works under paused time.
///
/// # Panics
///
/// Panics with `timed out after {timeout:?} waiting for {what}` if `check`
/// is not `true` within `timeout`.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() {
/// use std::time::Duration;
/// use lodestar_test_support::{eventually, EtcdNode};
///
/// let mut etcd = EtcdNode::start().await;
/// etcd.kill();
/// eventually("etcd to be unhealthy", Duration::from_secs(5), || async {
///     !etcd.is_healthy().await
/// })
/// .await;
/// # }
/// ```
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(true) = tokio::time::timeout_at(deadline, check()).await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_once_the_check_passes() {
        let mut calls = 0;
        eventually("the third call", Duration::from_secs(1), || {
            calls += 1;
            let done = calls == 3;
            async move { done }
        })
        .await;
        assert_eq!(calls, 3);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "timed out after 100ms waiting for nothing")]
    async fn panics_at_the_deadline() {
        eventually("nothing", Duration::from_millis(100), || async { false }).await;
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "timed out after 1s waiting for a hung check")]
    async fn abandons_a_hung_check() {
        eventually("a hung check", Duration::from_secs(1), std::future::pending).await;
    }
}
