//! The example configuration shipped to operators must stay loadable and equal to the
//! defaults, so it documents what the code really does.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use connector_ingress::config::{Mode, Settings};

#[test]
fn the_example_configuration_shows_the_defaults_in_production_mode() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/ingress.example.toml");
    let example = Settings::read(Some(&path)).unwrap();
    let defaults = Settings::default();
    assert_eq!(
        serde_json::to_value(&example).unwrap(),
        serde_json::to_value(&defaults).unwrap(),
        "config/ingress.example.toml and Settings::default() disagree"
    );
    assert_eq!(example.mode, Mode::Production);
    // As shipped it is production with its TLS still to fill in: refused for that, and
    // otherwise valid.
    assert_eq!(example.validate().unwrap_err().key, "tls.cert_file");
    let development = Settings {
        mode: Mode::Development,
        ..example
    };
    development.validate().unwrap();
}

/// `ops/bench-all` starts the ingress with this file: it lost its `[seal]` once, unnoticed
/// until a bench run, since nothing else reads it.
#[test]
fn the_benchmark_configuration_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/load/ingress-load.toml");
    let bench = Settings::read(Some(&path)).unwrap();
    assert_eq!(bench.mode, Mode::Development);
    bench.validate().unwrap();
}
