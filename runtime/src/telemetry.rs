//! Structured logs: JSON lines in production, human-readable in a terminal. `RUST_LOG`
//! overrides the configured filter.
//!
//! Logging never fails a request nor blocks a shutdown: when stderr is gone (a log collector or
//! journald restarting, the `tee` of a terminal killed by Ctrl-C first), a line is dropped and
//! counted in `connector_log_lines_dropped_total` instead of an error reaching the caller. (The
//! subscriber's own report of a failed write would go to the same broken stderr and panic.)

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// The `[log]` section of every process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `json` in production (one object a line), `pretty` for a terminal.
    pub format: LogFormat,
    /// A `tracing` filter such as `info,connector_ingress=debug`; `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            filter: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Installs the global subscriber (logs on stderr); later calls, as in tests, are no-ops.
pub fn init(settings: &LogSettings) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.filter));
    // Colours only for a terminal: escape codes in a file or a pipe garble what reads it.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .log_internal_errors(false)
        .with_writer(|| DroppingStderr);
    let _ = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// Stderr whose failed writes drop the line (counted) instead of failing the caller.
#[derive(Debug)]
struct DroppingStderr;

impl std::io::Write for DroppingStderr {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        if std::io::stderr().write_all(line).is_err() {
            metrics::counter!("connector_log_lines_dropped_total").increment(1);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}
