//! The example configuration shipped to operators must stay loadable and equal to the
//! defaults, so it documents what the code really does.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use connector_ingress::config::Settings;

#[test]
fn the_example_configuration_is_valid_and_shows_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/ingress.example.toml");
    let example = Settings::load(Some(&path)).unwrap();
    let defaults = Settings::default();
    assert_eq!(
        serde_json::to_value(&example).unwrap(),
        serde_json::to_value(&defaults).unwrap(),
        "config/ingress.example.toml and Settings::default() disagree"
    );
}
