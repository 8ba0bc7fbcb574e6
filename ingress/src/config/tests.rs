//! The settings: layering, validation, and errors that name the key.

use super::*;

/// The defaults in development mode: what the production rules leave aside.
fn development() -> Settings {
    Settings {
        mode: Mode::Development,
        ..Settings::default()
    }
}

#[test]
fn defaults_are_valid_in_development_and_refused_in_production() {
    development().validate().expect("defaults validate");
    // Production is the default, and the defaults have neither TLS nor their own broker user.
    let err = Settings::default().validate().unwrap_err();
    assert_eq!(err.key, "tls.cert_file");
}

#[test]
fn errors_name_the_key() {
    let mut settings = development();
    settings.broker.publish_channels = 0;
    let err = settings.validate().unwrap_err();
    assert_eq!(err.key, "broker.publish_channels");

    let mut settings = development();
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
            mode = "development"
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
            "mode = \"development\"\n[paysafe]\nwebhook_keys = [\"file-key\"]\nwebhook_key_files = [\"secrets/paysafe\"]\n",
        )?;
        let settings = Settings::load(Some(Path::new("ingress.toml"))).expect("loads");
        assert_eq!(
            settings.paysafe.webhook_keys,
            [WebhookKey::from("file-key")]
        );
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
            [
                WebhookKey::from("old+key/2025=="),
                WebhookKey::from("new,key]2026")
            ]
        );

        // One key needs no brackets.
        jail.set_env("CONNECTOR_PAYSAFE__WEBHOOK_KEYS", "only-key");
        let settings = Settings::load(Some(Path::new("ingress.toml"))).expect("loads");
        assert_eq!(
            settings.paysafe.webhook_keys,
            [WebhookKey::from("only-key")]
        );

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
    let mut settings = development();
    settings.paysafe.webhook_keys = vec!["s3cr3t-hmac-key".into(), "other".into()];
    settings.validate().expect("valid");
    let shown = format!("{settings:?}");
    assert!(
        !shown.contains("s3cr3t") && !shown.contains("other"),
        "{shown}"
    );
    assert!(shown.contains("[2 redacted]"), "{shown}");

    let refused = |change: fn(&mut Settings)| {
        let mut settings = development();
        change(&mut settings);
        let err = settings.validate().unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        err.key
    };
    assert_eq!(
        refused(|s| s.paysafe.webhook_keys = vec!["k".into(), "".into()]),
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

#[test]
fn edge_limits_are_validated_by_key() {
    let refused = |change: fn(&mut Settings)| {
        let mut settings = development();
        change(&mut settings);
        settings.validate().unwrap_err().key
    };
    assert_eq!(
        refused(|s| s.http.header_read_timeout_secs = 0),
        "http.header_read_timeout_secs"
    );
    assert_eq!(
        refused(|s| s.http.idle_timeout_secs = 0),
        "http.idle_timeout_secs"
    );
    assert_eq!(
        refused(|s| s.http.max_connections = 0),
        "http.max_connections"
    );
    assert_eq!(
        refused(|s| s.http.max_concurrent_handshakes = 0),
        "http.max_concurrent_handshakes"
    );
    assert_eq!(
        refused(|s| s.http.http2_max_concurrent_streams = 0),
        "http.http2_max_concurrent_streams"
    );
    assert_eq!(refused(|s| s.bnc.max_body_bytes = 0), "bnc.max_body_bytes");
    assert_eq!(
        refused(|s| s.paysafe.max_body_bytes = 0),
        "paysafe.max_body_bytes"
    );
    // The in-flight budget must hold the largest body any route accepts.
    assert_eq!(
        refused(|s| s.http.max_in_flight_body_bytes = s.http.max_body_bytes - 1),
        "http.max_in_flight_body_bytes"
    );
    assert_eq!(
        refused(|s| {
            s.http.max_in_flight_body_bytes = s.http.max_body_bytes;
            s.paysafe.max_body_bytes = s.http.max_body_bytes + 1;
        }),
        "http.max_in_flight_body_bytes"
    );
    // No per-address cap (0) is a valid choice, behind a proxy that is not trusted.
    let mut settings = development();
    settings.http.max_connections_per_address = 0;
    settings
        .validate()
        .expect("0 turns the per-address cap off");
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail API, not ours
fn each_paysafe_key_says_its_encoding() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "ingress.toml",
            r#"
            mode = "development"
            [paysafe]
            webhook_keys = [
              "plain-text-key",
              { key = "c2VjcmV0LWJ5dGVz", encoding = "base64" },
              { key = "also-text", encoding = "raw" },
              { key_file = "secrets/paysafe.b64", encoding = "base64" },
            ]
            "#,
        )?;
        let settings = Settings::load(Some(Path::new("ingress.toml"))).expect("loads");
        let keys = &settings.paysafe.webhook_keys;
        assert_eq!(keys[0], WebhookKey::from("plain-text-key"));
        assert_eq!(
            keys[1],
            WebhookKey::inline("c2VjcmV0LWJ5dGVz", KeyEncoding::Base64)
        );
        assert_eq!(keys[2], WebhookKey::inline("also-text", KeyEncoding::Raw));
        let WebhookKey::Entry(entry) = &keys[3] else {
            panic!("a table is an entry: {:?}", keys[3]);
        };
        let file = entry.key_file.as_ref().expect("key_file").relative();
        assert!(
            file.is_absolute() && file.ends_with("secrets/paysafe.b64"),
            "resolved against the file's folder"
        );
        assert_eq!(entry.encoding, KeyEncoding::Base64);

        // The table form must say its encoding: that is what it is for.
        jail.create_file(
            "implicit.toml",
            "mode = \"development\"\n[paysafe]\nwebhook_keys = [{ key = \"k\" }]\n",
        )?;
        let err = Settings::load(Some(Path::new("implicit.toml"))).unwrap_err();
        assert!(err.to_string().contains("encoding"), "{err}");

        // From the environment, a single entry needs no brackets.
        jail.set_env(
            "CONNECTOR_PAYSAFE__WEBHOOK_KEYS",
            r#"{key="c2VjcmV0LWJ5dGVz", encoding="base64"}"#,
        );
        let settings = Settings::load(Some(Path::new("ingress.toml"))).expect("loads");
        assert_eq!(
            settings.paysafe.webhook_keys,
            [WebhookKey::inline("c2VjcmV0LWJ5dGVz", KeyEncoding::Base64)]
        );
        Ok(())
    });
}

