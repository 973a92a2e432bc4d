//! A multi-member etcd cluster on loopback, for leader-loss and
//! member-restart tests.

use std::fmt::Write as _;

use tokio::time::Instant;

use crate::node::{self, EtcdNode, POLL, STARTUP_TIMEOUT};

/// Several etcd processes forming one cluster (3 is typical), each an
/// [`EtcdNode`] with its own ports, data dir and log.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() {
/// use lodestar_test_support::EtcdCluster;
///
/// let mut cluster = EtcdCluster::start(3).await;
/// let url = cluster.url(); // "etcd://127.0.0.1:A,127.0.0.1:B,127.0.0.1:C"
/// let old = cluster.leader().await;
/// cluster.kill(old);
/// let new = cluster.leader().await;
/// assert_ne!(old, new);
/// cluster.restart(old).await;
/// # }
/// ```
#[derive(Debug)]
pub struct EtcdCluster {
    nodes: Vec<EtcdNode>,
}

// === impl EtcdCluster ===

impl EtcdCluster {
    /// Starts an `n`-member cluster and waits until every member is healthy
    /// and a leader is elected.
    ///
    /// # Panics
    ///
    /// Panics if `n` is 0, or (quoting the failing member's log) if the
    /// cluster is not up within the startup bound of 20 seconds.
    pub async fn start(n: usize) -> EtcdCluster {
        assert!(n > 0, "an etcd cluster needs at least one member");
        let cluster = EtcdCluster {
            nodes: node::start_members(n).await,
        };
        cluster.wait_for_leader().await;
        cluster
    }

    /// Every member's client address, `127.0.0.1:PORT`, by index.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(EtcdNode::client_addr).collect()
    }

    /// All members as one lodestar URL, `etcd://127.0.0.1:A,127.0.0.1:B,...`.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoints().join(","))
    }

    /// Member `i`.
    ///
    /// # Panics
    ///
    /// Panics if `i` is out of range.
    pub fn node(&self, i: usize) -> &EtcdNode {
        &self.nodes[i]
    }

    /// Member `i`, for faults not wrapped here.
    ///
    /// # Panics
    ///
    /// Panics if `i` is out of range.
    pub fn node_mut(&mut self, i: usize) -> &mut EtcdNode {
        &mut self.nodes[i]
    }

    /// All members, by index.
    pub fn nodes(&self) -> &[EtcdNode] {
        &self.nodes
    }

    /// The index of the current leader.
    ///
    /// Asks every running member for its status and trusts the answer with
    /// the highest raft term, retrying until that names a running member:
    /// right after the leader is killed, followers still name it for up to
    /// an election timeout.
    ///
    /// # Panics
    ///
    /// Panics if no leader is found within 20 seconds.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let (leader, views) = self.find_leader().await;
            if let Some(i) = leader {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "no etcd leader among running members after {STARTUP_TIMEOUT:?}; statuses:{views}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until every running member is healthy and a leader is known.
    ///
    /// # Panics
    ///
    /// Panics if that does not happen within 20 seconds.
    pub async fn wait_for_leader(&self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let unhealthy = self.unhealthy().await;
            if unhealthy.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "etcd members {unhealthy:?} not healthy after {STARTUP_TIMEOUT:?}"
            );
            tokio::time::sleep(POLL).await;
        }
        self.leader().await;
    }

    /// Kills member `i` with SIGKILL; the others carry on (and elect a new
    /// leader if it was the leader and a quorum remains).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Restarts member `i` with its data, so it rejoins the cluster, and
    /// waits until every running member is healthy and a leader is known.
    pub async fn restart(&mut self, i: usize) {
        self.nodes[i].restart().await;
        self.wait_for_leader().await;
    }

    /// The leader's index if the freshest view names a running member, and
    /// every view for a panic message.
    async fn find_leader(&self) -> (Option<usize>, String) {
        let mut statuses = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if node.spawned() {
                if let Some(status) = node.status().await {
                    statuses.push((i, status));
                }
            }
        }
        let mut views = String::new();
        for (i, s) in &statuses {
            let _ = write!(
                views,
                "\n  node{i}: id {} leader {} term {}",
                s.member_id, s.leader, s.raft_term
            );
        }
        // Raft elects at most one leader per term, so the newest term wins.
        let freshest = statuses
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.leader != "0")
            .max_by_key(|s| s.raft_term);
        let leader = freshest.and_then(|view| {
            statuses
                .iter()
                .find(|(_, s)| s.member_id == view.leader)
                .map(|(i, _)| *i)
        });
        (leader, views)
    }

    /// Indexes of running members that are not healthy.
    async fn unhealthy(&self) -> Vec<usize> {
        let mut unhealthy = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if node.spawned() && !node.is_healthy().await {
                unhealthy.push(i);
            }
        }
        unhealthy
    }
}
