//! Structured logs: JSON lines in production, human-readable in a terminal. `RUST_LOG`
//! overrides the configured filter.
//!
//! Logging never fails a request nor holds up a shutdown. Lines go through a bounded queue to
//! a thread of their own that writes stderr: when the reader is slow or stalled (a log collector
//! busy, a terminal paused), the queue fills and further lines are dropped; when it is gone (a
//! collector or journald restarting, the `tee` of a terminal killed by Ctrl-C first), the
//! write fails and the line is dropped. Either way the loss is counted in
//! `connector_log_lines_dropped_total`, and no error reaches the code that logged (the
//! subscriber's own report of a failed write would go to the same broken stderr, and panic).

use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Lines waiting to be written at most, when stderr's reader is slower than the process
    /// (or stalled); beyond, lines are dropped and counted rather than anything waiting. The
    /// default, about 16 MiB of JSON lines, is seconds of a busy process: a collector's restart
    /// loses nothing.
    pub queued_lines: usize,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            filter: "info".into(),
            queued_lines: 50_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// The counter of lines lost to a full queue or a failed write.
const DROPPED: &str = "connector_log_lines_dropped_total";

/// Writes that failed (stderr gone), counted by the writer thread.
static FAILED_WRITES: AtomicU64 = AtomicU64::new(0);

/// Keeps the log writer thread; dropping it writes what is still queued, for at most about a
/// second (a stalled reader cannot hold up the exit). Hold it in `main`.
#[must_use = "logs stop being written once the guard is dropped"]
#[derive(Debug)]
pub struct LogGuard {
    _writer: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// Installs the global subscriber (logs on stderr); later calls, as in tests, are no-ops.
pub fn init(settings: &LogSettings) -> LogGuard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.filter));
    let (queue, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(settings.queued_lines.max(1))
        .lossy(true)
        .thread_name("log-writer")
        .finish(DroppingStderr::default());
    let writer = CountingQueue {
        queue,
        last_reported: std::sync::Arc::new(AtomicU64::new(0)),
    };
    // Colours only for a terminal: escape codes in a file or a pipe garble what reads it.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .log_internal_errors(false)
        .with_writer(writer);
    let installed = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    LogGuard {
        _writer: installed.ok().map(|()| guard),
    }
}

/// The queue to the writer thread, reporting lines it dropped to the metrics.
#[derive(Clone)]
struct CountingQueue {
    queue: tracing_appender::non_blocking::NonBlocking,
    last_reported: std::sync::Arc<AtomicU64>,
}

impl CountingQueue {
    fn report_drops(&self) {
        let dropped = self.queue.error_counter().dropped_lines() as u64
            + FAILED_WRITES.load(Ordering::Relaxed);
        if self.last_reported.swap(dropped, Ordering::Relaxed) != dropped {
            metrics::counter!(DROPPED).absolute(dropped);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CountingQueue {
    type Writer = tracing_appender::non_blocking::NonBlocking;

    fn make_writer(&'a self) -> Self::Writer {
        self.report_drops();
        self.queue.clone()
    }
}

/// Stderr, from the writer thread. The thread writes every line it finds queued, then flushes:
/// lines are gathered here and written in one call at the flush (or when [`FLUSH_AT`] bytes are
/// pending), so that a busy process makes one write call per batch instead of one per line
/// (at `info` every accepted request logs a line). A failed write drops what it carried and
/// counts those lines.
#[derive(Debug, Default)]
struct DroppingStderr {
    pending: Vec<u8>,
    lines: u64,
}

/// Bytes gathered at most before they are written, a flush or not.
const FLUSH_AT: usize = 64 * 1024;

impl std::io::Write for DroppingStderr {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(line);
        self.lines += 1;
        if self.pending.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut stderr = std::io::stderr().lock();
        if stderr.write_all(&self.pending).is_err() {
            FAILED_WRITES.fetch_add(self.lines, Ordering::Relaxed);
        }
        let _ = stderr.flush();
        self.pending.clear();
        self.lines = 0;
        Ok(())
    }
}
