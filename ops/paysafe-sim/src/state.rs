//! The simulator's memory: scripted items, their progression, fault queues and the counters a
//! test asserts on. One mutex, never held across an `.await`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use connector_schema::paysafe::{GatewayResponse, PaysafeTransaction, TrackedKind};
use serde::Serialize;
use time::OffsetDateTime;

use crate::script::{Fault, ItemScript, ScriptError};

/// What a test reads about one id (all GETs to it since the last reset, whatever the script).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemStats {
    /// Authenticated GETs of this id (every answer: 200, injected faults, 404).
    pub polls: u64,
    /// GETs answered 200 with the item.
    pub answered: u64,
    /// GETs answered by an injected error (429, 500, ...).
    pub faulted: u64,
    /// GETs of this id being served right now.
    pub in_flight: u64,
    /// The most GETs of this id ever served at once: 1 proves no two pollers overlapped.
    pub max_concurrent: u64,
    /// The status the next 200 answer carries, when the id is scripted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_status: Option<String>,
}

/// Simulator-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GlobalStats {
    /// GETs refused for missing or wrong credentials.
    pub unauthorized: u64,
    /// Authenticated GETs of any id.
    pub polls: u64,
    /// The most authenticated GETs ever served at once, over all ids.
    pub max_concurrent: u64,
    pub items: HashMap<String, ItemStats>,
}

/// A fault with what is left of its count (`None`: forever).
#[derive(Debug, Clone)]
struct ActiveFault {
    fault: Fault,
    remaining: Option<u32>,
}

fn queue(faults: Vec<Fault>) -> VecDeque<ActiveFault> {
    faults
        .into_iter()
        .map(|fault| ActiveFault {
            remaining: fault.count(),
            fault,
        })
        .collect()
}

/// Takes one use of the front fault.
fn take(queue: &mut VecDeque<ActiveFault>) -> Option<Fault> {
    let front = queue.front_mut()?;
    let fault = front.fault.clone();
    if let Some(remaining) = &mut front.remaining {
        *remaining = remaining.saturating_sub(1);
        if *remaining == 0 {
            queue.pop_front();
        }
    }
    Some(fault)
}

#[derive(Debug)]
struct Item {
    script: ItemScript,
    step: usize,
    served_in_step: u32,
    faults: VecDeque<ActiveFault>,
    created_at: OffsetDateTime,
    step_since: OffsetDateTime,
}

impl Item {
    fn new(script: ItemScript, now: OffsetDateTime) -> Self {
        Self {
            faults: queue(script.faults.clone()),
            script,
            step: 0,
            served_in_step: 0,
            created_at: now,
            step_since: now,
        }
    }

    fn current_status(&self) -> Option<&str> {
        self.script.steps.get(self.step).map(|s| s.status.as_str())
    }

    /// The 200 answer, advancing the progression.
    fn answer(&mut self, now: OffsetDateTime) -> PaysafeTransaction {
        let last = self.script.steps.len().saturating_sub(1);
        let step = self.script.steps.get(self.step).cloned();
        let status = step.as_ref().map(|s| s.status.clone()).unwrap_or_default();
        let transaction = PaysafeTransaction {
            id: self.script.id.clone(),
            status,
            merchant_ref_num: Some(self.script.merchant_ref_num.clone()),
            amount: Some(self.script.amount),
            currency_code: Some(self.script.currency_code.clone()),
            payment_type: Some("INTERAC_ETRANSFER".to_owned()),
            txn_time: Some(paysafe_time(self.created_at)),
            updated_time: Some(paysafe_time(self.step_since)),
            status_time: Some(paysafe_time(self.step_since)),
            gateway_response: Some(GatewayResponse {
                id: Some(gateway_id(&self.script.id)),
                processor: Some("INTERAC".to_owned()),
                status: Some("AVAILABLE".to_owned()),
            }),
            error: step.as_ref().and_then(|s| s.error.clone()),
        };
        self.served_in_step += 1;
        if let Some(polls) = step.and_then(|s| s.polls)
            && self.served_in_step >= polls
            && self.step < last
        {
            self.step += 1;
            self.served_in_step = 0;
            self.step_since = now;
        }
        transaction
    }
}

