//! The SNAP string to sign of the BNC callback (DESIGN.md §4):
//! `POST:<path as sent>:<lowercase hex SHA-256 of minify(body)>:<X-TIMESTAMP>`. The RSA check of
//! it lives in `connector_ingress::snap`; the partner's side in the `snap-sign` tool.

use sha2::{Digest, Sha256};

use super::json_scan::{MinifyError, minify};

/// Lower-case hex SHA-256 of [`minify`]`(body)`: the third part of the string to sign.
pub fn minified_body_sha256_hex(body: &[u8]) -> Result<String, MinifyError> {
    let digest = Sha256::digest(minify(body)?);
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// The SNAP string to sign:
/// `<METHOD>:<path as sent>:<lowercase hex SHA-256 of minify(body)>:<X-TIMESTAMP>`.
///
/// `path` must be the request path exactly as the partner sent it (not the route pattern, not
/// re-encoded), and `timestamp` the `X-TIMESTAMP` header verbatim (not re-formatted): both are
/// signed as text. The method is upper-cased (HTTP methods are upper case on the wire anyway).
pub fn string_to_sign(
    method: &str,
    path: &str,
    body: &[u8],
    timestamp: &str,
) -> Result<String, MinifyError> {
    Ok(format!(
        "{}:{path}:{}:{timestamp}",
        method.to_ascii_uppercase(),
        minified_body_sha256_hex(body)?
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::bnc::parse_account_binding;

    const VECTORS: &str = include_str!("../../../ingress/tests/vectors/bnc-snap.json");

    const TOKEN: &str = "c9fead3d790f41d4819456ebc13f2910";
    const ACCOUNT: &str = "585945******2348";

    #[test]
    fn the_valid_vector_minifies_and_builds_its_string_to_sign_exactly() {
        let file: Value = serde_json::from_str(VECTORS).unwrap();
        let mut checked = 0;
        for vector in file["vectors"].as_array().unwrap() {
            let Some(expected) = vector["minified"].as_str() else {
                continue;
            };
            let body = vector["body"].as_str().unwrap().as_bytes();
            assert_eq!(String::from_utf8(minify(body).unwrap()).unwrap(), expected);
            let signed = string_to_sign(
                vector["method"].as_str().unwrap(),
                vector["path"].as_str().unwrap(),
                body,
                vector["headers"]["X-TIMESTAMP"].as_str().unwrap(),
            )
            .unwrap();
            assert_eq!(signed, vector["string_to_sign"].as_str().unwrap());

            let callback = parse_account_binding(body).unwrap();
            assert_eq!(callback.account_transaction_limit.as_str(), "500000.00");
            assert_eq!(callback.account_transaction_limit.minor_units(), 50_000_000);
            assert_eq!(callback.account_no, ACCOUNT);
            assert_eq!(callback.additional_info.token, TOKEN);
            assert_eq!(callback.account_currency.as_deref(), Some("IDR"));
            checked += 1;
        }
        assert_eq!(checked, 1);
    }

    #[test]
    fn string_to_sign_upper_cases_the_method_and_keeps_the_rest_verbatim() {
        let signed = string_to_sign("post", "/a%2Fb?x=1", b"{ }", "2022-09-06T13:00:00+07:00");
        // SHA-256("{}")
        assert_eq!(
            signed.unwrap(),
            "POST:/a%2Fb?x=1:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a:2022-09-06T13:00:00+07:00"
        );
    }
}
