//! Unit tests of the callback body: every rule, in the seed's order, and the redaction.

use super::*;

const TOKEN: &str = "c9fead3d790f41d4819456ebc13f2910";
const ACCOUNT: &str = "585945******2348";

fn valid_body() -> Value {
    serde_json::json!({
        "partnerReferenceNo": "BEL2210170001",
        "accountNo": ACCOUNT,
        "accountTransactionLimit": "500000.00",
        "additionalInfo": {"userId": "8881701", "token": TOKEN, "bindStatus": "1"},
        "accountCurrency": "IDR"
    })
}

/// The valid body with `path` (e.g. `additionalInfo.token`) set to `value`, or removed.
fn body_with(path: &str, value: Option<Value>) -> Vec<u8> {
    let mut body = valid_body();
    let (parent, name) = match path.split_once('.') {
        Some((parent, name)) => (&mut body[parent], name),
        None => (&mut body, path),
    };
    let object = parent.as_object_mut().unwrap();
    match value {
        Some(value) => object.insert(name.to_owned(), value),
        None => object.remove(name),
    };
    serde_json::to_vec(&body).unwrap()
}

fn format(field: &str) -> Result<AccountBindingCallback, SnapFieldError> {
    Err(SnapFieldError::InvalidFormat(field.into()))
}

fn mandatory(field: &str) -> Result<AccountBindingCallback, SnapFieldError> {
    Err(SnapFieldError::InvalidMandatory(field.into()))
}

#[test]
fn a_valid_body_parses_and_extra_members_are_ignored() {
    let mut body = valid_body();
    body["note"] = "two  spaces".into();
    body["additionalInfo"]["extra"] = serde_json::json!({"x": [1, 2]});
    let callback = parse_account_binding(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(callback.partner_reference_no, "BEL2210170001");
    assert_eq!(callback.additional_info.user_id, "8881701");
    assert_eq!(callback.additional_info.bind_status, "1");
}

#[test]
fn each_mandatory_field_missing_null_or_blank() {
    for field in [
        "partnerReferenceNo",
        "accountNo",
        "accountTransactionLimit",
        "additionalInfo",
        "additionalInfo.userId",
        "additionalInfo.token",
        "additionalInfo.bindStatus",
    ] {
        for value in [None, Some(Value::Null)] {
            assert_eq!(
                parse_account_binding(&body_with(field, value.clone())),
                mandatory(field),
                "{field} = {value:?}"
            );
        }
        if field != "additionalInfo" {
            for blank in ["", "  "] {
                assert_eq!(
                    parse_account_binding(&body_with(field, Some(blank.into()))),
                    mandatory(field),
                    "{field} = {blank:?}"
                );
            }
        }
    }
}

#[test]
fn each_field_too_long_or_of_the_wrong_type() {
    for (field, max) in [
        ("partnerReferenceNo", 22),
        ("accountNo", 16),
        ("additionalInfo.userId", 64),
        ("additionalInfo.token", 36),
        ("additionalInfo.bindStatus", 2),
    ] {
        let at_limit = "é".repeat(max);
        assert!(
            parse_account_binding(&body_with(field, Some(at_limit.into()))).is_ok(),
            "{field}: {max} characters (not bytes) is fine"
        );
        let too_long = "A".repeat(max + 1);
        assert_eq!(
            parse_account_binding(&body_with(field, Some(too_long.into()))),
            format(field)
        );
        for wrong in [
            serde_json::json!(12),
            serde_json::json!(true),
            serde_json::json!(["x"]),
        ] {
            assert_eq!(
                parse_account_binding(&body_with(field, Some(wrong))),
                format(field)
            );
        }
        assert_eq!(
            parse_account_binding(&body_with(field, Some("a\u{0}".into()))),
            format(field),
            "control characters"
        );
    }
    assert_eq!(
        parse_account_binding(&body_with("additionalInfo", Some("x".into()))),
        format("additionalInfo")
    );
    assert_eq!(
        parse_account_binding(&body_with("additionalInfo", Some(serde_json::json!([])))),
        format("additionalInfo")
    );
}

#[test]
fn account_currency_is_optional_but_three_upper_case_letters_when_sent() {
    for absent in [None, Some(Value::Null), Some("".into())] {
        let callback = parse_account_binding(&body_with("accountCurrency", absent)).unwrap();
        assert_eq!(callback.account_currency, None);
    }
    for bad in ["idr", "IDRX", "ID", "I1R", "ÏDR"] {
        assert_eq!(
            parse_account_binding(&body_with("accountCurrency", Some(bad.into()))),
            format("accountCurrency"),
            "{bad}"
        );
    }
    assert_eq!(
        parse_account_binding(&body_with("accountCurrency", Some(360.into()))),
        format("accountCurrency")
    );
}

/// The valid body with the limit written as the raw JSON text `limit`.
fn body_with_raw_limit(limit: &str) -> Vec<u8> {
    format!(
        r#"{{"partnerReferenceNo":"BEL2210170001","accountNo":"{ACCOUNT}",
                "accountTransactionLimit" : {limit} ,
                "additionalInfo":{{"userId":"8881701","token":"{TOKEN}","bindStatus":"1"}}}}"#
    )
    .into_bytes()
}

