//! The end-to-end tests, against the real RabbitMQ and PostgreSQL: one binary (the whole stack
//! linked once, not once per file), one module per area of the contract. Each test makes its
//! own database and topology, so they run in parallel, and deletes them when it ends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod apply_groups;
mod apply_plans;
mod apply_units_together;
mod bank_integration;
mod behind_proxy;
mod bnc_callbacks;
mod body_limits;
mod broker_alarms;
mod broker_faults;
mod broker_users;
mod console;
mod console_browser;
mod corelink_ingress;
mod data_lifecycle;
mod database_outage;
mod evidence_archive;
mod hostile_inputs;
mod http2_limits;
mod key_rotation;
mod lifecycle_heartbeat;
mod log_pipes;
mod mtls;
mod outbox_claims;
mod paysafe_amounts;
mod paysafe_https;
mod paysafe_poll_groups;
mod paysafe_tracking;
mod paysafe_tracking_outage;
mod paysafe_webhooks;
mod pooled_connections;
mod production_mode;
mod quarantine_review;
mod slow_clients;
mod standby;
mod trust_boundaries;
mod verification_facts;
mod worker_faults;
mod workers_pipeline;
mod workers_process;
