//! CPU time and memory of processes from `/proc` (Linux), so that a benchmark can say where
//! the machine's CPU went during its timed window: per process (the ingress, RabbitMQ's
//! `beam.smp`, PostgreSQL, the benchmark itself), the rest of the machine, and idle.
//!
//! CPU time is `utime + stime` of `/proc/<pid>/stat` (all threads of the process, including
//! those that have exited), in clock ticks (`USER_HZ`, 100 on Linux: a 10 ms resolution, so
//! windows should last a few seconds). The machine's busy and idle time come from the first
//! line of `/proc/stat`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// `USER_HZ`: fixed at 100 by the Linux ABI on every architecture the tools run on.
const TICKS_PER_SECOND: f64 = 100.0;

/// Which processes one line of the breakdown sums.
#[derive(Debug, Clone)]
pub enum Selector {
    /// These pids (those that still exist).
    Pids(Vec<u32>),
    /// Every process whose `comm` (the executable name, cut to 15 bytes) equals this.
    Comm(String),
    /// The process with this `comm` that listens on this TCP port (say, the broker rather
    /// than a `rabbitmqctl` that happens to run), or every process with it if none is found.
    Listening(String, u16),
    /// This process.
    Current,
    /// Threads of this process whose name starts with this (a runtime's `thread_name`).
    Threads(&'static str),
    /// Threads of this process whose name starts with none of these.
    OtherThreads(&'static [&'static str]),
}

impl Selector {
    /// CPU ticks by pid (by thread id for the thread selectors).
    fn ticks(&self) -> HashMap<u32, u64> {
        let threads = matches!(self, Self::Threads(_) | Self::OtherThreads(_));
        self.pids()
            .into_iter()
            .filter_map(|id| {
                let ticks = if threads {
                    thread_ticks(id)
                } else {
                    process_ticks(id)
                };
                ticks.map(|ticks| (id, ticks))
            })
            .collect()
    }

    fn pids(&self) -> Vec<u32> {
        match self {
            Self::Pids(pids) => pids.clone(),
            Self::Comm(name) => pids_by_comm(name),
            Self::Listening(name, port) => {
                let all = pids_by_comm(name);
                let inodes = listening_inodes(*port);
                let owners: Vec<u32> = all
                    .iter()
                    .copied()
                    .filter(|pid| owns_any_socket(*pid, &inodes))
                    .collect();
                if owners.is_empty() { all } else { owners }
            }
            Self::Current => vec![std::process::id()],
            Self::Threads(prefix) => own_threads(|name| name.starts_with(prefix)),
            Self::OtherThreads(prefixes) => {
                own_threads(|name| !prefixes.iter().any(|p| name.starts_with(p)))
            }
        }
    }
}

/// Ids of this process's threads whose name (`comm`) satisfies `keep`.
fn own_threads(keep: impl Fn(&str) -> bool) -> Vec<u32> {
    ids_named("/proc/self/task", keep)
}

/// The numeric entries of `dir` (pids in `/proc`, thread ids in a task folder) whose `comm`
/// satisfies `keep`, sorted.
fn ids_named(dir: &str, keep: impl Fn(&str) -> bool) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut ids: Vec<u32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|id| {
            std::fs::read_to_string(format!("{dir}/{id}/comm"))
                .is_ok_and(|comm| keep(comm.trim_end()))
        })
        .collect();
    ids.sort_unstable();
    ids
}

/// A labelled group of processes to account for.
#[derive(Debug, Clone)]
pub struct Group {
    pub label: String,
    pub selector: Selector,
}

impl Group {
    pub fn new(label: impl Into<String>, selector: Selector) -> Self {
        Self {
            label: label.into(),
            selector,
        }
    }
}

/// CPU ticks of every group and of the whole machine at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    at: Instant,
    /// (busy, idle) ticks of the whole machine, all cores.
    machine: (u64, u64),
    /// Per group: ticks by pid.
    groups: Vec<HashMap<u32, u64>>,
}

/// Takes a snapshot of `groups` (in order) and of the machine.
pub fn snapshot(groups: &[Group]) -> Snapshot {
    let groups = groups.iter().map(|group| group.selector.ticks()).collect();
    Snapshot {
        at: Instant::now(),
        machine: machine_ticks().unwrap_or((0, 0)),
        groups,
    }
}

/// What each group used between two snapshots.
#[derive(Debug, Clone)]
pub struct Breakdown {
    pub elapsed: Duration,
    pub cores: usize,
    /// (label, pids seen, CPU seconds) in the order of the groups.
    pub groups: Vec<(String, Vec<u32>, f64)>,
    /// Busy CPU seconds of the whole machine.
    pub machine_busy: f64,
    pub machine_idle: f64,
}

