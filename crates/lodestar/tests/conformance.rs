//! The backend conformance suite against the in-process registry
//! (`lodestar::memory`); see `lodestar_test_support::conformance`.

use std::sync::Arc;

use lodestar::{Registry, memory::MemoryRegistry};
use lodestar_test_support::conformance::{Backend, Capability};

/// One in-memory registry; every client is a clone sharing its map.
#[derive(Debug, Default)]
struct Memory {
    registry: MemoryRegistry,
}

async fn memory() -> Memory {
    Memory::default()
}

// === impl Memory ===

impl Backend for Memory {
    fn name(&self) -> &str {
        "memory"
    }

    async fn connect(&self) -> Arc<dyn Registry> {
        Arc::new(self.registry.clone())
    }

    fn lacks(&self, capability: Capability) -> Option<&'static str> {
        match capability {
            Capability::Garbage => {
                Some("the map holds parsed Instances: a record that does not parse cannot be in it")
            }
            Capability::Outage => Some("in-process: the registry cannot be unreachable"),
            Capability::RestartEmpty => {
                Some("in-process: no process to restart; its data lives as long as it does")
            }
            Capability::FailOver => Some("one map in one process: there is no other node"),
            _ => None,
        }
    }
}

lodestar_test_support::conformance_suite!(memory);
