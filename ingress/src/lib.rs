//! The ingress: the HTTP edge of the connector. It authenticates each push, validates it, and
//! answers 200 only once the whole request is durably on RabbitMQ (DESIGN.md §2.1). It holds
//! no database connection and no shared state, so any number of instances run side by side.

pub mod bnc;
pub mod body;
pub mod clock;
pub mod config;
pub mod corelink;
pub mod error;
pub mod forwarded;
pub mod jws;
pub mod keys;
pub mod metrics;
pub mod ops;
pub mod paysafe;
pub mod pki;
pub mod publisher;
pub mod rate_limit;
pub mod replay;
pub mod signing;
pub mod snap;
pub mod startup;
pub mod state;
pub mod tls;
