//! The harness's one voice. Every progress and result line goes through [`out`], flushed at
//! once, so that a run piped into a log, or stopped half-way, shows everything said so far in
//! the order it happened.

use std::io::Write as _;

/// Prints one line on stdout and flushes it (a closed pipe is not an error of the run).
pub fn out(line: impl AsRef<str>) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{}", line.as_ref());
    let _ = stdout.flush();
}
