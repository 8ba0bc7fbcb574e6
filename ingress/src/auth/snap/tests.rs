//! The SNAP signature against keys made here, and the fixtures the BNC route's tests share:
//! a partner's key pairs, a signed request, the instant it is checked at.

use std::sync::OnceLock;
use std::time::Duration;

use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use time::OffsetDateTime;
use time::macros::datetime;

use connector_schema::bnc::{SnapHeaders, string_to_sign};

use super::partners::BncPartners;
use super::*;
use crate::config::{BncSettings, DEFAULT_BNC_PATH as DEFAULT_PATH};

pub(crate) const PATH: &str = "/callbacks/bnc/account-binding";
pub(crate) const TIMESTAMP: &str = "2022-09-06T13:00:00+07:00";
pub(crate) const TOLERANCE: Duration = Duration::from_secs(300);
pub(crate) const BODY: &str = r#"{ "accountCurrency": "IDR", "accountNo": "585945******2348",
  "accountTransactionLimit": 500000.00,
  "additionalInfo": { "userId": "8881701", "token": "c9fead3d790f41d4819456ebc13f2910", "bindStatus": "1" },
  "partnerReferenceNo": "BEL2210170001" }"#;

pub(crate) fn now() -> OffsetDateTime {
    datetime!(2022-09-06 13:01:00 +07:00)
}

/// (private PEM, public SPKI PEM); generating RSA keys is slow, so two are shared.
pub(crate) fn key_pair(which: usize) -> &'static (Vec<u8>, Vec<u8>) {
    static KEYS: OnceLock<Vec<(Vec<u8>, Vec<u8>)>> = OnceLock::new();
    &KEYS.get_or_init(|| {
        (0..2)
            .map(|_| {
                let rsa = Rsa::generate(2048).unwrap();
                (
                    rsa.private_key_to_pem().unwrap(),
                    rsa.public_key_to_pem().unwrap(),
                )
            })
            .collect()
    })[which]
}

pub(crate) fn partners(public_pems: &[&[u8]]) -> BncPartners {
    BncPartners::from_pems([("BNC_PARTNER_1", public_pems.to_vec())]).unwrap()
}

pub(crate) fn snap_headers<'a>(signature: &'a str, timestamp: &'a str) -> SnapHeaders<'a> {
    SnapHeaders {
        timestamp,
        sent_at: OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
            .unwrap(),
        client_key: "BNC_PARTNER_1",
        signature,
        external_id: "77778042022091500001",
        channel_id: "95221",
    }
}

pub(crate) fn signed(private: &[u8], path: &str, body: &[u8], timestamp: &str) -> String {
    sign(
        private,
        &string_to_sign("POST", path, body, timestamp).unwrap(),
    )
    .unwrap()
}

#[test]
fn a_signed_request_verifies_and_any_change_breaks_it() {
    let (private, public) = key_pair(0);
    let partners = partners(&[public]);
    let signature = signed(private, PATH, BODY.as_bytes(), TIMESTAMP);
    let headers = snap_headers(&signature, TIMESTAMP);
    assert_eq!(
        verify(&partners, &headers, PATH, BODY.as_bytes(), now(), TOLERANCE),
        Ok(())
    );
    // Whitespace outside strings is not signed.
    let compact = connector_schema::bnc::minify(BODY.as_bytes()).unwrap();
    assert_eq!(
        verify(&partners, &headers, PATH, &compact, now(), TOLERANCE),
        Ok(())
    );

    // Another path, a re-serialised amount, a changed string.
    let bad = Err(SnapAuthError::InvalidSignature);
    let other_path = "/callbacks/bnc/other";
    assert_eq!(
        verify(
            &partners,
            &headers,
            other_path,
            BODY.as_bytes(),
            now(),
            TOLERANCE
        ),
        bad
    );
    for (from, to) in [
        ("500000.00", "500000.0"),
        ("500000.00", "5e5"),
        ("500000.00", "500000"),
        ("\"1\"", "\" 1\""),
    ] {
        let changed = BODY.replace(from, to);
        assert_eq!(
            verify(
                &partners,
                &headers,
                PATH,
                changed.as_bytes(),
                now(),
                TOLERANCE
            ),
            bad,
            "{to}"
        );
    }
    // A body without a string to sign.
    assert_eq!(
        verify(&partners, &headers, PATH, b"{\"a", now(), TOLERANCE),
        bad
    );
    // Another timestamp in the header than the one signed (still inside the window).
    let later = "2022-09-06T13:00:01+07:00";
    assert_eq!(
        verify(
            &partners,
            &snap_headers(&signature, later),
            PATH,
            BODY.as_bytes(),
            now(),
            TOLERANCE
        ),
        bad
    );
    // The same instant written differently is another string to sign.
    let utc = "2022-09-06T06:00:00Z";
    assert_eq!(
        verify(
            &partners,
            &snap_headers(&signature, utc),
            PATH,
            BODY.as_bytes(),
            now(),
            TOLERANCE
        ),
        bad
    );
}