impl Breakdown {
    /// `before` and `after` must come from the same `groups`.
    pub fn between(groups: &[Group], before: &Snapshot, after: &Snapshot) -> Self {
        let seconds = |ticks: u64| ticks as f64 / TICKS_PER_SECOND;
        let rows = groups
            .iter()
            .zip(before.groups.iter().zip(&after.groups))
            .map(|(group, (start, end))| {
                // A process that appeared during the window counts from zero; one that ended
                // during it is lost (its time went to its parent's children's time).
                let ticks: u64 = end
                    .iter()
                    .map(|(pid, ticks)| ticks.saturating_sub(start.get(pid).copied().unwrap_or(0)))
                    .sum();
                let mut pids: Vec<u32> = end.keys().copied().collect();
                pids.sort_unstable();
                (group.label.clone(), pids, seconds(ticks))
            })
            .collect();
        Self {
            elapsed: after.at.saturating_duration_since(before.at),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            groups: rows,
            machine_busy: seconds(after.machine.0.saturating_sub(before.machine.0)),
            machine_idle: seconds(after.machine.1.saturating_sub(before.machine.1)),
        }
    }

    /// CPU seconds of the group with this label.
    pub fn seconds(&self, label: &str) -> Option<f64> {
        self.groups
            .iter()
            .find(|(l, pids, _)| l == label && !pids.is_empty())
            .map(|(_, _, s)| *s)
    }

    /// `seconds` of CPU as a share of all cores over the window (`-` for an empty window).
    pub fn share_of_cores(&self, seconds: f64) -> String {
        let capacity = self.elapsed.as_secs_f64() * self.cores as f64;
        if capacity > 0.0 {
            format!("{:.0} %", 100.0 * seconds / capacity)
        } else {
            "-".into()
        }
    }

    /// A Markdown table: CPU seconds, share of all cores over the window, and microseconds per
    /// `unit` (`count` of them were done in the window).
    pub fn table(&self, count: u64, unit: &str) -> String {
        let share = |seconds: f64| self.share_of_cores(seconds);
        let per = |seconds: f64| {
            if count > 0 {
                format!("{:.1}", seconds * 1e6 / count as f64)
            } else {
                "-".into()
            }
        };
        let mut rows = Vec::new();
        let mut accounted = 0.0;
        for (label, pids, seconds) in &self.groups {
            if pids.is_empty() {
                rows.push(vec![
                    format!("{label} (not found)"),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]);
                continue;
            }
            accounted += seconds;
            let pids = if pids.len() <= 3 {
                pids.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                format!("{} pids", pids.len())
            };
            rows.push(vec![
                format!("{label} ({pids})"),
                format!("{seconds:.2}"),
                share(*seconds),
                per(*seconds),
            ]);
        }
        let rest = (self.machine_busy - accounted).max(0.0);
        rows.push(vec![
            "rest of the machine (kernel, other processes)".into(),
            format!("{rest:.2}"),
            share(rest),
            per(rest),
        ]);
        rows.push(vec![
            "idle".into(),
            format!("{:.2}", self.machine_idle),
            share(self.machine_idle),
            "-".into(),
        ]);
        let per_unit = format!("µs per {unit}");
        table(
            &["process", "CPU s", "share of the cores", per_unit.as_str()],
            rows,
        )
    }
}

/// `utime + stime` of a process, in ticks; `None` if it does not exist (any more).
pub fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_ticks(&stat)
}

/// `utime + stime` of one thread of this process (`/proc/<tid>/stat` would be the whole
/// process's).
fn thread_ticks(tid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    parse_stat_ticks(&stat)
}

/// The command name (field 2) may contain spaces and parentheses: fields are counted after the
/// last `)`. There, index 0 is field 3 (state), so utime (field 14) is index 11.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// (busy, idle) ticks of all cores from `/proc/stat`; iowait counts as idle, guest time is
/// already inside user time.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_ticks(stat.lines().next()?)
}

fn parse_machine_ticks(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    let get = |i: usize| values.get(i).copied().unwrap_or(0);
    let idle = get(3) + get(4);
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    Some((busy, idle))
}

/// Every pid whose `/proc/<pid>/comm` is `name`.
pub fn pids_by_comm(name: &str) -> Vec<u32> {
    ids_named("/proc", |comm| comm == name)
}

/// Inodes of the sockets listening on TCP `port` (IPv4 and IPv6), from `/proc/net/tcp*`.
fn listening_inodes(port: u16) -> Vec<String> {
    let port = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    // local_address, state 0A = LISTEN, inode
                    let listening = fields.get(1)?.ends_with(&port) && *fields.get(3)? == "0A";
                    listening.then(|| fields.get(9).map(|inode| (*inode).to_owned()))?
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn owns_any_socket(pid: u32, inodes: &[String]) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok).any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| {
            let target = target.to_string_lossy();
            inodes
                .iter()
                .any(|inode| target == format!("socket:[{inode}]"))
        })
    })
}

/// Resident memory of a process: (VmRSS, VmHWM) in KiB, from `/proc/<pid>/status`.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_memory(&status)
}

