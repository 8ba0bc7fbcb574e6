//! `mode = "production"` (the default) refuses to start with what is only fine on a laptop. Each
//! refusal is driven from outside: the real binary, given such a configuration, exits non-zero
//! naming the key and why, before it binds or connects to anything.

use std::path::Path;
use std::process::Output;

use connector_e2e_tests::{binary, workers_binary};

/// A production broker URL with the process's own user (never used: refused first).
const OWN_USER: &str = "amqp://connector-ingress:not-used@127.0.0.1:5672/connector";

/// Runs `exe --config <file with contents> args...` with no `CONNECTOR_*` variable inherited
/// (the mode and every setting come from the file alone).
fn run(exe: &Path, dir: &Path, name: &str, contents: &str, args: &[&str]) -> Output {
    let config = dir.join(name);
    std::fs::write(&config, contents).unwrap();
    let mut command = std::process::Command::new(exe);
    command.arg("--config").arg(&config).args(args);
    for (variable, _) in std::env::vars() {
        if variable.starts_with("CONNECTOR_") {
            command.env_remove(variable);
        }
    }
    command.output().unwrap()
}

/// The process exited non-zero with a message naming `key` and containing `why`.
fn assert_refused(output: &Output, program: &str, key: &str, why: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{program} started: {stderr}");
    let expected = format!("{program}: configuration key `{key}`:");
    assert!(
        stderr.contains(&expected) && stderr.contains(why),
        "expected `{expected}` … `{why}`, got: {stderr}"
    );
}

const TLS: &str = r#"
[tls]
cert_file = "pki/server.pem"
key_file = "pki/server.key"
client_ca_files = ["pki/ca.pem"]
"#;

#[test]
fn the_ingress_refuses_to_start_in_production_with_each_unsafe_setting() {
    let dir = tempfile::tempdir().unwrap();
    let exe = binary("connector-ingress", "connector-ingress");
    let broker = format!("[broker]\nurl = \"{OWN_USER}\"\n");
    let cases = [
        (
            "no TLS, production by default",
            broker.clone(),
            "tls.cert_file",
            "requires TLS with client certificates",
        ),
        (
            "no TLS, production said",
            format!("mode = \"production\"\n{broker}"),
            "tls.cert_file",
            "requires TLS",
        ),
        (
            "TLS without the banks' CAs",
            format!("{broker}[tls]\ncert_file = \"s.pem\"\nkey_file = \"s.key\"\n"),
            "tls.client_ca_files",
            "CAs",
        ),
        (
            "the guest user",
            format!("{TLS}[broker]\nurl = \"amqp://guest:guest@127.0.0.1:5672/%2f\"\n"),
            "broker.url",
            "guest",
        ),
        (
            "the guest user, implied by a URL without one",
            format!("{TLS}[broker]\nurl = \"amqp://127.0.0.1:5672/%2f\"\n"),
            "broker.url",
            "guest",
        ),
        (
            "a proxy trusted from everywhere",
            format!("{broker}[proxy]\ntrusted_addresses = [\"10.0.0.7\", \"0.0.0.0/0\"]\n"),
            "proxy.trusted_addresses[1]",
            "wider than the /16",
        ),
        (
            "a proxy trusted from every IPv6 address",
            format!("{broker}[proxy]\ntrusted_addresses = [\"::/0\"]\n"),
            "proxy.trusted_addresses[0]",
            "widest_ipv6_prefix",
        ),
        (
            "a proxy range wider than the configured bound",
            format!(
                "{broker}[proxy]\ntrusted_addresses = [\"10.20.0.0/20\"]\nwidest_ipv4_prefix = 24\n"
            ),
            "proxy.trusted_addresses[0]",
            "wider than the /24",
        ),
    ];
    for (i, (name, contents, key, why)) in cases.iter().enumerate() {
        let output = run(
            &exe,
            dir.path(),
            &format!("ingress-{i}.toml"),
            contents,
            &[],
        );
        assert_refused(&output, "connector-ingress", key, why);
        eprintln!("refused as expected: {name}");
    }
}

/// The webhook key encodings' configuration error, from outside: a base64 key that does not
/// decode stops the ingress, naming its index and not the key.
#[test]
fn the_ingress_refuses_a_base64_webhook_key_that_does_not_decode() {
    let dir = tempfile::tempdir().unwrap();
    let exe = binary("connector-ingress", "connector-ingress");
    let contents = r#"
mode = "development"
[paysafe]
webhook_keys = ["raw-key", { key = "s3cr3t!not*base64", encoding = "base64" }]
"#;
    let output = run(&exe, dir.path(), "ingress.toml", contents, &[]);
    assert_refused(
        &output,
        "connector-ingress",
        "paysafe.webhook_keys[1]",
        "not valid base64",
    );
    assert!(!String::from_utf8_lossy(&output.stderr).contains("s3cr3t"));
}

