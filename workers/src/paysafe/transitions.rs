//! The state machine of a Paysafe item (DESIGN.md §5): which status may follow which, which
//! ledger event a final status emits, and when to poll again. Pure functions, so every rule is
//! tested without a database.

use std::time::Duration;

use connector_schema::events::EventType;
use connector_schema::paysafe::{PaysafeStatus, TrackedKind};

use crate::config::PaysafeSettings;

/// What an observation does to the item's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The item was not tracked: it is now.
    Created,
    /// The status moved forward.
    Applied,
    /// Already so.
    Unchanged,
    /// Older than what we know (a late or out-of-order webhook): ignored.
    Stale,
    /// A standalone credit failed or was cancelled after COMPLETED.
    Reversed,
}

impl Effect {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Applied => "applied",
            Self::Unchanged => "unchanged",
            Self::Stale => "stale",
            Self::Reversed => "reversed",
        }
    }
}

/// What we know of an item before the observation.
#[derive(Debug, Clone, Copy)]
pub struct Known {
    pub status: PaysafeStatus,
    /// The credit was COMPLETED and then reversed: a late COMPLETED is old news.
    pub reversed: bool,
}

/// How far along a non-final status is, so a late PROCESSING never overwrites PENDING.
fn progress(status: PaysafeStatus) -> u8 {
    match status {
        PaysafeStatus::Received => 0,
        PaysafeStatus::Initiated => 1,
        PaysafeStatus::Processing => 2,
        PaysafeStatus::Pending | PaysafeStatus::Held => 3,
        _ => 4,
    }
}

fn is_failure(status: PaysafeStatus) -> bool {
    status.is_final() && status != PaysafeStatus::Completed
}

/// The state machine of §5. `Err` is a contradiction between two final statuses: quarantined
/// (a webhook) or reported (a poll), never applied.
pub fn transition(
    kind: TrackedKind,
    known: Option<Known>,
    new: PaysafeStatus,
) -> Result<Effect, PaysafeStatus> {
    let Some(known) = known else {
        return Ok(Effect::Created);
    };
    let current = known.status;
    if !current.is_final() {
        return Ok(if new.is_final() || progress(new) > progress(current) {
            Effect::Applied
        } else if new == current {
            Effect::Unchanged
        } else {
            Effect::Stale
        });
    }
    if !new.is_final() {
        return Ok(Effect::Stale);
    }
    if new == current {
        return Ok(Effect::Unchanged);
    }
    match (kind, current, new) {
        // One failure reported two ways (FAILED, then CANCELLED or EXPIRED): one fact.
        (_, c, n) if is_failure(c) && is_failure(n) => Ok(Effect::Unchanged),
        (
            TrackedKind::StandaloneCredit,
            PaysafeStatus::Completed,
            PaysafeStatus::Failed | PaysafeStatus::Cancelled,
        ) => Ok(Effect::Reversed),
        (TrackedKind::StandaloneCredit, _, PaysafeStatus::Completed) if known.reversed => {
            Ok(Effect::Stale)
        }
        _ => Err(current),
    }
}

/// The ledger event a final status (or a reversal) emits.
#[doc(hidden)]
pub fn event_type(kind: TrackedKind, status: PaysafeStatus, effect: Effect) -> Option<EventType> {
    if effect == Effect::Reversed {
        return Some(EventType::PaysafeCreditReversed);
    }
    if !matches!(effect, Effect::Created | Effect::Applied) || !status.is_final() {
        return None;
    }
    Some(match (kind, status) {
        (TrackedKind::Payment, PaysafeStatus::Completed) => EventType::PaysafePaymentCompleted,
        (TrackedKind::Payment, _) => EventType::PaysafePaymentFailed,
        (TrackedKind::StandaloneCredit, PaysafeStatus::Completed) => {
            EventType::PaysafeCreditCompleted
        }
        (TrackedKind::StandaloneCredit, _) => EventType::PaysafeCreditFailed,
    })
}