fn parse_memory(status: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// One ECDSA P-256 verification, as `openssl speed -seconds <s> ecdsap256` measures it on
/// this machine now (single core): (verifications per second, microseconds each).
pub fn openssl_ecdsa_p256_verify(seconds: u32) -> anyhow::Result<(f64, f64)> {
    use anyhow::Context as _;
    let output = std::process::Command::new("openssl")
        .args(["speed", "-seconds", &seconds.to_string(), "ecdsap256"])
        .output()
        .context("running `openssl speed` (is openssl installed?)")?;
    anyhow::ensure!(
        output.status.success(),
        "`openssl speed` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let per_second = parse_openssl_speed(&text)
        .with_context(|| format!("no nistp256 line in `openssl speed` output:\n{text}"))?;
    Ok((per_second, 1e6 / per_second))
}

/// The last number of the `nistp256` result line (`... sign/s verify/s`).
fn parse_openssl_speed(text: &str) -> Option<f64> {
    text.lines()
        .filter(|line| line.contains("(nistp256)"))
        .filter_map(|line| line.split_whitespace().last()?.parse::<f64>().ok())
        .next_back()
        .filter(|v| *v > 0.0)
}

/// A Markdown table with aligned columns (first column left, the others right).
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count().max(3)).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::from("|");
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            let pad = width.saturating_sub(cell.chars().count());
            if i == 0 {
                let _ = write!(text, " {cell}{} |", " ".repeat(pad));
            } else {
                let _ = write!(text, " {}{cell} |", " ".repeat(pad));
            }
        }
        text.push('\n');
        text
    };
    let mut out = line(headers.to_vec());
    let mut rule = String::from("|");
    for (i, width) in widths.iter().enumerate() {
        if i == 0 {
            let _ = write!(rule, " {} |", "-".repeat(*width));
        } else {
            let _ = write!(rule, " {}: |", "-".repeat(width.saturating_sub(1)));
        }
    }
    rule.push('\n');
    out.push_str(&rule);
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_ticks_after_the_command_name() {
        let stat =
            "1234 (tokio (rt) x) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(325));
        assert!(process_ticks(std::process::id()).is_some());
    }

    #[test]
    fn reads_machine_ticks() {
        let line = "cpu  264061 5745 48650 147166 2272 0 475 135 0 0";
        assert_eq!(
            parse_machine_ticks(line),
            Some((264_061 + 5745 + 48_650 + 475 + 135, 147_166 + 2272))
        );
    }

    #[test]
    fn finds_the_process_listening_on_a_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", std::process::id()))
            .unwrap()
            .trim_end()
            .to_owned();
        assert_eq!(
            Selector::Listening(comm, port).pids(),
            vec![std::process::id()]
        );
    }

    /// Spins until the calling thread has used `ticks` of CPU.
    fn burn(ticks: u64) {
        let own = || parse_stat_ticks(&std::fs::read_to_string("/proc/thread-self/stat").unwrap());
        let until = own().unwrap() + ticks;
        let mut x = 0_u64;
        while own().unwrap() < until {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
    }

    #[test]
    fn counts_a_named_thread_apart_from_the_others() {
        // The process has used at least 40 ticks elsewhere before the named thread starts.
        burn(40);
        let (burnt, wait) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let burner = std::thread::Builder::new()
            .name("procstat-burn".into())
            .spawn(move || {
                burn(20);
                burnt.send(()).unwrap();
                stopped.recv().ok();
            })
            .unwrap();
        wait.recv().unwrap();
        let named = Selector::Threads("procstat-burn").ticks();
        let others = Selector::OtherThreads(&["procstat-burn"]).ticks();
        stop.send(()).unwrap();
        burner.join().unwrap();

        assert_eq!(named.len(), 1, "{named:?}");
        let (tid, ticks) = named.into_iter().next().unwrap();
        // Its own time, not the whole process's (which `/proc/<tid>/stat` would give).
        assert!((20..40).contains(&ticks), "{ticks} ticks");
        assert!(!others.contains_key(&tid));
        assert!(others.contains_key(&std::process::id()), "{others:?}");
    }

    #[test]
    fn reads_resident_memory() {
        let status = "Name:\tx\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_memory(status), Some((10_240, 20_480)));
        assert!(memory_kib(std::process::id()).is_some());
    }

    #[test]
    fn reads_the_openssl_verify_rate() {
        let text = "Doing 256 bits sign ecdsa's for 2s\n                              sign    verify    sign/s verify/s\n 256 bits ecdsa (nistp256)   0.0000s   0.0001s  40000.1  17924.0\n";
        assert_eq!(parse_openssl_speed(text), Some(17_924.0));
    }

    #[test]
    fn a_breakdown_counts_new_processes_from_zero() {
        let groups = [Group::new("me", Selector::Current)];
        let before = snapshot(&groups);
        let mut x = 0u64;
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(1);
        }
        assert!(x > 0);
        let after = snapshot(&groups);
        let breakdown = Breakdown::between(&groups, &before, &after);
        assert!(breakdown.seconds("me").is_some());
        let text = breakdown.table(10, "request");
        assert!(text.contains("idle"), "{text}");
    }
}
