//! The load tools' parts, one module each, shared by the three binaries in `src/bin/`:
//! `corelink-load` (the ingress under load, against publishing straight to RabbitMQ),
//! `pipeline-bench` (apply throughput against plain SQL, and end-to-end latency) and
//! `poller-bench` (the Paysafe poller against the simulator).

pub mod bench;
pub mod broker_baseline;
pub mod ingress;
pub mod prepare;
pub mod procstat;
pub mod stats;
