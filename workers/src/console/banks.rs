//! The per-bank view: for each bank (client), what it sent in the last 24 hours and with which
//! outcome, what of it is held in quarantine, how long its orders took from the first
//! notification to a final status, and its orders still PENDING by age; Paysafe items still
//! non-final by age. Requests the ingress refused are not rows anywhere (the ingress keeps no
//! state): their codes come from Prometheus (`console.prometheus_url`), which scrapes every
//! ingress's `connector_ingress_refusals_by_sender_total`.
//!
//! Every query reads a bounded slice: the last day's partitions, the quarantine, or (for the
//! PENDING orders, which no index covers) a scan stopped after a few seconds.

use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use maud::{Markup, html};
use serde::Deserialize;

use crate::console::ConsoleState;
use crate::console::error::ConsoleError;
use crate::console::page;
use crate::console::session::SignedIn;

/// Each bank's refusals of the last day, by route and code, summed over every ingress.
const REFUSALS_QUERY: &str =
    "sum by (sender, route, code) (increase(connector_ingress_refusals_by_sender_total[1d])) > 0";
/// Prometheus is asked with this bound: a slow one must not hold the page.
const PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(3);

/// The PENDING-orders scan gives up after this, and the page says so.
const PENDING_SCAN_TIMEOUT: &str = "3s";

/// Age buckets for things still waiting, as SQL `CASE` labels.
const AGE_BUCKETS: &str = "CASE WHEN age < interval '1 hour' THEN '< 1 h'
                               WHEN age < interval '1 day' THEN '1 h – 1 d'
                               WHEN age < interval '7 days' THEN '1 – 7 d'
                               ELSE '≥ 7 d' END";

