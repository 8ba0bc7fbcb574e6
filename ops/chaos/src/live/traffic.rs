//! The run's traffic, every kind the dashboards and alerts count: Corelink unit and batch
//! callbacks signed by the bank (and refused ones: a bad signature, a stale timestamp, an
//! unknown client, a replayed nonce), a BNC account-binding callback signed by the partner, a
//! Paysafe webhook sent by the simulator, Paysafe track commands, and messages published
//! straight to the intake exchange that no worker may apply (unreadable, forged). Each answer
//! is checked: an unexpected one fails the run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection};
use reqwest::StatusCode;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use connector_chaos::bodies::order_json;
use connector_ingress::auth::signing::{RequestSigner, random_nonce};
use connector_ingress::auth::snap::sign as snap_sign;
use connector_schema::bnc::{headers as names, string_to_sign};

use crate::configs::BNC_CLIENT_KEY;

pub const UNIT: &str = "/callbacks/orders/status";
pub const BATCH: &str = "/callbacks/orders/status/batch";
const BNC: &str = "/callbacks/bnc/account-binding";

/// How a Corelink request is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Send {
    Valid,
    /// Signed over another body: 401 SIGNATURE_INVALID.
    BadSignature,
    /// Signed an hour ago: 401 TIMESTAMP_OUT_OF_WINDOW.
    Stale,
    /// Under a client id the ingress does not know: 401 UNKNOWN_CLIENT.
    UnknownClient,
    /// Sent twice with one nonce: the second is 409 NONCE_REPLAYED (the status returned).
    Replayed,
}

#[derive(Debug)]
pub struct Traffic {
    http: reqwest::Client,
    url: String,
    signer: RequestSigner,
    bnc_private_pem: Vec<u8>,
    run_id: String,
    seq: AtomicU64,
}

