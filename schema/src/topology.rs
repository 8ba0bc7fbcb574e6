//! The AMQP topology (DESIGN.md §6), declared idempotently by every process at start-up so
//! that no process depends on another having run first.
//!
//! All names derive from one prefix (`connector` in production) so that tests, or two
//! environments sharing a broker, each get their own exchanges and queues.

use std::time::Duration;

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};
use serde::{Deserialize, Serialize};

use crate::envelope::IntakeKind;

/// Default bound on the intake and ledger queues (messages). Far above any healthy backlog
/// (the soak never saw more than a few dozen), far below what fills a broker's memory alarm.
pub const DEFAULT_MAX_LENGTH: u32 = 1_000_000;

/// Knobs on the queues' arguments. Changing one on an existing queue makes RabbitMQ refuse
/// the declaration (PRECONDITION_FAILED); change them through a policy, or migrate the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueOptions {
    /// Deliveries of one message before the broker dead-letters it (`x-delivery-limit`). It
    /// guards against poison messages that crash a worker; transient failures are retried by
    /// the worker while it holds the message, so they do not burn it.
    pub delivery_limit: u32,
    /// Bound on the intake queue's length (`x-max-length`). With `reject-publish` overflow
    /// the broker nacks further publishes, and the ingress answers 503 so senders retry
    /// later instead of the broker running out of memory or disk. `None`: no argument (a
    /// policy may bound the queue instead).
    pub intake_max_length: Option<u32>,
    /// The same for the ledger queue: a stalled ledger consumer turns into nacks to the relay,
    /// whose events stay in the outbox and are retried, never into a broker alarm.
    pub ledger_max_length: Option<u32>,
    /// Deletes an unused queue after this long (`x-expires`): set for throw-away topologies
    /// (tests, benches, the local check), whose abandoned queues then go even when their run
    /// was killed, and which alone `connector-workers topology delete` agrees to delete.
    /// Production leaves it unset.
    pub expires: Option<Duration>,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            delivery_limit: 10,
            intake_max_length: Some(DEFAULT_MAX_LENGTH),
            ledger_max_length: Some(DEFAULT_MAX_LENGTH),
            expires: None,
        }
    }
}

/// The `[topology]` configuration section. Every process declares the exchanges and queues it
/// uses, and RabbitMQ refuses a declaration whose arguments differ from the existing queue's,
/// so this section must be identical in the configuration of every process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopologySettings {
    /// Prefix of every exchange and queue name (`connector` → `connector.intake`).
    pub prefix: String,
    /// `x-delivery-limit` of the intake queue.
    pub intake_delivery_limit: u32,
    /// `x-max-length` of the intake queue (`reject-publish`); 0 declares no limit argument
    /// (for a queue declared before the limit existed, bounded by a policy instead).
    pub intake_max_length: u32,
    /// `x-max-length` of the ledger queue (`reject-publish`); 0 as above.
    pub ledger_max_length: u32,
    /// `x-expires` of every queue: only for throw-away environments (tests, previews).
    pub queue_expires_secs: Option<u64>,
}

impl Default for TopologySettings {
    fn default() -> Self {
        Self {
            prefix: Topology::DEFAULT_PREFIX.into(),
            intake_delivery_limit: QueueOptions::default().delivery_limit,
            intake_max_length: DEFAULT_MAX_LENGTH,
            ledger_max_length: DEFAULT_MAX_LENGTH,
            queue_expires_secs: None,
        }
    }
}

impl TopologySettings {
    pub fn topology(&self) -> Topology {
        Topology::with_prefix(
            &self.prefix,
            QueueOptions {
                delivery_limit: self.intake_delivery_limit,
                intake_max_length: (self.intake_max_length > 0).then_some(self.intake_max_length),
                ledger_max_length: (self.ledger_max_length > 0).then_some(self.ledger_max_length),
                expires: self.queue_expires_secs.map(Duration::from_secs),
            },
        )
    }

