//! Publishing from the admin commands (a quarantine release, a dead-letter replay, a Paysafe
//! track command): persistent, mandatory and confirmed, as the ingress publishes, so a command
//! that reports success has put its message durably on the broker.

use anyhow::bail;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

use crate::broker;

/// Publishes persistent and mandatory, and waits for the broker's confirm.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> anyhow::Result<()> {
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            properties,
        )
        .await?
        .await?;
    match confirm {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
            bail!(
                "unroutable: {} {}",
                returned.reply_code,
                returned.reply_text
            )
        }
        Confirmation::Nack(None) | Confirmation::NotRequested => {
            bail!("the broker refused the message")
        }
    }
}

/// A channel in confirm mode for the commands that publish.
pub async fn confirm_channel(url: &str) -> anyhow::Result<(Connection, Channel)> {
    let connection = broker::connect(url, "admin").await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok((connection, channel))
}