#[test]
fn a_base64_key_that_does_not_decode_names_its_index_and_not_the_key() {
    let mut settings = development();
    settings.paysafe.webhook_keys = vec![
        "raw-key".into(),
        WebhookKey::inline("c2VjcmV0LWJ5dGVz", KeyEncoding::Base64),
        WebhookKey::inline("s3cr3t*not-base64!", KeyEncoding::Base64),
    ];
    let err = settings.validate().unwrap_err();
    assert_eq!(err.key, "paysafe.webhook_keys[2]");
    assert!(err.message.contains("base64"), "{err}");
    assert!(!err.to_string().contains("s3cr3t"), "{err}");
    // The same text as a raw key is fine: the encoding decides.
    settings.paysafe.webhook_keys[2] = WebhookKey::inline("s3cr3t*not-base64!", KeyEncoding::Raw);
    settings.validate().expect("valid");
    // Decoding to nothing is no key.
    settings.paysafe.webhook_keys[2] = WebhookKey::inline("", KeyEncoding::Base64);
    assert_eq!(
        settings.validate().unwrap_err().key,
        "paysafe.webhook_keys[2]"
    );
}

/// Production, with what it requires: TLS with client CAs and the ingress's own broker user.
fn production() -> Settings {
    let mut settings = Settings::default();
    settings.tls.cert_file = Some("pki/server.pem".into());
    settings.tls.key_file = Some("pki/server.key".into());
    settings.tls.client_ca_files = vec!["pki/banks-ca.pem".into()];
    settings.broker.url = "amqps://connector-ingress:s3cr3t@rabbit:5671/connector".into();
    settings
}

#[test]
fn production_refuses_each_unsafe_setting_naming_its_key() {
    production().validate().expect("a production configuration");
    let refused = |change: fn(&mut Settings)| {
        let mut settings = production();
        change(&mut settings);
        let err = settings.validate().unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        err
    };
    let no_tls = refused(|s| s.tls = TlsSettings::default());
    assert_eq!(no_tls.key, "tls.cert_file");
    assert_eq!(
        refused(|s| s.tls.client_ca_files.clear()).key,
        "tls.client_ca_files"
    );
    for guest in [
        "amqp://guest:guest@rabbit:5672/%2f",
        "amqp://rabbit:5672/%2f", // no user: lapin logs in as guest
    ] {
        let mut settings = production();
        settings.broker.url = guest.into();
        let err = settings.validate().unwrap_err();
        assert_eq!(err.key, "broker.url", "{guest}");
        assert!(err.message.contains("guest"), "{err}");
    }
    // Behind a load balancer that terminates mTLS, a trusted proxy stands for our own TLS,
    // within the bound.
    let mut behind = production();
    behind.tls = TlsSettings::default();
    behind.proxy.trusted_addresses = vec!["10.20.0.0/16".into(), "fd00:1:2::/48".into()];
    behind.validate().expect("proxies within the bounds");
    for (wide, bound) in [
        ("0.0.0.0/0", "widest_ipv4_prefix"),
        ("10.0.0.0/8", "widest_ipv4_prefix"),
        ("::/0", "widest_ipv6_prefix"),
        ("::ffff:0.0.0.0/0", "widest_ipv4_prefix"),
        ("fd00::/8", "widest_ipv6_prefix"),
    ] {
        let mut settings = behind.clone();
        settings.proxy.trusted_addresses.push(wide.into());
        let err = settings.validate().unwrap_err();
        assert_eq!(err.key, "proxy.trusted_addresses[2]", "{wide}");
        assert!(err.message.contains(bound), "{wide}: {err}");
    }
    // The bound itself cannot be opened to everything.
    let mut settings = behind.clone();
    settings.proxy.widest_ipv4_prefix = 0;
    assert_eq!(
        settings.validate().unwrap_err().key,
        "proxy.widest_ipv4_prefix"
    );
    settings.proxy.widest_ipv4_prefix = 8;
    settings.proxy.trusted_addresses.push("10.0.0.0/8".into());
    settings
        .validate()
        .expect("a wider bound, configured, allows a wider block");
    // Development allows what production refuses.
    let mut settings = behind;
    settings.mode = Mode::Development;
    settings.proxy.trusted_addresses = vec!["0.0.0.0/0".into()];
    settings.broker.url = "amqp://guest:guest@127.0.0.1:5672/%2f".into();
    settings.validate().expect("development");
}