impl Traffic {
    pub fn new(
        url: String,
        signer: RequestSigner,
        bnc_private_pem: Vec<u8>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            url,
            signer,
            bnc_private_pem,
            run_id: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
            seq: AtomicU64::new(0),
        })
    }

    /// A reference unique to this run.
    pub fn reference(&self, what: &str) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("LIVE-{}-{what}{n}", self.run_id)
    }

    /// One Corelink POST; returns the answer's status.
    pub async fn corelink(
        &self,
        path: &str,
        key: &str,
        body: &str,
        how: Send,
    ) -> anyhow::Result<StatusCode> {
        let nonce = random_nonce();
        let at = match how {
            Send::Stale => OffsetDateTime::now_utc() - time::Duration::hours(1),
            _ => OffsetDateTime::now_utc(),
        };
        let signed_body = match how {
            Send::BadSignature => format!("{body} "),
            _ => body.to_owned(),
        };
        let signed = self
            .signer
            .sign(path, signed_body.as_bytes(), key, at, &nonce)?;
        let attempts = if how == Send::Replayed { 2 } else { 1 };
        let mut status = StatusCode::OK;
        for _ in 0..attempts {
            let mut request = self
                .http
                .post(format!("{}{path}", self.url))
                .body(body.to_owned());
            for (name, value) in signed.pairs() {
                let value = if name == "X-Client-Id" && how == Send::UnknownClient {
                    "BANK_NOBODY"
                } else {
                    value
                };
                request = request.header(name, value);
            }
            status = request
                .send()
                .await
                .with_context(|| format!("POST {path}"))?
                .status();
        }
        Ok(status)
    }

    /// A Corelink request that must get `expected`.
    pub async fn expect(
        &self,
        path: &str,
        key: &str,
        body: &str,
        how: Send,
        expected: StatusCode,
    ) -> anyhow::Result<()> {
        let status = self.corelink(path, key, body, how).await?;
        if status != expected {
            bail!("{path} ({how:?}, key {key}): answered {status}, expected {expected}");
        }
        Ok(())
    }

    /// An accepted unit callback for a new order.
    pub async fn unit(&self, reference: &str, status: &str) -> anyhow::Result<()> {
        self.expect(
            UNIT,
            reference,
            &order_json(reference, status),
            Send::Valid,
            StatusCode::OK,
        )
        .await
    }

    /// An accepted batch of `size` new orders.
    pub async fn batch(&self, size: usize) -> anyhow::Result<()> {
        let key = self.reference("B");
        let orders: Vec<String> = (0..size)
            .map(|i| order_json(&format!("{key}-{i}"), "SUCCESS"))
            .collect();
        let body = format!(
            r#"{{"batch_id": "{key}", "sent_at": "2025-11-19T07:15:00Z", "orders": [{}]}}"#,
            orders.join(", ")
        );
        self.expect(BATCH, &key, &body, Send::Valid, StatusCode::OK)
            .await
    }

    /// One refused request of each kind (and the accepted first half of the replay), and a BNC
    /// callback with a bad signature.
    pub async fn refused(&self) -> anyhow::Result<()> {
        let reference = self.reference("R");
        let body = order_json(&reference, "SUCCESS");
        for (how, expected) in [
            (Send::BadSignature, StatusCode::UNAUTHORIZED),
            (Send::Stale, StatusCode::UNAUTHORIZED),
            (Send::UnknownClient, StatusCode::UNAUTHORIZED),
            (Send::Replayed, StatusCode::CONFLICT),
        ] {
            self.expect(UNIT, &reference, &body, how, expected).await?;
        }
        let status = self.bnc(false).await?;
        if status != StatusCode::UNAUTHORIZED {
            bail!("a BNC callback signed over another body: answered {status}, expected 401");
        }
        Ok(())
    }

    /// A signed BNC account binding; `valid: false` signs another body (401 4010000).
    pub async fn bnc(&self, valid: bool) -> anyhow::Result<StatusCode> {
        let partner_reference = self.reference("BNC");
        let body = format!(
            r#"{{"accountCurrency": "IDR", "accountNo": "585945******2348", "accountTransactionLimit": 500000.00, "additionalInfo": {{"userId": "8881701", "token": "c9fead3d790f41d4819456ebc13f2910", "bindStatus": "1"}}, "partnerReferenceNo": "{partner_reference}"}}"#
        );
        let timestamp = OffsetDateTime::now_utc()
            .to_offset(time::UtcOffset::from_hms(7, 0, 0)?)
            .replace_nanosecond(0)?
            .format(&Rfc3339)?;
        // Invalid: signed over another partner reference (whitespace would not do: the
        // string to sign is over the minified body).
        let signed = if valid {
            body.clone()
        } else {
            body.replace(&partner_reference, "SOMEONE-ELSE")
        };
        let to_sign = string_to_sign("POST", BNC, signed.as_bytes(), &timestamp)
            .context("the BNC body is not JSON")?;
        let signature = snap_sign(&self.bnc_private_pem, &to_sign)?;
        let external_id = format!("{}", self.seq.fetch_add(1, Ordering::Relaxed) + 1_000_000);
        let answer = self
            .http
            .post(format!("{}{BNC}", self.url))
            .header("Content-Type", "application/json")
            .header(names::X_TIMESTAMP, &timestamp)
            .header(names::X_CLIENT_KEY, BNC_CLIENT_KEY)
            .header(names::X_SIGNATURE, signature)
            .header(names::X_EXTERNAL_ID, external_id)
            .header(names::CHANNEL_ID, "95221")
            .body(body)
            .send()
            .await
            .context("POST the BNC callback")?;
        Ok(answer.status())
    }
}

/// Publishes `count` messages straight to the intake exchange, as someone who should not: with
/// `typed`, a well-formed type property that disagrees with the routing key (a forgery, counted
/// `type_mismatch`); without, a body that is no intake envelope (unreadable). Both must be
/// dead-lettered.
pub async fn publish_to_intake(
    connection: &Connection,
    exchange: &str,
    typed: Option<&str>,
    count: usize,
) -> anyhow::Result<()> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    for i in 0..count {
        let mut properties = BasicProperties::default()
            .with_message_id(format!("ops-live-{}-{i}", typed.unwrap_or("unreadable")).into())
            .with_delivery_mode(2);
        if let Some(kind) = typed {
            properties = properties.with_type(kind.into());
        }
        let confirm = channel
            .basic_publish(
                exchange.into(),
                "corelink.status".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                b"not an intake envelope",
                properties,
            )
            .await?
            .await?;
        if !confirm.is_ack() {
            bail!("the broker did not confirm a message to {exchange}");
        }
    }
    let _ = channel.close(200, "done".into()).await;
    Ok(())
}