    /// The name of the first invalid key (relative to the section) and why.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.prefix.is_empty() || self.prefix.len() > 200 {
            return Err(("prefix", "must be 1..200 characters"));
        }
        if self.intake_delivery_limit == 0 {
            return Err(("intake_delivery_limit", "must be greater than 0"));
        }
        Ok(())
    }
}

/// Exchange and queue names plus queue options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Topic exchange the ingress publishes to, routing key = [`IntakeKind::routing_key`].
    pub intake_exchange: String,
    /// Quorum queue the apply workers consume.
    pub intake_queue: String,
    /// Direct exchange every dead-lettered message goes through.
    pub dead_letter_exchange: String,
    /// Where intake messages that exhausted their deliveries, or were rejected, end up.
    pub intake_dead_letter_queue: String,
    /// Topic exchange of ledger events, routing key = `event_type`.
    pub ledger_exchange: String,
    /// The default consumer queue of ledger events, bound to `#`.
    pub ledger_queue: String,
    pub ledger_dead_letter_queue: String,
    pub options: QueueOptions,
}

impl Topology {
    /// Production prefix.
    pub const DEFAULT_PREFIX: &'static str = "connector";

    pub fn with_prefix(prefix: &str, options: QueueOptions) -> Self {
        Self {
            intake_exchange: format!("{prefix}.intake"),
            intake_queue: format!("{prefix}.intake"),
            dead_letter_exchange: format!("{prefix}.dlx"),
            intake_dead_letter_queue: format!("{prefix}.intake.dlq"),
            ledger_exchange: format!("{prefix}.ledger"),
            ledger_queue: format!("{prefix}.ledger.events"),
            ledger_dead_letter_queue: format!("{prefix}.ledger.dlq"),
            options,
        }
    }

    /// The intake exchange, its quorum queue bound to every intake routing key, and its
    /// dead-letter path. What the ingress needs before it may answer 200.
    pub async fn declare_intake(&self, channel: &Channel) -> lapin::Result<()> {
        self.declare_dead_letter_queue(channel, &self.intake_dead_letter_queue)
            .await?;
        self.declare_exchange(channel, &self.intake_exchange, ExchangeKind::Topic)
            .await?;
        let mut arguments = self.dead_lettering_arguments(&self.intake_dead_letter_queue);
        if let Some(max) = self.options.intake_max_length {
            arguments.insert("x-max-length".into(), int(max));
        }
        self.declare_quorum_queue(channel, &self.intake_queue, arguments)
            .await?;
        for kind in IntakeKind::ALL {
            bind(
                channel,
                &self.intake_queue,
                &self.intake_exchange,
                kind.routing_key(),
            )
            .await?;
        }
        Ok(())
    }

    /// The ledger exchange, its default queue bound to `#`, and that queue's dead-letter path.
    pub async fn declare_ledger(&self, channel: &Channel) -> lapin::Result<()> {
        self.declare_dead_letter_queue(channel, &self.ledger_dead_letter_queue)
            .await?;
        self.declare_exchange(channel, &self.ledger_exchange, ExchangeKind::Topic)
            .await?;
        let mut arguments = self.dead_lettering_arguments(&self.ledger_dead_letter_queue);
        if let Some(max) = self.options.ledger_max_length {
            arguments.insert("x-max-length".into(), int(max));
        }
        self.declare_quorum_queue(channel, &self.ledger_queue, arguments)
            .await?;
        bind(channel, &self.ledger_queue, &self.ledger_exchange, "#").await
    }

