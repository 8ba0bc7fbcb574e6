//! `paysafe.ca_file`: an extra CA the poller trusts for the Paysafe API, beside the built-in
//! (webpki) roots; a private CA in front of Paysafe, or the development CA of the compose
//! stack's simulator. Read and checked at start-up, so a wrong file stops the process with the
//! key named instead of failing every poll later.

use std::path::Path;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

use super::ConfigError;

const KEY: &str = "paysafe.ca_file";

/// The certificates of the PEM file at `path`, each checked to parse as a trust anchor.
pub fn load(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let text = std::fs::read(path)
        .map_err(|e| ConfigError::new(KEY, format!("cannot read {}: {e}", path.display())))?;
    let certificates = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::new(KEY, format!("{}: not PEM: {e}", path.display())))?;
    if certificates.is_empty() {
        return Err(ConfigError::new(
            KEY,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    // Parsed as rustls will when it verifies Paysafe's chain: a PEM block that is not an
    // X.509 certificate is refused here.
    let mut roots = RootCertStore::empty();
    for (i, certificate) in certificates.iter().enumerate() {
        roots.add(certificate.clone()).map_err(|e| {
            ConfigError::new(
                KEY,
                format!(
                    "{}: certificate {} is not a valid certificate: {e}",
                    path.display(),
                    i + 1
                ),
            )
        })?;
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOT_DER: &str =
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";

    #[test]
    fn a_missing_empty_or_unparsable_file_is_refused_naming_the_key() {
        let dir = std::env::temp_dir().join(format!("paysafe-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no PEM here\n").unwrap();
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, NOT_DER).unwrap();
        for (path, why) in [
            (dir.join("missing.pem"), "cannot read"),
            (empty, "holds no PEM certificate"),
            (garbage, "is not a valid certificate"),
        ] {
            let error = load(&path).unwrap_err();
            assert_eq!(error.key, KEY);
            assert!(error.message.contains(why), "{error}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API, not ours
    fn settings_with_a_bad_ca_file_do_not_validate_and_name_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("garbage.pem", NOT_DER)?;
            jail.create_file(
                "workers.toml",
                "mode = \"development\"\n[paysafe]\nca_file = \"garbage.pem\"\n",
            )?;
            let error = crate::config::Settings::load(Some(Path::new("workers.toml"))).unwrap_err();
            assert_eq!(error.key, KEY);
            // Relative to the configuration file's folder.
            assert!(error.message.contains("garbage.pem"), "{error}");
            Ok(())
        });
    }
}
