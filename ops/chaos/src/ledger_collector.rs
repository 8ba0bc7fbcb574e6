//! The ledger's stand-in during a soak: a consumer that takes every event off the ledger queue
//! as the ledger would, so that half an hour of events does not pile up in RabbitMQ's memory
//! and skew what the soak measures; the checks get every message it took.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::verify::LedgerMessage;

/// Consumes the ledger queue during the run, as the ledger would, so that it does not pile up
/// in RabbitMQ's memory; the checks get every message it took.
#[derive(Debug)]
pub struct LedgerCollector {
    stop: watch::Sender<bool>,
    taken: Arc<AtomicUsize>,
    task: JoinHandle<anyhow::Result<Vec<LedgerMessage>>>,
}

impl LedgerCollector {
    pub async fn start(amqp_url: &str, queue: &str) -> anyhow::Result<Self> {
        let connection = Connection::connect(amqp_url, ConnectionProperties::default())
            .await
            .context("connecting the ledger collector")?;
        let channel = connection.create_channel().await?;
        // No acknowledgements: every message the broker sends is taken, and after the cancel
        // the stream ends behind the last one sent.
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                "fault-harness-ledger".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let (stop, mut stopped) = watch::channel(false);
        let taken = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&taken);
        let task = tokio::spawn(async move {
            let mut messages = Vec::new();
            loop {
                tokio::select! {
                    delivery = consumer.next() => match delivery {
                        Some(delivery) => {
                            let delivery = delivery?;
                            messages.push(LedgerMessage::parse(&delivery.properties, &delivery.data));
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                        None => anyhow::bail!("the ledger consumer was cancelled by the broker"),
                    },
                    _ = stopped.changed() => break,
                }
            }
            channel
                .basic_cancel("fault-harness-ledger".into(), BasicCancelOptions::default())
                .await?;
            while let Ok(Some(delivery)) =
                tokio::time::timeout(Duration::from_secs(5), consumer.next()).await
            {
                let delivery = delivery?;
                messages.push(LedgerMessage::parse(&delivery.properties, &delivery.data));
            }
            let _ = connection.close(200, "done".into()).await;
            Ok(messages)
        });
        Ok(Self { stop, taken, task })
    }

    pub fn taken(&self) -> usize {
        self.taken.load(Ordering::Relaxed)
    }

    pub async fn finish(self) -> anyhow::Result<Vec<LedgerMessage>> {
        let _ = self.stop.send(true);
        self.task.await?
    }
}