/// A stable, Paysafe-looking gateway id derived from the item id.
fn gateway_id(id: &str) -> String {
    let digest: u64 = id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("Gw{digest:016x}")
}

/// Paysafe's time format: RFC 3339 in UTC, whole seconds (`2021-10-06T13:20:18Z`).
pub fn paysafe_time(t: OffsetDateTime) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.to_offset(time::UtcOffset::UTC)
        .format(format)
        .unwrap_or_default()
}

#[derive(Debug, Default)]
struct Inner {
    items: HashMap<String, Item>,
    global_faults: VecDeque<ActiveFault>,
    stats: HashMap<String, ItemStats>,
    unauthorized: u64,
    polls: u64,
    in_flight: u64,
    max_concurrent: u64,
}

/// Shared by the HTTP handlers and [`crate::SimHandle`].
#[derive(Debug, Clone, Default)]
pub struct SimState {
    inner: Arc<Mutex<Inner>>,
}

impl SimState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates or replaces the script of `script.id`: the progression restarts at its first
    /// step with the script's own faults; the id's counters are kept (see [`Self::reset`]).
    pub fn set_script(&self, script: ItemScript) -> Result<(), ScriptError> {
        script.validate()?;
        let id = script.id.clone();
        self.lock()
            .items
            .insert(id, Item::new(script, OffsetDateTime::now_utc()));
        Ok(())
    }

    pub fn script(&self, id: &str) -> Option<ItemScript> {
        self.lock().items.get(id).map(|item| item.script.clone())
    }

    pub fn remove_script(&self, id: &str) -> bool {
        self.lock().items.remove(id).is_some()
    }

    /// Appends faults to an item's queue without touching its progression.
    pub fn add_faults(&self, id: &str, faults: Vec<Fault>) -> Result<(), ScriptError> {
        faults.iter().try_for_each(Fault::validate)?;
        let mut inner = self.lock();
        let item = inner
            .items
            .get_mut(id)
            .ok_or_else(|| ScriptError::new(format!("no item `{id}`")))?;
        item.faults.extend(queue(faults));
        Ok(())
    }

    /// Replaces the faults that apply to every GET (before any item's own).
    pub fn set_global_faults(&self, faults: Vec<Fault>) -> Result<(), ScriptError> {
        faults.iter().try_for_each(Fault::validate)?;
        self.lock().global_faults = queue(faults);
        Ok(())
    }

    /// Forgets every script, fault and counter.
    pub fn reset(&self) {
        *self.lock() = Inner::default();
    }

    pub fn stats(&self, id: &str) -> ItemStats {
        let inner = self.lock();
        let mut stats = inner.stats.get(id).cloned().unwrap_or_default();
        stats.current_status = inner
            .items
            .get(id)
            .and_then(|item| item.current_status().map(str::to_owned));
        stats
    }

    pub fn global_stats(&self) -> GlobalStats {
        let inner = self.lock();
        let mut items = inner.stats.clone();
        for (id, item) in &inner.items {
            items.entry(id.clone()).or_default().current_status =
                item.current_status().map(str::to_owned);
        }
        GlobalStats {
            unauthorized: inner.unauthorized,
            polls: inner.polls,
            max_concurrent: inner.max_concurrent,
            items,
        }
    }

    pub(crate) fn record_unauthorized(&self) {
        self.lock().unauthorized += 1;
    }

    /// Counts a GET of `id` as started; the guard counts it as finished when dropped (also
    /// when the client gave up and the handler was cancelled mid-delay).
    pub(crate) fn begin(&self, id: &str) -> InFlight {
        let mut inner = self.lock();
        inner.polls += 1;
        inner.in_flight += 1;
        inner.max_concurrent = inner.max_concurrent.max(inner.in_flight);
        let stats = inner.stats.entry(id.to_owned()).or_default();
        stats.polls += 1;
        stats.in_flight += 1;
        stats.max_concurrent = stats.max_concurrent.max(stats.in_flight);
        InFlight {
            state: self.clone(),
            id: id.to_owned(),
        }
    }

    /// The next injected fault for a GET of `id`: global faults first, then the item's.
    pub(crate) fn next_fault(&self, id: &str) -> Option<Fault> {
        let mut inner = self.lock();
        if let Some(fault) = take(&mut inner.global_faults) {
            return Some(fault);
        }
        inner
            .items
            .get_mut(id)
            .and_then(|item| take(&mut item.faults))
    }

    /// The 200 answer for a GET of `id` under `kind`'s collection (after faults and delays),
    /// advancing its progression; `None` when no such item is scripted (404).
    pub(crate) fn answer(&self, kind: TrackedKind, id: &str) -> Option<PaysafeTransaction> {
        let mut inner = self.lock();
        let item = inner
            .items
            .get_mut(id)
            .filter(|item| item.script.kind == kind)?;
        let transaction = item.answer(OffsetDateTime::now_utc());
        inner.stats.entry(id.to_owned()).or_default().answered += 1;
        Some(transaction)
    }

    pub(crate) fn record_faulted(&self, id: &str) {
        self.lock().stats.entry(id.to_owned()).or_default().faulted += 1;
    }
}