#[test]
fn the_limit_is_exact_whether_string_or_number() {
    for (raw, text, minor) in [
        (r#""500000.00""#, "500000.00", 50_000_000),
        ("500000.00", "500000.00", 50_000_000),
        ("500000.0", "500000.00", 50_000_000),
        ("500000", "500000.00", 50_000_000),
        (r#""500000""#, "500000.00", 50_000_000),
        ("0.05", "0.05", 5),
        ("0", "0.00", 0),
        (r#""000123.4""#, "123.40", 12_340),
        ("999999.99", "999999.99", 99_999_999),
        // A float would round this one.
        ("0.29", "0.29", 29),
    ] {
        let limit = parse_account_binding(&body_with_raw_limit(raw))
            .unwrap_or_else(|e| panic!("{raw}: {e}"))
            .account_transaction_limit;
        assert_eq!(
            (limit.as_str(), limit.minor_units()),
            (text, minor),
            "{raw}"
        );
    }
}

#[test]
fn a_limit_that_is_not_a_decimal_8_2_is_a_format_error() {
    for raw in [
        r#""1.234""#,
        "1.234",
        "1.230",
        "1e5",
        "1E+5",
        "5.0e5",
        r#""1e5""#,
        "-1.00",
        r#""-1.00""#,
        "-0",
        r#""+1.00""#,
        r#"".5""#,
        r#""5.""#,
        r#"" 5.00""#,
        r#""5,00""#,
        r#""500 000""#,
        "1000000",
        r#""1000000.00""#,
        "true",
        "{}",
        r#"["1.00"]"#,
    ] {
        assert_eq!(
            parse_account_binding(&body_with_raw_limit(raw)),
            format("accountTransactionLimit"),
            "{raw}"
        );
    }
}

#[test]
fn the_limit_is_found_by_its_decoded_name_and_not_inside_strings_or_objects() {
    // The same name inside a nested object or a string must not be taken for it.
    let body = br#"{"x":{"accountTransactionLimit":1.234},"y":"\"accountTransactionLimit\":9.999",
            "partnerReferenceNo":"P","accountNo":"A",
            "account\u0054ransactionLimit":12.50,
            "additionalInfo":{"userId":"u","token":"t","bindStatus":"1"}}"#;
    let callback = parse_account_binding(body).unwrap();
    assert_eq!(callback.account_transaction_limit.as_str(), "12.50");
}

#[test]
fn an_unusable_body_is_a_format_error_of_the_request_body() {
    for body in [
        &b""[..],
        b"not json",
        b"{\"partnerReferenceNo\":",
        b"[1]",
        b"\"s\"",
        &[0xff, 0xfe, b'{', b'}'],
        br#"{"partnerReferenceNo":"A","partnerReferenceNo":"B"}"#,
    ] {
        assert_eq!(parse_account_binding(body), format(BODY_FIELD), "{body:?}");
    }
}

#[test]
fn the_first_problem_in_seed_order_wins() {
    assert_eq!(
        parse_account_binding(b"{}"),
        mandatory("partnerReferenceNo")
    );
    let body = serde_json::json!({
        "partnerReferenceNo": "P",
        "accountNo": "A".repeat(17),
        "accountTransactionLimit": "1e5",
        "accountCurrency": "x",
    });
    assert_eq!(
        parse_account_binding(&serde_json::to_vec(&body).unwrap()),
        format("accountNo")
    );
    let body = serde_json::json!({
        "partnerReferenceNo": "P", "accountNo": "A", "accountTransactionLimit": "1",
        "accountCurrency": "x",
        "additionalInfo": {"bindStatus": "123", "token": 5},
    });
    assert_eq!(
        parse_account_binding(&serde_json::to_vec(&body).unwrap()),
        mandatory("additionalInfo.userId")
    );
}

#[test]
fn debug_redacts_the_token_and_the_account_number() {
    let callback = parse_account_binding(&serde_json::to_vec(&valid_body()).unwrap()).unwrap();
    let debug = format!("{callback:?}");
    let pretty = format!("{callback:#?}");
    for shown in [&debug, &pretty] {
        assert!(!shown.contains(TOKEN), "{shown}");
        assert!(!shown.contains(ACCOUNT), "{shown}");
        assert!(!shown.contains("2348"), "{shown}");
        assert!(shown.contains("BEL2210170001") && shown.contains(REDACTED));
    }
    assert!(!format!("{:?}", callback.additional_info).contains(TOKEN));
}

#[test]
fn serde_round_trips_with_wire_names_and_the_limit_as_a_string() {
    let callback = parse_account_binding(&body_with_raw_limit("500000.00")).unwrap();
    let json = serde_json::to_value(&callback).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "partnerReferenceNo": "BEL2210170001",
            "accountNo": ACCOUNT,
            "accountTransactionLimit": "500000.00",
            "additionalInfo": {"userId": "8881701", "token": TOKEN, "bindStatus": "1"}
        })
    );
    let back: AccountBindingCallback = serde_json::from_value(json).unwrap();
    assert_eq!(back, callback);

    // Deserialize applies the same rules; a float limit is refused rather than rounded.
    let mut json = serde_json::to_value(&callback).unwrap();
    json["accountNo"] = "A".repeat(17).into();
    assert!(serde_json::from_value::<AccountBindingCallback>(json).is_err());
    let mut json = serde_json::to_value(&callback).unwrap();
    json["accountTransactionLimit"] = serde_json::json!(0.29);
    assert!(serde_json::from_value::<AccountBindingCallback>(json).is_err());
    let mut json = serde_json::to_value(&callback).unwrap();
    json["accountTransactionLimit"] = serde_json::json!(7);
    let back: AccountBindingCallback = serde_json::from_value(json).unwrap();
    assert_eq!(back.account_transaction_limit.as_str(), "7.00");
}

#[test]
fn redaction_removes_the_token_and_account_number_only() {
    let body = br#"{"accountNo":"585945******2348","partnerReferenceNo":"P1",
            "additionalInfo":{"userId":"u1","token":"c9fead3d790f41d4819456ebc13f2910","bindStatus":"1"}}"#;
    let redacted = String::from_utf8(redact_body(body)).unwrap();
    assert!(
        !redacted.contains("c9fead3d790f41d4819456ebc13f2910"),
        "{redacted}"
    );
    assert!(!redacted.contains("2348"), "{redacted}");
    assert!(
        redacted.contains(r#""userId":"u1""#) && redacted.contains("P1"),
        "{redacted}"
    );
    assert_eq!(redact_body(b"not json"), REDACTED.as_bytes());
}
