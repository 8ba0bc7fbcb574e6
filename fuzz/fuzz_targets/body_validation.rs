//! Any bytes as a Corelink unit or batch body: the parser and the validator must answer (accept,
//! or a typed error), never panic, loop or blow the stack; and what they accept must satisfy the
//! contract's rules.
#![no_main]

use connector_schema::corelink::{MAX_REFERENCE_CHARS, OrderStatus, parse_batch, parse_unit};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(order) = parse_unit(body) {
        assert!(
            !order.reference.is_empty() && order.reference.chars().count() <= MAX_REFERENCE_CHARS
        );
        if order.status == OrderStatus::Failed {
            assert!(order.reason_code.is_some_and(|c| !c.trim().is_empty()));
        }
    }
    if let Ok(batch) = parse_batch(body, "KEY", 1000) {
        assert!((1..=1000).contains(&batch.orders.len()));
        assert!(batch.batch_id.is_none_or(|id| id == "KEY"));
        let mut references: Vec<_> = batch.orders.iter().map(|o| &o.reference).collect();
        references.sort();
        references.dedup();
        assert_eq!(references.len(), batch.orders.len(), "no reference twice");
    }
});
