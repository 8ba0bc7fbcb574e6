//! Builds and signs every request before the clock starts, so the timed loops measure the
//! ingress (and the broker), never the load tool's own JWS signing.

use anyhow::Context as _;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use connector_ingress::auth::signing::{RequestSigner, SignedHeaders, random_nonce};
use connector_schema::IntakeKind;
use connector_schema::envelope::rfc3339;

/// Route of a single order.
pub const UNIT_PATH: &str = "/callbacks/orders/status";
/// Route of a batch.
pub const BATCH_PATH: &str = "/callbacks/orders/status/batch";

/// The mix of requests to build.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub requests: usize,
    /// Fraction (0..=1) of the requests that are batches, spread evenly over the run.
    pub batch_ratio: f64,
    pub batch_size: usize,
    /// Approximate size of one order's JSON (0 = natural); a batch pads each of its orders.
    pub body_bytes: usize,
}

impl Plan {
    /// Whether request `index` is a batch: the batches are spread evenly, so a prefix of the
    /// run has (about) the same mix as the whole.
    pub fn is_batch(&self, index: usize) -> bool {
        let ratio = self.batch_ratio.clamp(0.0, 1.0);
        let before = (index as f64 * ratio).floor();
        let after = ((index + 1) as f64 * ratio).floor();
        after > before
    }
}

/// One request, signed and ready to send (to the ingress) or publish (to the raw baseline).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub path: &'static str,
    /// The exact signed body bytes.
    pub body: Bytes,
    pub headers: SignedHeaders,
    /// Orders in the body (1 for a unit request).
    pub orders: u64,
    /// Routing key the ingress would publish this request under.
    pub kind: IntakeKind,
}

/// Builds and signs `plan.requests` requests with unique references and idempotency keys, a
/// fresh nonce each, timestamped now.
pub fn prepare(signer: &RequestSigner, plan: &Plan) -> anyhow::Result<Vec<Prepared>> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let run = &run[..12];
    let now = OffsetDateTime::now_utc();
    let processed_at = rfc3339(now.replace_nanosecond(0).unwrap_or(now));
    let mut prepared = Vec::with_capacity(plan.requests);
    for index in 0..plan.requests {
        let key = format!("LOAD-{run}-{index:07}");
        let (path, kind, body, orders) = if plan.is_batch(index) {
            let size = plan.batch_size.max(1);
            let orders: Vec<Value> = (0..size)
                .map(|n| order(&format!("{key}-{n:04}"), &processed_at, plan.body_bytes))
                .collect();
            let body = json!({
                "batch_id": key,
                "sent_at": processed_at,
                "orders": orders,
            });
            (
                BATCH_PATH,
                IntakeKind::CorelinkStatusBatch,
                body,
                size as u64,
            )
        } else {
            let body = order(&key, &processed_at, plan.body_bytes);
            (UNIT_PATH, IntakeKind::CorelinkStatus, body, 1)
        };
        let body = Bytes::from(serde_json::to_vec(&body)?);
        let headers = signer
            .sign(
                path,
                &body,
                &key,
                OffsetDateTime::now_utc(),
                &random_nonce(),
            )
            .with_context(|| format!("signing request {index}"))?;
        prepared.push(Prepared {
            path,
            body,
            headers,
            orders,
            kind,
        });
    }
    Ok(prepared)
}

/// One SUCCESS order for `reference`, padded with an unknown `memo` member (which the ingress
/// ignores) so that its JSON is about `target_bytes` long.
fn order(reference: &str, processed_at: &str, target_bytes: usize) -> Value {
    let mut order = Map::new();
    order.insert("reference".into(), reference.into());
    order.insert("bank_reference".into(), format!("BNK-{reference}").into());
    order.insert("status".into(), "SUCCESS".into());
    order.insert("processed_at".into(), processed_at.into());
    let natural = Value::Object(order.clone()).to_string().len();
    // `,"memo":""` adds ten bytes before the padding itself.
    let overhead = natural + 10;
    if target_bytes > overhead {
        order.insert("memo".into(), "x".repeat(target_bytes - overhead).into());
    }
    Value::Object(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_spread_evenly() {
        let plan = Plan {
            requests: 10,
            batch_ratio: 0.5,
            batch_size: 3,
            body_bytes: 0,
        };
        let batches: Vec<bool> = (0..10).map(|i| plan.is_batch(i)).collect();
        assert_eq!(batches.iter().filter(|b| **b).count(), 5);
        assert!(batches.windows(2).all(|w| w[0] != w[1]), "{batches:?}");
        let none = Plan {
            batch_ratio: 0.0,
            ..plan
        };
        assert!((0..10).all(|i| !none.is_batch(i)));
        let all = Plan {
            batch_ratio: 1.0,
            ..plan
        };
        assert!((0..10).all(|i| all.is_batch(i)));
    }

    #[test]
    fn memo_pads_an_order_to_the_requested_size() {
        let natural = order("PAY-1", "2025-11-19T07:09:30Z", 0).to_string();
        assert!(!natural.contains("memo"));
        let padded = order("PAY-1", "2025-11-19T07:09:30Z", 1024).to_string();
        assert_eq!(padded.len(), 1024);
        let small = order("PAY-1", "2025-11-19T07:09:30Z", 10).to_string();
        assert_eq!(small, natural);
    }
}