pub async fn overview(
    State(state): State<ConsoleState>,
    who: SignedIn,
) -> Result<Markup, ConsoleError> {
    let pool = &state.pool;
    let received: Vec<(Option<String>, String, String, i64)> = sqlx::query_as(
        "SELECT client_id, kind, outcome, count(*) FROM received_messages
         WHERE processed_at > now() - interval '1 day'
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    .fetch_all(pool)
    .await?;
    let held: Vec<(Option<String>, String, i64)> = sqlx::query_as(
        "SELECT client_id, reason, count(*) FROM quarantined_messages WHERE state = 'held'
         GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await?;
    // Orders whose final status was recorded in the last day: from the order's creation (its
    // first notification) to that record.
    let to_final: Vec<(String, i64, f64, f64)> = sqlx::query_as(
        "SELECT h.client_id, count(*),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM h.recorded_at - o.created_at)),
                percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM h.recorded_at - o.created_at))
         FROM order_history h JOIN orders o ON o.reference = h.reference
         WHERE h.recorded_at > now() - interval '1 day'
           AND h.effect IN ('created', 'applied') AND h.status IN ('SUCCESS', 'FAILED')
         GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    let pending = pending_orders(&state).await?;
    let paysafe: Vec<(String, String, i64)> = sqlx::query_as(&format!(
        "SELECT kind, {AGE_BUCKETS}, count(*) FROM
           (SELECT kind, now() - created_at AS age FROM paysafe_items WHERE tracking = 'polling') i
         GROUP BY 1, 2 ORDER BY 1, 2"
    ))
    .fetch_all(pool)
    .await?;
    let refusals = match &state.settings.prometheus_url {
        Some(url) => Some(refusals(url).await.map_err(|error| format!("{error:#}"))),
        None => None,
    };
    let client = |c: &Option<String>| c.clone().unwrap_or_else(|| "-".into());
    let body = html! {
        h2 { "Refused in the last 24 hours" }
        @match &refusals {
            Some(Ok(rows)) => table id="refusals" {
                tr { th { "Bank" } th { "Route" } th { "Code" } th { "Requests" } }
                @for row in rows { tr { td { (row.sender) } td { (row.route) } td { (row.code) } td { (format!("{:.0}", row.requests)) } } }
            },
            Some(Err(error)) => p.flash.error id="refusals-unavailable" { "Prometheus did not answer: " (error) },
            None => p.muted id="refusals-unavailable" {
                "Refused requests are counted by the ingress, not stored: set console.prometheus_url "
                "to see them here, or see connector_ingress_refusals_by_sender_total (dashboard “Connector ingress”)."
            },
        }
        h2 { "Accepted in the last 24 hours" }
        table id="received" {
            tr { th { "Bank" } th { "Kind" } th { "Outcome" } th { "Messages" } }
            @for (c, kind, outcome, n) in &received { tr { td { (client(c)) } td { (kind) } td { (outcome) } td { (n) } } }
        }
        h2 { "Held in quarantine" }
        table id="held" {
            tr { th { "Bank" } th { "Reason" } th { "Messages" } }
            @for (c, reason, n) in &held {
                tr { td { (client(c)) } td { a href={ "/quarantine?reason=" (reason) "&client=" (client(c)) } { (reason) } } td { (n) } }
            }
        }
        h2 { "From first notification to final status (finals of the last 24 hours)" }
        table id="to-final" {
            tr { th { "Bank" } th { "Orders" } th { "Median" } th { "95th percentile" } }
            @for (c, n, p50, p95) in &to_final { tr { td { (c) } td { (n) } td { (seconds(*p50)) } td { (seconds(*p95)) } } }
        }
        h2 { "Orders still PENDING, by age" }
        @match &pending {
            Some(rows) => table id="pending" {
                tr { th { "Bank" } th { "Age" } th { "Orders" } }
                @for (c, age, n) in rows { tr { td { (c) } td { (age) } td { (n) } } }
            },
            None => p.muted { "Not counted: more orders than a " (PENDING_SCAN_TIMEOUT) " scan reads." },
        }
        h2 { "Paysafe items still PROCESSING (polled), by age" }
        table id="paysafe-open" {
            tr { th { "Kind" } th { "Age" } th { "Items" } }
            @for (kind, age, n) in &paysafe { tr { td { (kind) } td { (age) } td { (n) } } }
        }
    };
    Ok(page::layout("Banks", &who, body))
}

/// One bank's refusals of one code on one route.
#[derive(Debug)]
struct Refusals {
    sender: String,
    route: String,
    code: String,
    requests: f64,
}

#[derive(Debug, Deserialize)]
struct QueryAnswer {
    data: QueryData,
}

#[derive(Debug, Deserialize)]
struct QueryData {
    result: Vec<Sample>,
}

#[derive(Debug, Deserialize)]
struct Sample {
    metric: std::collections::HashMap<String, String>,
    /// `[time, "value"]`
    value: (f64, String),
}

/// [`REFUSALS_QUERY`], asked of the Prometheus at `url`; most first.
async fn refusals(url: &str) -> anyhow::Result<Vec<Refusals>> {
    let answer: QueryAnswer = reqwest::Client::new()
        .get(format!("{}/api/v1/query", url.trim_end_matches('/')))
        .query(&[("query", REFUSALS_QUERY)])
        .timeout(PROMETHEUS_TIMEOUT)
        .send()
        .await
        .with_context(|| format!("asking {url}"))?
        .error_for_status()?
        .json()
        .await
        .context("reading Prometheus's answer")?;
    let label = |sample: &Sample, name: &str| sample.metric.get(name).cloned().unwrap_or_default();
    let mut rows: Vec<Refusals> = answer
        .data
        .result
        .iter()
        .map(|sample| Refusals {
            sender: label(sample, "sender"),
            route: label(sample, "route"),
            code: label(sample, "code"),
            requests: sample.value.1.parse().unwrap_or(f64::NAN),
        })
        .collect();
    rows.sort_by(|a, b| b.requests.total_cmp(&a.requests));
    Ok(rows)
}

/// PENDING orders by bank and age, or `None` when the scan took longer than allowed.
async fn pending_orders(
    state: &ConsoleState,
) -> anyhow::Result<Option<Vec<(String, String, i64)>>> {
    let mut tx = state.pool.begin().await?;
    sqlx::query(&format!(
        "SET LOCAL statement_timeout = '{PENDING_SCAN_TIMEOUT}'"
    ))
    .execute(&mut *tx)
    .await?;
    let rows = sqlx::query_as(&format!(
        "SELECT client_id, {AGE_BUCKETS}, count(*) FROM
           (SELECT client_id, now() - created_at AS age FROM orders WHERE status = 'PENDING') o
         GROUP BY 1, 2 ORDER BY 1, 2"
    ))
    .fetch_all(&mut *tx)
    .await;
    match rows {
        Ok(rows) => Ok(Some(rows)),
        // 57014: canceled by statement_timeout.
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("57014") => Ok(None),
        Err(error) => Err(error.into()),
    }
}

fn seconds(secs: f64) -> String {
    if secs < 120.0 {
        format!("{secs:.1} s")
    } else {
        format!("{:.1} min", secs / 60.0)
    }
}
