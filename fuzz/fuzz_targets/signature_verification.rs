//! Arbitrary `X-Signature` values (and bodies) against a bank with a real ES256 key: the
//! verifier must refuse them all without panicking. The first input byte picks the shape: raw
//! bytes, or three base64url-ish segments built from the rest, so the fuzzer reaches the header,
//! key selection and claim checks, not only the splitter.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use connector_ingress::auth::keys::{BankClient, ClientRegistry, JwsAlgorithm, VerifyingKey};
use connector_ingress::routes::corelink::{CorelinkHeaders, authenticate};
use josekit::jwk::Jwk;
use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;

const PUBLIC_JWK: &str = r#"{"alg":"ES256","crv":"P-256","kid":"bank-x-es256-2025","kty":"EC","x":"u6F7aqZtLuFGkle4tBl_UEuEeZuqE7dFfn1a944Z9nc","y":"34TfwtY97k-HkiKQ3cT2M4UFeVO2G2n-9fCNrLFSow8"}"#;

fn registry() -> &'static ClientRegistry {
    static REGISTRY: OnceLock<ClientRegistry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let jwk = Jwk::from_bytes(PUBLIC_JWK).expect("the vector key");
        let key = VerifyingKey::from_jwk("bank-x-es256-2025", JwsAlgorithm::Es256, &jwk)
            .expect("a verifying key");
        ClientRegistry::new([BankClient::new("BANK_X", [key])])
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&shape, rest)) = input.split_first() else {
        return;
    };
    let signature = if shape % 2 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        // header.payload.signature from thirds of the input, base64url-encoded as a bank would.
        use base64_like::encode;
        let third = rest.len() / 3;
        format!(
            "{}.{}.{}",
            encode(&rest[..third]),
            encode(&rest[third..2 * third]),
            encode(&rest[2 * third..])
        )
    };
    let headers = CorelinkHeaders {
        client_id: "BANK_X".into(),
        timestamp: "2025-11-19T07:15:00Z".into(),
        timestamp_at: time::macros::datetime!(2025-11-19 07:15:00 UTC),
        nonce: "9a1f3c".into(),
        idempotency_key: "PAY-2025-0001".into(),
        content_type: "application/json".into(),
        signature,
    };
    let now = OffsetDateTime::from_unix_timestamp(1_763_536_560).expect("a valid instant");
    let outcome = authenticate(
        registry(),
        None,
        &headers,
        "POST",
        "/callbacks/orders/status",
        rest,
        now,
        Duration::from_secs(300),
    );
    assert!(
        outcome.is_err(),
        "nothing but the bank's private key can produce an accepted signature"
    );
});

/// Minimal base64url without padding, to keep the target free of extra dependencies.
mod base64_like {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len() * 4 / 3 + 3);
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }
}
