//! What the fault harness shares with the end-to-end tests: the services it starts on its own
//! ports (a PostgreSQL instance or a Patroni cluster, RabbitMQ nodes), so a test that must raise
//! a broker alarm or shorten a broker timeout does it on a node of its own, never on the
//! shared one; and the Corelink body both send (`bodies`).

pub mod bodies;
pub mod postgres_ha;
pub mod services;
