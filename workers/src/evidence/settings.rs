//! The `[evidence]` section of the workers' configuration: where archive files go.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use connector_schema::evidence::FsArchiveStore;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvidenceSettings {
    /// The folder archive files and `manifest.ndjson` are written to (a local disk, or a
    /// mount that is copied to WORM storage). Unset (the default): no archive is written.
    pub directory: Option<PathBuf>,
}

impl EvidenceSettings {
    /// The store, when an archive is configured.
    pub fn store(&self) -> std::io::Result<Option<FsArchiveStore>> {
        self.directory
            .as_ref()
            .map(FsArchiveStore::open)
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_archive_by_default() {
        let settings = EvidenceSettings::default();
        assert_eq!(settings.directory, None);
        assert!(settings.store().unwrap().is_none());
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let error = toml_settings("directory = \"/x\"\ndirectoy = \"/y\"").unwrap_err();
        assert!(error.to_string().contains("directoy"), "{error}");
    }

    #[test]
    fn the_directory_is_read() {
        let settings = toml_settings("directory = \"/var/lib/connector/evidence\"").unwrap();
        assert_eq!(
            settings.directory.as_deref(),
            Some(std::path::Path::new("/var/lib/connector/evidence"))
        );
    }

    fn toml_settings(text: &str) -> Result<EvidenceSettings, Box<figment::Error>> {
        use figment::providers::{Format as _, Toml};
        figment::Figment::from(Toml::string(text))
            .extract()
            .map_err(Box::new)
    }
}