/// Two webhook keys with one id would make a recorded id ambiguous: the ingress stops, naming
/// the second entry's id and the first, and quoting neither key.
#[test]
fn the_ingress_refuses_two_webhook_keys_with_one_id() {
    let dir = tempfile::tempdir().unwrap();
    let exe = binary("connector-ingress", "connector-ingress");
    let contents = r#"
mode = "development"
[paysafe]
webhook_keys = [
  { id = "paysafe-2025", key = "s3cr3t-old", encoding = "raw" },
  "s3cr3t-plain",
  { id = "paysafe-2025", key = "s3cr3t-new", encoding = "raw" },
]
"#;
    let output = run(&exe, dir.path(), "ingress.toml", contents, &[]);
    assert_refused(
        &output,
        "connector-ingress",
        "paysafe.webhook_keys[2].id",
        "the same as paysafe.webhook_keys[0].id",
    );
    assert!(!String::from_utf8_lossy(&output.stderr).contains("s3cr3t"));
}

#[test]
fn the_workers_refuse_to_start_in_production_with_guest_or_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let exe = workers_binary();
    let cases = [
        (
            "the guest user",
            "[broker]\nurl = \"amqp://guest:guest@127.0.0.1:5672/%2f\"\n".to_owned(),
            "broker.url",
            "guest",
        ),
        (
            "a plain-http Paysafe API",
            format!(
                "mode = \"production\"\n[broker]\nurl = \"{OWN_USER}\"\n[paysafe]\nbase_url = \"http://paysafe-sim:8090\"\n"
            ),
            "paysafe.base_url",
            "https://",
        ),
    ];
    // Every command reads the configuration first: the roles and the admin commands alike.
    for (i, (name, contents, key, why)) in cases.iter().enumerate() {
        for args in [&["run", "--role", "poller"][..], &["migrate"][..]] {
            let output = run(
                &exe,
                dir.path(),
                &format!("workers-{i}.toml"),
                contents,
                args,
            );
            assert_refused(&output, "connector-workers", key, why);
        }
        eprintln!("refused as expected: {name}");
    }
}

/// `paysafe.ca_file` is read and parsed at start-up: a missing file, or one that holds no
/// certificate, stops the workers naming the key (in production and development alike).
#[test]
fn the_workers_refuse_a_paysafe_ca_file_that_is_not_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let exe = workers_binary();
    std::fs::write(dir.path().join("not-a-ca.pem"), "just text\n").unwrap();
    let cases = [
        ("not-a-ca.pem", "holds no PEM certificate"),
        ("missing.pem", "cannot read"),
    ];
    for (i, (file, why)) in cases.iter().enumerate() {
        let contents = format!(
            "mode = \"production\"\n[broker]\nurl = \"{OWN_USER}\"\n[paysafe]\nca_file = \"{file}\"\n"
        );
        let output = run(
            &exe,
            dir.path(),
            &format!("workers-ca-{i}.toml"),
            &contents,
            &["run", "--role", "poller"],
        );
        assert_refused(&output, "connector-workers", "paysafe.ca_file", why);
        assert!(String::from_utf8_lossy(&output.stderr).contains(file));
    }
}

/// A base64 key in a file is decoded at start-up: one that does not decode stops the ingress,
/// naming the entry and the file, never the key.
#[test]
fn the_ingress_refuses_a_base64_key_file_that_does_not_decode() {
    let dir = tempfile::tempdir().unwrap();
    let exe = binary("connector-ingress", "connector-ingress");
    std::fs::write(dir.path().join("paysafe.b64"), "s3cr3t!not*base64\n").unwrap();
    let contents = r#"
mode = "development"
[http]
listen = "127.0.0.1:0"
ops_listen = "127.0.0.1:0"
[paysafe]
webhook_keys = [{ key_file = "paysafe.b64", encoding = "base64" }]
"#;
    let output = run(&exe, dir.path(), "ingress.toml", contents, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "started: {stderr}");
    assert!(
        stderr.contains("configuration key `paysafe.webhook_keys[0].key_file`")
            && stderr.contains("paysafe.b64")
            && stderr.contains("not valid base64"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cr3t"), "{stderr}");
}
