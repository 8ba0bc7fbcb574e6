//! Process plumbing every connector binary needs the same way: layered configuration with
//! errors that name the key, structured logs, one Prometheus recorder per process, and the
//! shutdown signal. It knows nothing of payments; `ingress` and `workers` both use it and still
//! never depend on each other.

pub mod config;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;