/// Delay before the next poll of an item polled `attempts` times without a final answer:
/// exponential with jitter, computed with the `backoff` crate (RUSTSEC-2025-0012 flags it as
/// unmaintained; it only computes delays here) and persisted as the next poll time.
pub fn poll_delay(settings: &PaysafeSettings, attempts: u32) -> Duration {
    use backoff::backoff::Backoff as _;
    let max = Duration::from_secs(settings.max_poll_interval_secs);
    let mut schedule = backoff::ExponentialBackoffBuilder::new()
        .with_initial_interval(settings.first_poll_after().min(max))
        .with_multiplier(settings.backoff_multiplier)
        .with_randomization_factor(settings.backoff_jitter)
        .with_max_interval(max)
        .with_max_elapsed_time(None)
        .build();
    // The interval reaches its cap within a few dozen steps whatever the settings.
    for _ in 0..attempts.min(64) {
        schedule.next_backoff();
    }
    schedule.next_backoff().unwrap_or(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use PaysafeStatus::{Cancelled, Completed, Expired, Failed, Pending, Processing};
    use TrackedKind::{Payment, StandaloneCredit as Credit};

    fn known(status: PaysafeStatus) -> Option<Known> {
        Some(Known {
            status,
            reversed: false,
        })
    }

    #[test]
    fn statuses_only_move_forward_and_finals_never_change() {
        assert_eq!(transition(Payment, None, Processing), Ok(Effect::Created));
        assert_eq!(
            transition(Payment, known(Processing), Pending),
            Ok(Effect::Applied)
        );
        assert_eq!(
            transition(Payment, known(Pending), Processing),
            Ok(Effect::Stale)
        );
        assert_eq!(
            transition(Payment, known(Pending), Pending),
            Ok(Effect::Unchanged)
        );
        assert_eq!(
            transition(Payment, known(Pending), Completed),
            Ok(Effect::Applied)
        );
        assert_eq!(
            transition(Payment, known(Completed), Completed),
            Ok(Effect::Unchanged)
        );
        assert_eq!(
            transition(Payment, known(Completed), Processing),
            Ok(Effect::Stale)
        );
        assert_eq!(
            transition(Payment, known(Completed), Failed),
            Err(Completed)
        );
        assert_eq!(transition(Payment, known(Failed), Completed), Err(Failed));
        assert_eq!(
            transition(Payment, known(Failed), Expired),
            Ok(Effect::Unchanged)
        );
    }

    #[test]
    fn a_credit_failing_after_completion_is_reversed_once() {
        assert_eq!(
            transition(Credit, known(Completed), Failed),
            Ok(Effect::Reversed)
        );
        assert_eq!(
            transition(Credit, known(Completed), Cancelled),
            Ok(Effect::Reversed)
        );
        let reversed = Some(Known {
            status: Failed,
            reversed: true,
        });
        assert_eq!(transition(Credit, reversed, Completed), Ok(Effect::Stale));
        assert_eq!(transition(Credit, reversed, Failed), Ok(Effect::Unchanged));
        assert_eq!(transition(Credit, known(Failed), Completed), Err(Failed));
    }

    #[test]
    fn each_final_fact_has_its_event() {
        use EventType::*;
        let cases = [
            (
                Payment,
                Completed,
                Effect::Applied,
                Some(PaysafePaymentCompleted),
            ),
            (
                Payment,
                Expired,
                Effect::Created,
                Some(PaysafePaymentFailed),
            ),
            (
                Credit,
                Completed,
                Effect::Applied,
                Some(PaysafeCreditCompleted),
            ),
            (
                Credit,
                Cancelled,
                Effect::Applied,
                Some(PaysafeCreditFailed),
            ),
            (
                Credit,
                Failed,
                Effect::Reversed,
                Some(PaysafeCreditReversed),
            ),
            (Payment, Completed, Effect::Unchanged, None),
            (Payment, Pending, Effect::Applied, None),
        ];
        for (kind, status, effect, expected) in cases {
            assert_eq!(
                event_type(kind, status, effect),
                expected,
                "{kind:?} {status} {effect:?}"
            );
        }
    }

    #[test]
    fn poll_delays_grow_with_jitter_up_to_the_cap() {
        let settings = PaysafeSettings {
            first_poll_after_secs: 60,
            max_poll_interval_secs: 3_600,
            backoff_jitter: 0.3,
            ..PaysafeSettings::default()
        };
        let first = poll_delay(&settings, 0).as_secs_f64();
        assert!((42.0..=78.0).contains(&first), "{first}");
        let third = poll_delay(&settings, 2).as_secs_f64();
        assert!((168.0..=312.0).contains(&third), "{third}");
        let late = poll_delay(&settings, 40).as_secs_f64();
        assert!((2_520.0..=4_680.0).contains(&late), "{late}");
        let spread: std::collections::BTreeSet<u128> = (0..20)
            .map(|_| poll_delay(&settings, 3).as_millis())
            .collect();
        assert!(spread.len() > 1, "jitter spreads items out");
    }
}