/// A GET in flight; see [`SimState::begin`].
#[derive(Debug)]
pub(crate) struct InFlight {
    state: SimState,
    id: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut inner = self.state.lock();
        inner.in_flight = inner.in_flight.saturating_sub(1);
        if let Some(stats) = inner.stats.get_mut(&self.id) {
            stats.in_flight = stats.in_flight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::Step;

    fn payment(steps: Vec<Step>) -> ItemScript {
        ItemScript::new(TrackedKind::Payment, "p", "m", 1, "CAD", steps)
    }

    fn status(state: &SimState) -> String {
        state.answer(TrackedKind::Payment, "p").unwrap().status
    }

    #[test]
    fn progression_and_sticky_last_step() {
        let state = SimState::default();
        state
            .set_script(payment(vec![
                Step::new("PROCESSING", Some(2)),
                Step::new("COMPLETED", Some(1)),
                Step::new("FAILED", Some(5)),
            ]))
            .unwrap();
        let seen: Vec<_> = (0..6).map(|_| status(&state)).collect();
        assert_eq!(
            seen,
            [
                "PROCESSING",
                "PROCESSING",
                "COMPLETED",
                "FAILED",
                "FAILED",
                "FAILED"
            ]
        );
        assert!(state.answer(TrackedKind::StandaloneCredit, "p").is_none());
    }

    #[test]
    fn faults_are_consumed_in_order_global_first() {
        let state = SimState::default();
        state
            .set_script(
                payment(vec![Step::new("PROCESSING", None)]).with_faults(vec![
                    Fault::ServerError { count: Some(1) },
                    Fault::RateLimit {
                        count: Some(2),
                        retry_after_secs: None,
                    },
                ]),
            )
            .unwrap();
        state
            .set_global_faults(vec![Fault::Unauthorized { count: Some(1) }])
            .unwrap();
        let kinds: Vec<_> = (0..5)
            .map(|_| match state.next_fault("p") {
                Some(Fault::Unauthorized { .. }) => "401",
                Some(Fault::ServerError { .. }) => "500",
                Some(Fault::RateLimit { .. }) => "429",
                Some(_) => "other",
                None => "none",
            })
            .collect();
        assert_eq!(kinds, ["401", "500", "429", "429", "none"]);
    }

    #[test]
    fn in_flight_guard_tracks_max() {
        let state = SimState::default();
        let a = state.begin("p");
        let b = state.begin("p");
        drop(a);
        let c = state.begin("p");
        drop((b, c));
        let stats = state.stats("p");
        assert_eq!(
            (stats.polls, stats.in_flight, stats.max_concurrent),
            (3, 0, 2)
        );
    }

    #[test]
    fn time_format() {
        let t = OffsetDateTime::from_unix_timestamp(1_633_526_418).unwrap();
        assert_eq!(paysafe_time(t), "2021-10-06T13:20:18Z");
    }
}
