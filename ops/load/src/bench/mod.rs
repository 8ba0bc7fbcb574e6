//! The parts of `pipeline-bench`, one module each, plus the throw-away environment they run in
//! and the tables they print. Kept apart from `corelink-load`'s modules: the two tools share
//! nothing but the crate.

pub mod apply;
pub mod capacity;
pub mod env;
pub mod latency;
pub mod pipeline;
pub mod report;
pub mod sql_baseline;
pub mod workload;
