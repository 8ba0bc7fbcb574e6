//! The printed report of a proof: which file and record, what the entry is, how it was
//! verified, what the workers did and which ledger events followed.

use std::io::Write;

use time::format_description::well_known::Rfc3339;

use connector_schema::evidence::{ArchiveEntry, ManifestRecord};

use crate::prove::{Proof, Verdict};

pub fn print_record(out: &mut dyn Write, record: &ManifestRecord) {
    let _ = writeln!(
        out,
        "file: {} (record {}, sha256 {}: verified)",
        record.file, record.sequence, record.sha256
    );
}

pub fn print_entry(out: &mut dyn Write, entry: &ArchiveEntry, proof: &Proof) {
    let time = |at: time::OffsetDateTime| at.format(&Rfc3339).unwrap_or_default();
    let _ = writeln!(out, "  message id: {}", entry.message_id);
    let _ = writeln!(out, "  kind: {}", entry.kind);
    let _ = writeln!(out, "  received at: {}", time(entry.received_at));
    let _ = writeln!(out, "  processed at: {}", time(entry.processed_at));
    if let Some(path) = &entry.request_path {
        let _ = writeln!(out, "  request path: {path}");
    }
    let _ = writeln!(
        out,
        "  body: {} bytes{}, sha256 as sent {}",
        entry.body().map(|b| b.len()).unwrap_or_default(),
        if entry.body_redacted {
            " (redacted copy)"
        } else {
            ""
        },
        entry.body_sha256
    );
    for (label, value) in &proof.details {
        let _ = writeln!(out, "  {label}: {value}");
    }
    let _ = writeln!(out, "  outcome: {}", entry.outcome);
    if entry.events.is_empty() {
        let _ = writeln!(out, "  events: none");
    }
    for event in &entry.events {
        let _ = writeln!(
            out,
            "  event: {} {} {}",
            event.event_id,
            event.event_type,
            event.reference.as_deref().unwrap_or("-")
        );
    }
    match &proof.verdict {
        Verdict::Proven => {
            let _ = writeln!(out, "  proven: yes");
        }
        Verdict::NotProven(reason) => {
            let _ = writeln!(out, "  proven: no: {reason}");
        }
    }
}
