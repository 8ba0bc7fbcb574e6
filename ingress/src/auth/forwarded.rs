//! Behind a TLS-terminating load balancer (off by default): the proxy verifies the bank's client
//! certificate and forwards it in a header, URL-encoded PEM, the form nginx
//! (`$ssl_client_escaped_cert`) and AWS ALB (`X-Amzn-Mtls-Clientcert`) produce.
//!
//! The header is believed only on connections from the configured proxy addresses; from anyone
//! else it is ignored, so a client cannot claim a bank's certificate by sending the header
//! itself. A forwarded certificate then binds the request to its bank exactly as one presented
//! in our own TLS handshake does ([`ClientCertificate`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderName;
use axum::middleware::Next;
use axum::response::Response;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

use crate::auth::tls::ClientCertificate;
use crate::config::{ConfigError, ProxySettings};

/// The proxies allowed to forward client certificates, and the header they use.
#[derive(Debug, Clone)]
pub struct TrustedProxies {
    networks: Vec<(IpAddr, u8)>,
    header: HeaderName,
}

impl TrustedProxies {
    /// `None` when the mode is off. Errors name the configuration key.
    pub fn from_settings(settings: &ProxySettings) -> Result<Option<Arc<Self>>, ConfigError> {
        if !settings.enabled() {
            return Ok(None);
        }
        let header = HeaderName::try_from(settings.client_cert_header.as_str())
            .map_err(|_| ConfigError::new("proxy.client_cert_header", "not a header name"))?;
        let networks = settings
            .trusted_addresses
            .iter()
            .enumerate()
            .map(|(i, network)| {
                parse_network(network).ok_or_else(|| {
                    ConfigError::new(
                        format!("proxy.trusted_addresses[{i}]"),
                        format!("`{network}` is neither an IP address nor a CIDR block"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(Arc::new(Self { networks, header })))
    }

    pub fn trusts(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.networks
            .iter()
            .any(|(network, prefix)| in_network(peer, *network, *prefix))
    }
}

fn parse_network(text: &str) -> Option<(IpAddr, u8)> {
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address.parse::<IpAddr>().ok()?, Some(prefix.parse().ok()?)),
        None => (text.parse::<IpAddr>().ok()?, None),
    };
    let address = address.to_canonical();
    let width = if address.is_ipv4() { 32 } else { 128 };
    let prefix = prefix.unwrap_or(width);
    (prefix <= width).then_some((address, prefix))
}

fn in_network(peer: IpAddr, network: IpAddr, prefix: u8) -> bool {
    match (peer, network) {
        (IpAddr::V4(peer), IpAddr::V4(network)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(peer) & mask == u32::from(network) & mask
        }
        (IpAddr::V6(peer), IpAddr::V6(network)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(peer) & mask == u128::from(network) & mask
        }
        _ => false,
    }
}

/// The certificate in a forwarded header value: URL-encoded PEM, the first certificate of the
/// chain being the client's.
pub fn certificate_from_header(value: &[u8]) -> Option<ClientCertificate> {
    let pem = percent_decode(value)?;
    let der = CertificateDer::pem_slice_iter(&pem).next()?.ok()?;
    Some(ClientCertificate::from_der(&der))
}

fn percent_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut bytes = input.iter();
    while let Some(&b) = bytes.next() {
        if b == b'%' {
            let hex = [*bytes.next()?, *bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

/// On a request whose trusted proxy sent the certificate header more than once (or one header
/// holding a comma-joined list): which copy is the bank's cannot be known, since a proxy that
/// appends its header to one the client sent itself forwards both. The Corelink routes refuse
/// such a request (400 `INVALID_HEADER`) rather than pick one.
#[derive(Debug, Clone)]
pub struct ForwardedCertificateRepeated {
    /// The configured header's name, for the answer's `details`.
    pub header: HeaderName,
}

/// Middleware: on a connection from a trusted proxy, the forwarded certificate becomes the
/// request's [`ClientCertificate`] (replacing the proxy's own, when it speaks TLS to us too).
/// From anyone else the header is ignored, and any certificate claim it makes is dropped.
pub async fn forwarded_certificate(
    State(proxies): State<Arc<TrustedProxies>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    let trusted = peer.is_some_and(|peer| proxies.trusts(peer));
    let mut values = request.headers().get_all(&proxies.header).iter();
    let (first, repeated) = (values.next().cloned(), values.next().is_some());
    if trusted {
        // The proxy's own TLS certificate, if any, is not a bank's.
        request.extensions_mut().remove::<ClientCertificate>();
    }
    match first {
        None => {}
        Some(_) if !trusted => {
            tracing::warn!(
                peer = ?peer,
                "a forwarded client certificate from an untrusted address was ignored"
            );
        }
        // A raw comma never occurs in URL-encoded PEM: two values joined into one header.
        Some(value) if repeated || value.as_bytes().contains(&b',') => {
            tracing::warn!(
                ?peer,
                "the proxy forwarded the client certificate header more than once"
            );
            request
                .extensions_mut()
                .insert(ForwardedCertificateRepeated {
                    header: proxies.header.clone(),
                });
        }
        Some(value) => match certificate_from_header(value.as_bytes()) {
            Some(certificate) => {
                request.extensions_mut().insert(certificate);
            }
            None => {
                tracing::warn!(
                    ?peer,
                    "the proxy forwarded an unreadable client certificate"
                );
            }
        },
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn proxies(addresses: &[&str]) -> Arc<TrustedProxies> {
        TrustedProxies::from_settings(&ProxySettings {
            trusted_addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
            ..ProxySettings::default()
        })
        .unwrap()
        .unwrap()
    }

    #[test]
    fn addresses_and_blocks_are_matched_exactly() {
        let trusted = proxies(&["10.1.2.0/24", "192.168.0.9", "fd00::/8"]);
        for (peer, expected) in [
            ("10.1.2.200", true),
            ("10.1.3.1", false),
            ("192.168.0.9", true),
            ("192.168.0.10", false),
            ("::ffff:10.1.2.7", true),
            ("fd12::1", true),
            ("fe80::1", false),
        ] {
            assert_eq!(trusted.trusts(peer.parse().unwrap()), expected, "{peer}");
        }
        assert!(proxies(&["0.0.0.0/0"]).trusts("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn bad_settings_name_the_key() {
        for bad in ["10.0.0.0/33", "proxy.local", "10.0.0.1/x"] {
            let error = TrustedProxies::from_settings(&ProxySettings {
                trusted_addresses: vec!["127.0.0.1".into(), bad.into()],
                ..ProxySettings::default()
            })
            .unwrap_err();
            assert_eq!(error.key, "proxy.trusted_addresses[1]", "{bad}");
        }
        assert!(
            TrustedProxies::from_settings(&ProxySettings::default())
                .unwrap()
                .is_none(),
            "off by default"
        );
    }

    #[test]
    fn a_url_encoded_pem_yields_the_certificate_fingerprint() {
        let ca = crate::pki::DevCa::new("test CA").unwrap();
        let bank = ca.client("BANK_X").unwrap();
        let encoded: String = bank
            .cert_pem
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let certificate = certificate_from_header(encoded.as_bytes()).unwrap();
        assert_eq!(certificate.sha256, bank.sha256);
        assert_eq!(certificate_from_header(b"%ZZ"), None);
        assert_eq!(certificate_from_header(b"not a certificate"), None);
    }
}
