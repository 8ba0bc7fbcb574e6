//! Every data shape the connector exchanges with the outside world and between its own processes.
//!
//! The ingress and the workers both depend on this crate and never on each other: the ingress
//! validates a body with the same code the workers later use to parse it, so what was accepted
//! at the edge is exactly what gets applied.
//!
//! One module per source of the contract (DESIGN.md §3 `corelink`, §4 `bnc`, §5 `paysafe`), the
//! queues and events of §6 (`envelope`, `events`, `topology`), the ingress's seal on what it
//! accepted (`seal`, §2.7) and how it verified it (`verification`), and the validators' shared reading of JSON and text (`json`,
//! `validation`).

pub mod bnc;
pub mod corelink;
pub mod envelope;
pub mod events;
pub mod evidence;
mod json;
pub mod paysafe;
pub mod seal;
pub mod topology;
pub mod validation;
pub mod verification;

/// The PostgreSQL schema, applied by the workers (`connector-workers migrate`, and at start-up).
#[cfg(feature = "sql")]
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub use envelope::{IntakeEnvelope, IntakeKind};
pub use topology::Topology;
pub use verification::{Verification, VerificationScheme};