#[test]
fn a_wrong_key_or_an_unknown_partner_fails() {
    let (private, _) = key_pair(0);
    let (_, other_public) = key_pair(1);
    let signature = signed(private, PATH, BODY.as_bytes(), TIMESTAMP);
    let headers = snap_headers(&signature, TIMESTAMP);
    assert_eq!(
        verify(
            &partners(&[other_public]),
            &headers,
            PATH,
            BODY.as_bytes(),
            now(),
            TOLERANCE
        ),
        Err(SnapAuthError::InvalidSignature)
    );
    let mut unknown = headers.clone();
    unknown.client_key = "SOMEONE_ELSE";
    assert_eq!(
        verify(
            &partners(&[other_public]),
            &unknown,
            PATH,
            BODY.as_bytes(),
            now(),
            TOLERANCE
        ),
        Err(SnapAuthError::UnknownClientKey)
    );
}

#[test]
fn two_keys_for_one_partner_during_rotation() {
    let (old_private, old_public) = key_pair(0);
    let (new_private, new_public) = key_pair(1);
    let both = partners(&[old_public, new_public]);
    for private in [old_private, new_private] {
        let signature = signed(private, PATH, BODY.as_bytes(), TIMESTAMP);
        assert_eq!(
            verify(
                &both,
                &snap_headers(&signature, TIMESTAMP),
                PATH,
                BODY.as_bytes(),
                now(),
                TOLERANCE
            ),
            Ok(())
        );
    }
    // Once the old key is removed, its signatures stop verifying.
    let signature = signed(old_private, PATH, BODY.as_bytes(), TIMESTAMP);
    assert_eq!(
        verify(
            &partners(&[new_public]),
            &snap_headers(&signature, TIMESTAMP),
            PATH,
            BODY.as_bytes(),
            now(),
            TOLERANCE
        ),
        Err(SnapAuthError::InvalidSignature)
    );
}

#[test]
fn the_timestamp_window_is_inclusive_both_ways_and_checked_before_the_signature() {
    let (private, public) = key_pair(0);
    let partners = partners(&[public]);
    let signature = signed(private, PATH, BODY.as_bytes(), TIMESTAMP);
    let headers = snap_headers(&signature, TIMESTAMP);
    let sent = datetime!(2022-09-06 13:00:00 +07:00);
    for (now, ok) in [
        (sent + time::Duration::seconds(300), true),
        (sent - time::Duration::seconds(300), true),
        (sent + time::Duration::seconds(301), false),
        (sent - time::Duration::seconds(301), false),
        (sent + time::Duration::days(1), false),
    ] {
        let expected = if ok {
            Ok(())
        } else {
            Err(SnapAuthError::TimestampOutOfWindow)
        };
        assert_eq!(
            verify(&partners, &headers, PATH, BODY.as_bytes(), now, TOLERANCE),
            expected,
            "{now}"
        );
    }
    // A stale request is refused as stale even when its signature is garbage.
    let garbage = snap_headers("AAAA", TIMESTAMP);
    assert_eq!(
        verify(
            &partners,
            &garbage,
            PATH,
            BODY.as_bytes(),
            sent + time::Duration::hours(1),
            TOLERANCE
        ),
        Err(SnapAuthError::TimestampOutOfWindow)
    );
    assert_eq!(
        verify(&partners, &garbage, PATH, BODY.as_bytes(), now(), TOLERANCE),
        Err(SnapAuthError::InvalidSignature),
        "base64 of the wrong length is simply invalid"
    );
}

#[test]
fn a_signature_that_does_not_decode_is_not_base64() {
    let (_, public) = key_pair(0);
    for bad in ["abc", "ab=c", "@@@@", "YWJj\n"] {
        assert_eq!(
            verify(
                &partners(&[public]),
                &snap_headers(bad, TIMESTAMP),
                PATH,
                BODY.as_bytes(),
                now(),
                TOLERANCE
            ),
            Err(SnapAuthError::SignatureNotBase64),
            "{bad:?}"
        );
    }
}

