//! Every log line a test binary writes, kept in memory so a test can assert that no secret
//! (a card token, an account number, an HMAC key, a signature) was ever logged.
//!
//! The subscriber is process-wide and the end-to-end tests are one binary: whichever test logs
//! first installs it ([`install`]), and it holds the lines of every test, which must all be
//! secret-free anyway. Each line also goes to the test's own output, shown when it fails.

use std::sync::{Arc, Mutex, OnceLock};

/// Everything logged so far, from any test or task of this binary, at trace level for the
/// connector's crates.
pub fn captured() -> String {
    let logs = sink().lock().unwrap_or_else(|e| e.into_inner());
    String::from_utf8_lossy(&logs).into_owned()
}

/// Installs the capture if it is not yet (call first thing in each test).
pub fn install() {
    sink();
}

/// Panics if any of `secrets` appears in the captured logs; `marker` must appear, proving the
/// capture saw the code under test.
pub fn assert_absent(marker: &str, secrets: &[&str]) {
    let logs = captured();
    assert!(
        logs.contains(marker),
        "the capture works: no `{marker}` in the logs"
    );
    for secret in secrets {
        assert!(!logs.contains(secret), "a secret was logged");
    }
}

fn sink() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        tracing_subscriber::fmt()
            .with_writer(move || Writer(sink.clone()))
            .with_env_filter(
                "info,connector_ingress=trace,connector_workers=trace,connector_schema=trace,sqlx=debug",
            )
            .with_ansi(false)
            .init();
        logs
    })
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        tracing_subscriber::fmt::TestWriter::new().write_all(bytes)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[should_panic(expected = "a secret was logged")]
    fn a_logged_secret_is_caught() {
        super::install();
        tracing::info!(token = "tok-1234", "capture-marker");
        super::assert_absent("capture-marker", &["tok-1234"]);
    }
}
