//! The Corelink unit body the live check sends and the end-to-end tests post: one definition,
//! so both speak the contract's order form alike (a FAILED one with its reason).

/// A unit callback body for `reference` in `status`.
pub fn order_json(reference: &str, status: &str) -> String {
    let reason = if status == "FAILED" {
        r#", "reasonCode": "BUS_INSUFFICIENT_FUNDS", "reasonMessage": "Insufficient balance""#
    } else {
        ""
    };
    format!(
        r#"{{"reference": "{reference}", "bank_reference": "BNK-{reference}", "status": "{status}"{reason}, "processed_at": "2025-11-19T07:09:30Z"}}"#
    )
}
