//! The backend conformance suite: what every lodestar registry backend
//! must do, written once and run against memory, etcd and `lodestar://`.
//!
//! A backend's test file implements [`Backend`] (fresh clients of one
//! registry, plus the faults it can inject) and invokes
//! [`conformance_suite!`](crate::conformance_suite), which makes one
//! `#[tokio::test]` per case in a `suite` module. Each case is a public
//! `async fn` of this module taking `&mut impl Backend`, so a test file can
//! also run one case against a backend configured differently (an etcd
//! cluster for [`revisions_only_grow_across_fail_overs`]).
//!
//! A case that needs a fault or feature calls [`require`] first. It is
//! skipped only when the backend declares, through [`Backend::lacks`], that
//! it lacks that [`Capability`], with a reason; a capability it does not
//! declare lacking must be implemented, or the case fails. Every case
//! prints to stderr (uncaptured) whether it ran or was skipped and why.
//!
//! The cases:
//!
//! | case | needs |
//! | --- | --- |
//! | [`register_is_visible_with_its_fields_intact`] | |
//! | [`services_do_not_see_each_other`] | |
//! | [`deregister_removes_the_record_at_once`] | |
//! | [`dropping_the_handle_removes_the_record`] | |
//! | [`registration_state_follows_the_handle`] | |
//! | [`admin_deregister_removes_any_record_and_says_whether_there_was_one`] | |
//! | [`a_live_owner_registers_again_after_an_admin_deregister`] | |
//! | [`admin_deregister_loses_none_of_the_owners_other_records`] | |
//! | [`invalid_instances_are_refused`] | |
//! | [`revisions_only_grow_across_changes`] | |
//! | [`a_watch_is_latest_wins_after_a_burst`] | |
//! | [`garbage_records_are_skipped_and_counted`] | [`Capability::Garbage`] |
//! | [`subscribers_are_listed_while_subscribed`] | [`Capability::Subscribers`] |
//! | [`a_watch_and_a_registration_resume_after_an_outage`] | [`Capability::Outage`] |
//! | [`revisions_only_grow_across_an_outage`] | [`Capability::Outage`] |
//! | [`registrations_come_back_after_the_registry_restarts_empty`] | [`Capability::RestartEmpty`] |
//! | [`revisions_only_grow_when_the_registry_restarts_empty`] | [`Capability::RestartEmpty`] |
//! | [`revisions_only_grow_across_fail_overs`] | [`Capability::FailOver`] |
//! | [`set_takes_an_instance_down_and_up_again`] | |
//! | [`set_merges_over_the_override_in_force`] | |
//! | [`set_of_an_unknown_instance_writes_nothing`] | |
//! | [`clear_puts_the_owners_record_back`] | |
//! | [`an_override_outlives_the_owners_restart`] | [`Capability::LastingOverrides`] |
//!
//! Every wait is bounded ([`PATIENCE`]); nothing asserts how fast anything
//! happens.
//!
//! # Examples
//!
//! ```no_run
//! use std::sync::Arc;
//! use lodestar::{memory::MemoryRegistry, Registry};
//! use lodestar_test_support::conformance::{Backend, Capability};
//!
//! #[derive(Debug, Default)]
//! struct Memory(MemoryRegistry);
//!
//! impl Backend for Memory {
//!     fn name(&self) -> &str {
//!         "memory"
//!     }
//!
//!     async fn connect(&self) -> Arc<dyn Registry> {
//!         Arc::new(self.0.clone())
//!     }
//!
//!     fn lacks(&self, capability: Capability) -> Option<&'static str> {
//!         match capability {
//!             Capability::Subscribers => None,
//!             _ => Some("an in-process map has no faults"),
//!         }
//!     }
//! }
//!
//! async fn memory() -> Memory {
//!     Memory::default()
//! }
//!
//! lodestar_test_support::conformance_suite!(memory);
//! # fn main() {}
//! ```

mod backend;
mod cases;
mod faults;
mod follow;
mod overrides;

pub use self::backend::{Backend, Capability, Outcome, Skipped, report, require};
pub use self::cases::*;
pub use self::faults::*;
pub use self::follow::PATIENCE;
pub use self::overrides::*;

/// Makes one `#[tokio::test]` per conformance case, in a module `suite`,
/// each running its case against a fresh backend from `$make` (an async
/// function or closure returning a
/// [`Backend`](crate::conformance::Backend), resolved from the invoking
/// module).
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::conformance_suite!(@cases $make;
            register_is_visible_with_its_fields_intact,
            services_do_not_see_each_other,
            deregister_removes_the_record_at_once,
            dropping_the_handle_removes_the_record,
            registration_state_follows_the_handle,
            admin_deregister_removes_any_record_and_says_whether_there_was_one,
            a_live_owner_registers_again_after_an_admin_deregister,
            admin_deregister_loses_none_of_the_owners_other_records,
            invalid_instances_are_refused,
            revisions_only_grow_across_changes,
            a_watch_is_latest_wins_after_a_burst,
            garbage_records_are_skipped_and_counted,
            subscribers_are_listed_while_subscribed,
            a_watch_and_a_registration_resume_after_an_outage,
            revisions_only_grow_across_an_outage,
            registrations_come_back_after_the_registry_restarts_empty,
            revisions_only_grow_when_the_registry_restarts_empty,
            revisions_only_grow_across_fail_overs,
            set_takes_an_instance_down_and_up_again,
            set_merges_over_the_override_in_force,
            set_of_an_unknown_instance_writes_nothing,
            clear_puts_the_owners_record_back,
            an_override_outlives_the_owners_restart,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        mod suite {
            #[allow(unused_imports)]
            use super::*;

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let mut backend = ($make)().await;
                    let outcome = $crate::conformance::$case(&mut backend).await;
                    $crate::conformance::report(stringify!($case), &backend, outcome);
                }
            )*
        }
    };
}
