//! A development PKI: a CA, the server's certificate and bank client certificates, so the
//! local run and the tests exercise real mTLS, and a second bank can be onboarded locally from
//! the same CA. Never for production, where the banks' CA and a real server certificate are
//! configured instead.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use crate::auth::tls::fingerprint;

/// A certificate and its key, PEM, with the fingerprint banks are bound by.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub cert_pem: String,
    pub key_pem: String,
    pub sha256: String,
}

/// A certificate authority that signs the others.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

impl DevCa {
    pub fn new(name: &str) -> Result<Self, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_pem,
        })
    }

    /// The CA written by [`DevCa::new`] earlier (its certificate and key, PEM): issues more
    /// certificates that chain to the same root.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, rcgen::Error> {
        let key = KeyPair::from_pem(key_pem)?;
        Ok(Self {
            issuer: Issuer::from_ca_cert_pem(cert_pem, key)?,
            cert_pem: cert_pem.to_owned(),
        })
    }

    /// The CA's private key, PEM: kept beside the CA so a development PKI can issue later.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The server's certificate, for `hosts` (names or IP addresses).
    pub fn server(&self, hosts: &[&str]) -> Result<IssuedCertificate, rcgen::Error> {
        let names: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(
            DnType::CommonName,
            hosts.first().copied().unwrap_or("localhost"),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A bank's client certificate, valid from now for a year.
    pub fn client(&self, common_name: &str) -> Result<IssuedCertificate, rcgen::Error> {
        let now = OffsetDateTime::now_utc();
        self.client_valid(
            common_name,
            now - Duration::minutes(5),
            now + Duration::days(365),
        )
    }

    /// A client certificate with the given validity (an expired one, in tests).
    pub fn client_valid(
        &self,
        common_name: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<IssuedCertificate, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = not_before;
        params.not_after = not_after;
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> Result<IssuedCertificate, rcgen::Error> {
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCertificate {
            cert_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
            sha256: fingerprint(certificate.der()),
        })
    }
}

/// A self-signed client certificate that no configured CA vouches for.
pub fn self_signed_client(common_name: &str) -> Result<IssuedCertificate, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let certificate = params.self_signed(&key)?;
    Ok(IssuedCertificate {
        cert_pem: certificate.pem(),
        key_pem: key.serialize_pem(),
        sha256: fingerprint(certificate.der()),
    })
}
