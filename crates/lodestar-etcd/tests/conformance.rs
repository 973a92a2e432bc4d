//! The backend conformance suite against real etcd; see
//! `lodestar_test_support::conformance`. Every case runs on a single node;
//! the fail-over case, which needs several members, also runs on a
//! three-member cluster.

use std::sync::Arc;

use lodestar::Registry;
use lodestar_etcd::EtcdRegistry;
use lodestar_test_support::conformance::{self, Backend, Capability};
use lodestar_test_support::{EtcdCluster, EtcdNode};

/// The TTL of every client's registrations: short, so records lost in a
/// fault come back well within the suite's patience.
const TTL: &str = "2s";

/// etcd behind the suite: one node, or a cluster for fail-overs.
#[derive(Debug)]
struct Etcd {
    members: Members,
}

#[derive(Debug)]
enum Members {
    Single(EtcdNode),
    /// Fail-overs kill member `next`, after restarting the one `down`.
    Cluster {
        cluster: EtcdCluster,
        next: usize,
        down: Option<usize>,
    },
}

async fn single() -> Etcd {
    Etcd {
        members: Members::Single(EtcdNode::start().await),
    }
}

async fn cluster() -> Etcd {
    Etcd {
        members: Members::Cluster {
            cluster: EtcdCluster::start(3).await,
            next: 0,
            down: None,
        },
    }
}

lodestar_test_support::conformance_suite!(single);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_only_grow_across_fail_overs_on_a_cluster() {
    let mut backend = cluster().await;
    let outcome = conformance::revisions_only_grow_across_fail_overs(&mut backend).await;
    conformance::report("revisions_only_grow_across_fail_overs", &backend, outcome);
}

// === impl Etcd ===

impl Etcd {
    fn url(&self) -> String {
        match &self.members {
            Members::Single(node) => node.url(),
            Members::Cluster { cluster, .. } => cluster.url(),
        }
    }

    async fn client(&self) -> EtcdRegistry {
        let url = format!("{}?ttl={TTL}", self.url());
        EtcdRegistry::connect(url.parse().expect("an etcd URL"))
            .await
            .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
    }

    fn node(&mut self) -> &mut EtcdNode {
        match &mut self.members {
            Members::Single(node) => node,
            Members::Cluster { .. } => panic!("a single-node fault asked of a cluster"),
        }
    }
}

impl Backend for Etcd {
    fn name(&self) -> &str {
        match self.members {
            Members::Single(_) => "etcd",
            Members::Cluster { .. } => "etcd cluster",
        }
    }

    async fn connect(&self) -> Arc<dyn Registry> {
        Arc::new(self.client().await)
    }

    fn lacks(&self, capability: Capability) -> Option<&'static str> {
        match (&self.members, capability) {
            (Members::Single(_), Capability::FailOver) => Some(
                "a single member has no other to fail over to: this case runs on a \
                 three-member cluster in revisions_only_grow_across_fail_overs_on_a_cluster",
            ),
            (Members::Cluster { .. }, Capability::Outage | Capability::RestartEmpty) => Some(
                "the cluster backend is for fail-overs; outages and restarts run on a single node",
            ),
            _ => None,
        }
    }

    /// A value that is not JSON, put straight under the service's prefix.
    async fn write_garbage(&mut self, service: &str, key: &str) {
        let key = format!("/lodestar/services/{service}/{key}");
        self.client()
            .await
            .client()
            .put(key.as_str(), "{not json", None)
            .await
            .unwrap_or_else(|e| panic!("putting garbage at {key}: {e}"));
    }

    /// SIGKILL; the data stays on disk.
    async fn outage(&mut self) {
        self.node().kill();
    }

    /// The same node on the same ports with its data.
    async fn restore(&mut self) {
        self.node().restart().await;
    }

    async fn restart_empty(&mut self) {
        self.node().restart_empty().await;
    }

    /// Kills each member in turn (a client's connections may be on any of
    /// them), restarting the previous one first so a quorum remains.
    async fn fail_over(&mut self) {
        let Members::Cluster {
            cluster,
            next,
            down,
        } = &mut self.members
        else {
            panic!("fail_over on a single node");
        };
        if let Some(i) = down.take() {
            cluster.restart(i).await;
        }
        cluster.kill(*next);
        cluster.wait_for_leader().await;
        *down = Some(*next);
        *next = (*next + 1) % cluster.nodes().len();
    }
}