#[test]
fn keys_are_checked_when_loaded() {
    let (private, public) = key_pair(0);
    // PKCS#1 `RSA PUBLIC KEY` is accepted like SPKI.
    let rsa = Rsa::public_key_from_pem(public).unwrap();
    let pkcs1 = rsa.public_key_to_pem_pkcs1().unwrap();
    assert!(
        std::str::from_utf8(&pkcs1)
            .unwrap()
            .contains("BEGIN RSA PUBLIC KEY")
    );
    let partners = BncPartners::from_pems([("P", vec![pkcs1])]).unwrap();
    let signature = signed(private, PATH, BODY.as_bytes(), TIMESTAMP);
    let mut headers = snap_headers(&signature, TIMESTAMP);
    headers.client_key = "P";
    assert_eq!(
        verify(&partners, &headers, PATH, BODY.as_bytes(), now(), TOLERANCE),
        Ok(())
    );

    let error = |pem: &[u8]| {
        BncPartners::from_pems([("P", vec![pem.to_vec()])])
            .unwrap_err()
            .message
    };
    let message = error(private);
    assert!(message.contains("private key"), "{message}");
    let small = Rsa::generate(1024).unwrap().public_key_to_pem().unwrap();
    let message = error(&small);
    assert!(message.contains("1024-bit"), "{message}");
    let ec = openssl::ec::EcKey::generate(
        &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
    )
    .unwrap();
    let message = error(&ec.public_key_to_pem().unwrap());
    assert!(message.contains("not an RSA key"), "{message}");
    let ed = PKey::generate_ed25519()
        .unwrap()
        .public_key_to_pem()
        .unwrap();
    assert!(error(&ed).contains("not an RSA key"));
    let message = error(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n");
    assert!(message.contains("not a valid PEM"), "{message}");
    assert!(!message.contains("AAAA"), "no key material in errors");
    assert!(error(b"hello").contains("no PEM"));

    let twice = BncPartners::from_pems([("P", vec![public.clone()]), ("P", vec![public.clone()])]);
    assert!(twice.unwrap_err().message.contains("configured twice"));
    let long = BncPartners::from_pems([("K".repeat(33), vec![public.clone()])]);
    assert_eq!(long.unwrap_err().key, "partners[0].client_key");
    let none = BncPartners::from_pems([("P", Vec::<Vec<u8>>::new())]);
    assert!(none.is_err());
    assert!(
        !format!("{partners:?}").contains("MII"),
        "Debug shows no key"
    );
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail API, not ours
fn settings_load_key_files_relative_to_the_configuration() {
    use figment::providers::{Format as _, Toml};

    let (_, public) = key_pair(0);
    let (_, other) = key_pair(1);
    figment::Jail::expect_with(|jail| {
        jail.create_dir("keys")?;
        std::fs::write(jail.directory().join("keys/old.pem"), public).map_err(|e| e.to_string())?;
        std::fs::write(jail.directory().join("keys/new.pem"), other).map_err(|e| e.to_string())?;
        jail.create_file(
            "bnc.toml",
            r#"
            timestamp_tolerance_secs = 120
            [[partners]]
            client_key = "BNC_PARTNER_1"
            public_key_files = ["keys/old.pem", "keys/new.pem"]
            "#,
        )?;
        let settings: BncSettings = figment::Figment::from(Toml::file("bnc.toml")).extract()?;
        settings.validate().map_err(|e| e.to_string())?;
        assert_eq!(settings.path, DEFAULT_PATH);
        assert_eq!(settings.timestamp_tolerance(), Duration::from_secs(120));
        let partners = BncPartners::from_settings(&settings).map_err(|e| e.to_string())?;
        assert_eq!(partners.len(), 1);
        assert!(partners.contains("BNC_PARTNER_1"));
        assert!(format!("{partners:?}").contains("keys/new.pem"));

        jail.create_file(
            "missing.toml",
            "[[partners]]\nclient_key = \"P\"\npublic_key_files = [\"keys/none.pem\"]\n",
        )?;
        let settings: BncSettings = figment::Figment::from(Toml::file("missing.toml")).extract()?;
        let error = BncPartners::from_settings(&settings).unwrap_err();
        assert_eq!(error.key, "bnc.partners[0].public_key_files[0]");
        assert!(error.message.contains("none.pem"), "{error}");

        jail.create_file("typo.toml", "tolerance = 5\n")?;
        assert!(
            figment::Figment::from(Toml::file("typo.toml"))
                .extract::<BncSettings>()
                .is_err()
        );
        Ok(())
    });
    let defaults = BncSettings::default();
    defaults.validate().unwrap();
    let mut bad = defaults.clone();
    bad.path = "callbacks".into();
    assert_eq!(bad.validate().unwrap_err().key, "bnc.path");
    let mut bad = defaults;
    bad.timestamp_tolerance_secs = 0;
    assert_eq!(
        bad.validate().unwrap_err().key,
        "bnc.timestamp_tolerance_secs"
    );
}

#[test]
fn sign_refuses_what_is_not_an_rsa_private_key() {
    let (_, public) = key_pair(0);
    assert!(sign(public, "x").is_err());
    let ec = PKey::generate_ed25519()
        .unwrap()
        .private_key_to_pem_pkcs8()
        .unwrap();
    assert!(sign(&ec, "x").is_err());
}
