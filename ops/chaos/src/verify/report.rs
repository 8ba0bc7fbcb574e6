//! The verdict of the end-of-run checks: the counters the final table prints, the problem and
//! note lines, and whether the run failed. Each check returns a `Report` holding only its own
//! findings; [`Report::absorb`] adds them up in the order the checks ran.

#[derive(Debug, Default)]
pub struct Report {
    /// Distinct orders with at least one 200 (conflict pairs included).
    pub acked_orders: usize,
    /// ... whose acknowledged status is applied exactly once (and, final, one ledger event).
    pub applied: usize,
    pub lost: usize,
    pub duplicated: usize,
    /// Orders applied although no request for them got a 200 (enqueued, answer lost).
    pub applied_without_200: usize,
    pub acked_batches: usize,
    pub batches_applied_once: usize,
    pub ledger_messages: usize,
    pub ledger_events: usize,
    /// Events that reached the ledger queue more than once with the same event_id (the relay
    /// publishes at least once; consumers dedupe by event_id).
    pub ledger_republished: usize,
    /// ... of which the first publish was not confirmed (connection lost before the confirm):
    /// the relay recorded the failure and published again.
    pub republished_after_unconfirmed: usize,
    /// ... of which the broker confirmed, but the row was never marked published (the relay
    /// was killed in between, or the database stayed away past the claim): published again.
    pub republished_after_lost_mark: usize,
    /// (reference, type) pairs with more than one distinct event on the queue.
    pub ledger_duplicated: usize,
    pub outbox_unpublished: usize,
    pub conflict_pairs: usize,
    pub quarantined_expected: usize,
    pub quarantined_unexpected: usize,
    pub intake_dlq_expected: usize,
    pub intake_dlq_unexpected: usize,
    pub ledger_dlq: usize,
    pub unbacked_final: usize,
    pub unknown_rows: usize,
    pub unexpected_answers: usize,
    /// Attempts answered 503 while the broker held a memory alarm ...
    pub refused_in_alarm: usize,
    /// ... that were applied all the same (must be none: a 503 is a total rejection).
    pub refused_applied: usize,
    /// Failed verdicts of the run itself, outside the counters above: a soak's table that
    /// keeps growing, a process whose memory does, a gap in the journal of purged tables, a
    /// mid-group kill that could not prove its group open.
    pub run_failures: usize,
    /// What went wrong, one line each (the table prints the first ones).
    pub problems: Vec<String>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.lost > 0
            || self.duplicated > 0
            || self.ledger_duplicated > 0
            || self.outbox_unpublished > 0
            || self.quarantined_unexpected > 0
            || self.intake_dlq_unexpected > 0
            || self.ledger_dlq > 0
            || self.unbacked_final > 0
            || self.unknown_rows > 0
            || self.unexpected_answers > 0
            || self.refused_applied > 0
            || self.run_failures > 0
    }

    /// A failed verdict of the run itself (see `run_failures`), listed first: there are few,
    /// and the per-order problems after them can be many.
    pub fn run_failure(&mut self, problem: String) {
        self.problems.insert(self.run_failures, problem);
        self.run_failures += 1;
    }

    /// Adds one check's findings: counters summed, its problems and notes after those so far.
    pub fn absorb(&mut self, findings: Report) {
        // Destructured whole, so that a new counter cannot be left out of the sum.
        let Report {
            acked_orders,
            applied,
            lost,
            duplicated,
            applied_without_200,
            acked_batches,
            batches_applied_once,
            ledger_messages,
            ledger_events,
            ledger_republished,
            republished_after_unconfirmed,
            republished_after_lost_mark,
            ledger_duplicated,
            outbox_unpublished,
            conflict_pairs,
            quarantined_expected,
            quarantined_unexpected,
            intake_dlq_expected,
            intake_dlq_unexpected,
            ledger_dlq,
            unbacked_final,
            unknown_rows,
            unexpected_answers,
            refused_in_alarm,
            refused_applied,
            run_failures,
            problems,
            notes,
        } = findings;
        self.run_failures += run_failures;
        self.refused_in_alarm += refused_in_alarm;
        self.refused_applied += refused_applied;
        self.acked_orders += acked_orders;
        self.applied += applied;
        self.lost += lost;
        self.duplicated += duplicated;
        self.applied_without_200 += applied_without_200;
        self.acked_batches += acked_batches;
        self.batches_applied_once += batches_applied_once;
        self.ledger_messages += ledger_messages;
        self.ledger_events += ledger_events;
        self.ledger_republished += ledger_republished;
        self.republished_after_unconfirmed += republished_after_unconfirmed;
        self.republished_after_lost_mark += republished_after_lost_mark;
        self.ledger_duplicated += ledger_duplicated;
        self.outbox_unpublished += outbox_unpublished;
        self.conflict_pairs += conflict_pairs;
        self.quarantined_expected += quarantined_expected;
        self.quarantined_unexpected += quarantined_unexpected;
        self.intake_dlq_expected += intake_dlq_expected;
        self.intake_dlq_unexpected += intake_dlq_unexpected;
        self.ledger_dlq += ledger_dlq;
        self.unbacked_final += unbacked_final;
        self.unknown_rows += unknown_rows;
        self.unexpected_answers += unexpected_answers;
        self.problems.extend(problems);
        self.notes.extend(notes);
    }

    /// Counts a lost or duplicated verdict; `true` when all is well.
    pub(super) fn count(&mut self, verdict: Verdict) -> bool {
        match verdict {
            Verdict::Ok => true,
            Verdict::Lost => {
                self.lost += 1;
                false
            }
            Verdict::Duplicated => {
                self.duplicated += 1;
                false
            }
        }
    }
}

/// What became of one acknowledged status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Ok,
    Lost,
    Duplicated,
}