#[test]
fn a_paysafe_key_id_is_checked_and_errors_name_the_entry_never_a_key() {
    let refused = |keys: Vec<WebhookKey>| {
        let mut settings = development();
        settings.paysafe.webhook_keys = keys;
        let err = settings.validate().unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        err
    };
    let key = |text: &str, id: &str| WebhookKey::from(text).with_id(id);

    let err = refused(vec![
        key("s3cr3t-a", "paysafe-2025"),
        "s3cr3t-b".into(),
        key("s3cr3t-c", "paysafe-2025"),
    ]);
    assert_eq!(err.key, "paysafe.webhook_keys[2].id");
    assert!(
        err.message.contains("paysafe.webhook_keys[0].id"),
        "names the first holder: {err}"
    );

    for (id, why) in [
        ("", "must not be empty"),
        ("paysafe 2025", "a letter, a digit"),
        ("paysafe/2025", "a letter, a digit"),
        ("clé-2025", "a letter, a digit"),
        // A positional name is refused as an id, so the two can never collide.
        ("webhook_keys[0]", "a letter, a digit"),
        (&"k".repeat(65), "at most 64"),
    ] {
        let err = refused(vec!["s3cr3t-a".into(), key("s3cr3t-b", id)]);
        assert_eq!(err.key, "paysafe.webhook_keys[1].id", "{id:?}");
        assert!(err.message.contains(why), "{id:?}: {err}");
    }
    // The key pasted as its own id would be recorded with every webhook.
    let err = refused(vec![key("s3cr3t-key", "s3cr3t-key")]);
    assert_eq!(err.key, "paysafe.webhook_keys[0].id");

    // The longest, every allowed character; ids beside positional names and key files.
    let mut settings = development();
    let longest = format!("A-z.0_9{}", "x".repeat(57));
    settings.paysafe.webhook_keys = vec![
        "s3cr3t-a".into(),
        key("s3cr3t-b", &longest),
        WebhookKey::file("secrets/paysafe.b64", KeyEncoding::Base64).with_id("from-file"),
    ];
    settings.paysafe.webhook_key_files = vec!["secrets/paysafe".into()];
    settings.validate().expect("valid");
    assert_eq!(
        settings.paysafe.key_ids().unwrap(),
        [
            "webhook_keys[0]",
            longest.as_str(),
            "from-file",
            "webhook_key_files[0]"
        ]
    );
    let shown = format!("{:?}", settings.paysafe.webhook_keys[1]);
    assert!(
        shown.contains(&longest) && !shown.contains("s3cr3t"),
        "{shown}"
    );
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail API, not ours
fn a_paysafe_key_id_comes_from_the_file_or_the_environment() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "ingress.toml",
            r#"
            mode = "development"
            [paysafe]
            webhook_keys = [
              { id = "paysafe-2025", key = "old-key", encoding = "raw" },
              { id = "paysafe-2026", key_file = "secrets/paysafe.b64", encoding = "base64" },
            ]
            "#,
        )?;
        let settings = Settings::load(Some(Path::new("ingress.toml"))).expect("loads");
        assert_eq!(
            settings.paysafe.key_ids().unwrap(),
            ["paysafe-2025", "paysafe-2026"]
        );

        jail.set_env(
            "CONNECTOR_PAYSAFE__WEBHOOK_KEYS",
            r#"{id="paysafe-dev-1", key="dev-key", encoding="raw"}"#,
        );
        let settings = Settings::load(Some(Path::new("ingress.toml"))).expect("loads");
        assert_eq!(settings.paysafe.key_ids().unwrap(), ["paysafe-dev-1"]);

        // Load runs the checks: a repeated id stops it, naming the entry.
        jail.set_env(
            "CONNECTOR_PAYSAFE__WEBHOOK_KEYS",
            r#"[{id="k-1", key="a", encoding="raw"}, {id="k-1", key="b", encoding="raw"}]"#,
        );
        let err = Settings::load(Some(Path::new("ingress.toml"))).unwrap_err();
        assert_eq!(err.key, "paysafe.webhook_keys[1].id");
        Ok(())
    });
}
