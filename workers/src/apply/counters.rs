//! The apply role's counters, exported at zero when it starts (`metrics::at_zero` says why).

use connector_schema::IntakeKind;

use crate::metrics::{self, FORGED_REASONS, MESSAGE_OUTCOMES};
use crate::quarantine::QuarantineReason;

/// Messages by kind and outcome (a message of no known kind can only be refused), forged
/// messages by reason, quarantined ones by reason, and what applying reveals.
pub fn export_at_zero() {
    // Not paused: the gauge is there from the start, so a panel shows the 0 before the 1.
    metrics::apply_paused(false);
    for kind in IntakeKind::ALL {
        for outcome in MESSAGE_OUTCOMES {
            let labels = [("kind", kind.routing_key()), ("outcome", outcome)];
            metrics::at_zero(metrics::MESSAGES_TOTAL, &labels);
        }
    }
    for outcome in ["dead_lettered", "forged"] {
        let labels = [("kind", super::UNKNOWN_KIND), ("outcome", outcome)];
        metrics::at_zero(metrics::MESSAGES_TOTAL, &labels);
    }
    for reason in FORGED_REASONS {
        metrics::at_zero(metrics::FORGED_TOTAL, &[("reason", reason)]);
    }
    for reason in QuarantineReason::ALL {
        metrics::at_zero(metrics::QUARANTINED_TOTAL, &[("reason", reason.as_str())]);
    }
    for name in [
        metrics::TRANSIENT_RETRIES_TOTAL,
        metrics::APPLY_GROUP_SPLITS_TOTAL,
        metrics::PAYSAFE_UNRECOGNISED_WEBHOOKS_TOTAL,
        metrics::PAYSAFE_AMOUNT_MISMATCHES_TOTAL,
        metrics::BNC_UNMASKED_ACCOUNT_NUMBERS_TOTAL,
    ] {
        metrics::at_zero(name, &[]);
    }
}
