//! The settings: layering, validation, and errors that name the key.

use super::*;

#[test]
fn defaults_are_valid() {
    Settings::default().validate().expect("defaults validate");
}

#[test]
fn errors_name_the_key() {
    let mut settings = Settings::default();
    settings.broker.publish_channels = 0;
    let err = settings.validate().unwrap_err();
    assert_eq!(err.key, "broker.publish_channels");

    let mut settings = Settings::default();
    settings.broker.url = "http://nope".into();
    assert_eq!(settings.validate().unwrap_err().key, "broker.url");

    let mut settings = Settings::default();
    settings.broker.alarm_probe_interval_ms = 0;
    assert_eq!(
        settings.validate().unwrap_err().key,
        "broker.alarm_probe_interval_ms"
    );
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail API, not ours
fn file_then_environment_with_typed_errors() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "ingress.toml",
            r#"
            [http]
            max_body_bytes = 2048
            [[corelink.clients]]
            id = "BANK_X"
            keys = [{ kid = "k1", alg = "ES256", jwk_file = "keys/k1.jwk" }]
            "#,
        )?;
        jail.set_env("CONNECTOR_BROKER__CONFIRM_TIMEOUT_MS", "750");
        let settings = Settings::load(Some(Path::new("ingress.toml"))).expect("loads");
        assert_eq!(settings.http.max_body_bytes, 2048);
        assert_eq!(settings.broker.confirm_timeout_ms, 750);
        let key = &settings.corelink.clients[0].keys[0];
        let resolved = key.jwk_file.as_ref().expect("jwk_file").relative();
        assert!(resolved.ends_with("keys/k1.jwk") && resolved.is_absolute());

        jail.set_env("CONNECTOR_HTTP__MAX_BODY_BYTES", "lots");
        let err = Settings::load(Some(Path::new("ingress.toml"))).unwrap_err();
        assert_eq!(err.key, "http.max_body_bytes");

        // A variable for another process's section is not ours to reject.
        jail.clear_env();
        jail.set_env("CONNECTOR_DATABASE__URL", "postgres://elsewhere/db");
        jail.set_env("CONNECTOR_TOPOLOGY__PREFIX", "staging");
        let settings = Settings::load(Some(Path::new("ingress.toml"))).expect("loads");
        assert_eq!(settings.topology.prefix, "staging");

        jail.clear_env();
        jail.create_file("typo.toml", "[http]\nlisten_addr = \"127.0.0.1:1\"\n")?;
        let err = Settings::load(Some(Path::new("typo.toml"))).unwrap_err();
        assert!(err.to_string().contains("listen_addr"), "{err}");
        Ok(())
    });
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail API, not ours
fn paysafe_keys_from_the_file_and_the_environment() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "ingress.toml",
            "[paysafe]\nwebhook_keys = [\"file-key\"]\nwebhook_key_files = [\"secrets/paysafe\"]\n",
        )?;
        let settings = Settings::load(Some(Path::new("ingress.toml"))).expect("loads");
        assert_eq!(settings.paysafe.webhook_keys, ["file-key"]);
        assert_eq!(settings.paysafe.path, "/webhooks/paysafe");
        let file = settings.paysafe.webhook_key_files[0].relative();
        assert!(file.is_absolute() && file.ends_with("secrets/paysafe"));

        // A rotation from the environment: a list, quoted so any character is kept.
        jail.set_env(
            "CONNECTOR_PAYSAFE__WEBHOOK_KEYS",
            r#"["old+key/2025==", "new,key]2026"]"#,
        );
        let settings = Settings::load(Some(Path::new("ingress.toml"))).expect("loads");
        assert_eq!(
            settings.paysafe.webhook_keys,
            ["old+key/2025==", "new,key]2026"]
        );

        // One key needs no brackets.
        jail.set_env("CONNECTOR_PAYSAFE__WEBHOOK_KEYS", "only-key");
        let settings = Settings::load(Some(Path::new("ingress.toml"))).expect("loads");
        assert_eq!(settings.paysafe.webhook_keys, ["only-key"]);

        // A key that reads as a number would lose its text: refused, and not echoed.
        jail.set_env("CONNECTOR_PAYSAFE__WEBHOOK_KEYS", "0012345");
        let err = Settings::load(Some(Path::new("ingress.toml"))).unwrap_err();
        assert_eq!(err.key, "paysafe.webhook_keys");
        assert!(!err.to_string().contains("12345"), "{err}");
        Ok(())
    });
}

#[test]
fn paysafe_settings_are_validated_and_never_show_a_key() {
    let mut settings = Settings::default();
    settings.paysafe.webhook_keys = vec!["s3cr3t-hmac-key".into(), "other".into()];
    settings.validate().expect("valid");
    let shown = format!("{settings:?}");
    assert!(
        !shown.contains("s3cr3t") && !shown.contains("other"),
        "{shown}"
    );
    assert!(shown.contains("[2 redacted]"), "{shown}");

    let refused = |change: fn(&mut Settings)| {
        let mut settings = Settings::default();
        change(&mut settings);
        let err = settings.validate().unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        err.key
    };
    assert_eq!(
        refused(|s| s.paysafe.webhook_keys = vec!["k".into(), String::new()]),
        "paysafe.webhook_keys[1]"
    );
    assert_eq!(
        refused(|s| s.paysafe.webhook_keys = vec![" s3cr3t\n".into()]),
        "paysafe.webhook_keys[0]"
    );
    assert_eq!(
        refused(|s| s.paysafe.path = "webhooks/paysafe".into()),
        "paysafe.path"
    );
}
