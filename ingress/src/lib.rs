//! The ingress: the HTTP edge of the connector. It authenticates each push, validates it, and
//! answers 200 only once the whole request is durably on RabbitMQ (DESIGN.md §2.1). It holds
//! no database connection and no shared state, so any number of instances run side by side.
//!
//! A request travels down the tree: [`server`] accepts the connection, [`routes`] reads the
//! request and answers it, [`auth`] proves who sent it, `connector_schema` judges its body, and
//! [`publisher`] puts it on the queue. [`startup`] assembles these from [`config`]; [`probes`]
//! serves the operators' listener.

pub mod auth;
pub mod budget;
pub mod clock;
pub mod config;
pub mod metrics;
pub mod pki;
pub mod probes;
pub mod publisher;
pub mod rate_limit;
pub mod routes;
pub mod server;
pub mod startup;
pub mod state;