    /// Deletes every queue and exchange of this topology, and the messages on them: the end of
    /// a throw-away topology, never production's. Missing ones are fine (RabbitMQ's deletes are
    /// idempotent, and a part declares only what it uses).
    pub async fn delete(&self, channel: &Channel) -> lapin::Result<()> {
        for queue in [
            &self.intake_queue,
            &self.intake_dead_letter_queue,
            &self.ledger_queue,
            &self.ledger_dead_letter_queue,
        ] {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await?;
        }
        for exchange in [
            &self.intake_exchange,
            &self.ledger_exchange,
            &self.dead_letter_exchange,
        ] {
            channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(())
    }

    /// Arguments of a queue that dead-letters into `dead_letter_queue`, at least once.
    fn dead_lettering_arguments(&self, dead_letter_queue: &str) -> FieldTable {
        let mut arguments = FieldTable::default();
        arguments.insert("x-delivery-limit".into(), int(self.options.delivery_limit));
        arguments.insert(
            "x-dead-letter-exchange".into(),
            string(&self.dead_letter_exchange),
        );
        arguments.insert(
            "x-dead-letter-routing-key".into(),
            string(dead_letter_queue),
        );
        // Quorum queues dead-letter at most once unless told otherwise; at-least-once keeps a
        // message in the source queue until the dead-letter queue has confirmed it, and needs
        // reject-publish overflow.
        arguments.insert("x-dead-letter-strategy".into(), string("at-least-once"));
        arguments.insert("x-overflow".into(), string("reject-publish"));
        arguments
    }

    async fn declare_dead_letter_queue(&self, channel: &Channel, queue: &str) -> lapin::Result<()> {
        self.declare_exchange(channel, &self.dead_letter_exchange, ExchangeKind::Direct)
            .await?;
        self.declare_quorum_queue(channel, queue, FieldTable::default())
            .await?;
        bind(channel, queue, &self.dead_letter_exchange, queue).await
    }

    async fn declare_exchange(
        &self,
        channel: &Channel,
        name: &str,
        kind: ExchangeKind,
    ) -> lapin::Result<()> {
        let options = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(name.into(), kind, options, FieldTable::default())
            .await
    }

    async fn declare_quorum_queue(
        &self,
        channel: &Channel,
        queue: &str,
        mut arguments: FieldTable,
    ) -> lapin::Result<()> {
        arguments.insert("x-queue-type".into(), string("quorum"));
        if let Some(expires) = self.options.expires {
            let millis = u32::try_from(expires.as_millis()).unwrap_or(u32::MAX);
            arguments.insert("x-expires".into(), int(millis));
        }
        let options = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(queue.into(), options, arguments)
            .await
            .map(drop)
    }
}

async fn bind(channel: &Channel, queue: &str, exchange: &str, key: &str) -> lapin::Result<()> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

fn string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn int(n: u32) -> AMQPValue {
    AMQPValue::LongInt(i32::try_from(n).unwrap_or(i32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_names_are_the_contract_names() {
        let t = Topology::with_prefix(Topology::DEFAULT_PREFIX, QueueOptions::default());
        assert_eq!(t.intake_exchange, "connector.intake");
        assert_eq!(t.dead_letter_exchange, "connector.dlx");
        assert_eq!(t.intake_dead_letter_queue, "connector.intake.dlq");
        assert_eq!(t.ledger_exchange, "connector.ledger");
        assert_eq!(t.ledger_queue, "connector.ledger.events");
        assert_eq!(t.ledger_dead_letter_queue, "connector.ledger.dlq");
    }

    #[test]
    fn both_queues_are_bounded_by_default_and_zero_leaves_it_to_a_policy() {
        let bounded = TopologySettings::default().topology().options;
        assert_eq!(bounded.intake_max_length, Some(DEFAULT_MAX_LENGTH));
        assert_eq!(bounded.ledger_max_length, Some(DEFAULT_MAX_LENGTH));
        let by_policy = TopologySettings {
            intake_max_length: 0,
            ledger_max_length: 0,
            ..TopologySettings::default()
        }
        .topology()
        .options;
        assert_eq!(by_policy.intake_max_length, None);
        assert_eq!(by_policy.ledger_max_length, None);
    }
}
