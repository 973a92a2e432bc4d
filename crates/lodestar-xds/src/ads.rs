//! The Aggregated Discovery Service, state of the world: one [`Session`] per
//! stream keeps what its client subscribed to, per resource type, and
//! answers it; [`Ads`] is the tonic service driving sessions over streams.
//!
//! The protocol, as the xDS spec has it:
//!
//! - A response carries a version (per type, per stream, counting up) and a
//!   nonce (unique on the stream). A request that echoes the last nonce
//!   acknowledges it (ACK) or, with `error_detail`, rejects it (NACK): a
//!   NACK is logged with the client's reason and nothing is resent, so the
//!   client keeps the last resources it accepted until the service changes
//!   again. A request echoing an older nonce is stale and ignored.
//! - A client gets only what it names: Listeners by service, Clusters and
//!   ClusterLoadAssignments by lane. A type is answered once every service
//!   its names need has been read from the registry (a state-of-the-world
//!   answer leaving a listener out would tell the client it does not exist).
//! - A change is pushed to every stream subscribed to the service: each
//!   session holds an [`Interest`](crate::hub::Interest) per service, and
//!   only the types whose resources changed are sent.
//! - The first request must carry the node; a type this server does not
//!   serve ends the stream with `INVALID_ARGUMENT` naming it; incremental
//!   (delta) xDS is `UNIMPLEMENTED`.

mod session;
mod stream;

pub use session::{Kind, Session};
pub use stream::Ads;
