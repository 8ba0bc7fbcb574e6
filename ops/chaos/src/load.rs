//! The bank: correctly signed Corelink requests, unit and batch, sent by a few client tasks
//! without pause (or, in a soak, on a fixed schedule). Each is retried (fresh nonce, timestamp
//! and signature; same idempotency key and body) after a 503, a timeout or a lost connection
//! until it gets a 200 or the run ends, and some are re-sent on purpose after their 200
//! (duplicates). Every 200 goes into the client's log.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connector_ingress::auth::signing::{RequestSigner, random_nonce};
use time::OffsetDateTime;

pub const UNIT_PATH: &str = "/callbacks/orders/status";
pub const BATCH_PATH: &str = "/callbacks/orders/status/batch";
/// Longer than the ingress's confirm timeout (5 s), so a slow confirm answers 503 first.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub type Status = &'static str;
pub const PENDING: Status = "PENDING";
pub const SUCCESS: Status = "SUCCESS";
pub const FAILED: Status = "FAILED";

/// A fixed schedule of request starts shared by the client tasks.
#[derive(Debug)]
struct Pace {
    start: tokio::time::Instant,
    interval: Duration,
    next: u64,
}

/// One logical request: what a retry or a duplicate sends again, byte for byte.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: &'static str,
    pub key: String,
    pub body: String,
    pub orders: Vec<(String, Status)>,
    /// Half of a deliberate FINAL_STATUS_CONFLICT pair: one of the two must be quarantined.
    pub conflict: bool,
}

impl Request {
    pub fn is_batch(&self) -> bool {
        self.path == BATCH_PATH
    }
}

/// One line of the client's log: a 200.
#[derive(Debug, Clone)]
pub struct Ack {
    pub request: Arc<Request>,
}

#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub ok: AtomicU64,
    pub unavailable: AtomicU64,
    pub timeouts: AtomicU64,
    pub transport: AtomicU64,
    pub rejected: AtomicU64,
    pub duplicate_sends: AtomicU64,
    pub logical: AtomicU64,
    pub abandoned: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub sent: u64,
    pub ok: u64,
    pub unavailable: u64,
    pub timeouts: u64,
    pub transport: u64,
    pub rejected: u64,
    pub duplicate_sends: u64,
    pub logical: u64,
    pub abandoned: u64,
}

impl Snapshot {
    pub fn minus(self, before: Snapshot) -> Snapshot {
        Snapshot {
            sent: self.sent - before.sent,
            ok: self.ok - before.ok,
            unavailable: self.unavailable - before.unavailable,
            timeouts: self.timeouts - before.timeouts,
            transport: self.transport - before.transport,
            rejected: self.rejected - before.rejected,
            duplicate_sends: self.duplicate_sends - before.duplicate_sends,
            logical: self.logical - before.logical,
            abandoned: self.abandoned - before.abandoned,
        }
    }
}

impl Counters {
    pub fn snapshot(&self) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            sent: get(&self.sent),
            ok: get(&self.ok),
            unavailable: get(&self.unavailable),
            timeouts: get(&self.timeouts),
            transport: get(&self.transport),
            rejected: get(&self.rejected),
            duplicate_sends: get(&self.duplicate_sends),
            logical: get(&self.logical),
            abandoned: get(&self.abandoned),
        }
    }
}

/// Everything the client tasks share, and what the checks read afterwards.
#[derive(Debug)]
pub struct Bank {
    signer: RequestSigner,
    http: reqwest::Client,
    targets: Vec<String>,
    run_id: String,
    seq: AtomicU64,
    pub counters: Counters,
    /// Every 200, in order.
    pub acks: Mutex<Vec<Ack>>,
    /// Every status ever sent for each reference (acknowledged or not).
    pub sent: Mutex<HashMap<String, Vec<Status>>>,
    /// Answers that are neither 200 nor worth a retry (a bug on one side or the other).
    pub unexpected: Mutex<Vec<String>>,
    acked_pool: Mutex<Vec<Arc<Request>>>,
    accepting: AtomicBool,
    retrying: AtomicBool,
    /// Soak: new logical requests are started at a fixed rate instead of back to back.
    pace: Mutex<Option<Pace>>,
    /// Set while the harness holds a broker memory alarm.
    in_alarm: AtomicBool,
    /// Nonces of the attempts answered 503 during a memory alarm: none may be applied.
    pub refused_in_alarm: Mutex<Vec<String>>,
    log: Mutex<std::fs::File>,
    started: Instant,
}

impl Bank {
    pub fn new(
        signer: RequestSigner,
        targets: Vec<String>,
        run_id: String,
        log_path: &std::path::Path,
    ) -> anyhow::Result<Arc<Self>> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Arc::new(Self {
            signer,
            http,
            targets,
            run_id,
            seq: AtomicU64::new(0),
            counters: Counters::default(),
            acks: Mutex::new(Vec::new()),
            sent: Mutex::new(HashMap::new()),
            unexpected: Mutex::new(Vec::new()),
            acked_pool: Mutex::new(Vec::new()),
            accepting: AtomicBool::new(true),
            retrying: AtomicBool::new(true),
            pace: Mutex::new(None),
            in_alarm: AtomicBool::new(false),
            refused_in_alarm: Mutex::new(Vec::new()),
            log: Mutex::new(std::fs::File::create(log_path)?),
            started: Instant::now(),
        }))
    }

    /// No new logical requests; those under way keep retrying.
    pub fn stop_new(&self) {
        self.accepting.store(false, Ordering::SeqCst);
    }

    /// Requests still without a 200 are abandoned (the run ends).
    pub fn stop_retrying(&self) {
        self.retrying.store(false, Ordering::SeqCst);
    }

    /// Starts `concurrency` client tasks; they end after [`Self::stop_new`]. With `rate`, the
    /// tasks together start that many new orders (or batches) per second, on a fixed schedule
    /// that does not wait for answers (open loop); without, each starts the next as soon as
    /// its last is done.
    pub fn start(
        self: &Arc<Self>,
        concurrency: usize,
        rate: Option<f64>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        self.accepting.store(true, Ordering::SeqCst);
        self.retrying.store(true, Ordering::SeqCst);
        *self.pace.lock().unwrap_or_else(|e| e.into_inner()) = rate.map(|rate| Pace {
            start: tokio::time::Instant::now(),
            interval: Duration::from_secs_f64(1.0 / rate),
            next: 0,
        });
        (0..concurrency)
            .map(|i| {
                let bank = Arc::clone(self);
                tokio::spawn(async move { bank.client_task(i as u64).await })
            })
            .collect()
    }

    async fn client_task(self: Arc<Self>, task: u64) {
        let mut rng = Rng::new(task);
        while self.accepting.load(Ordering::SeqCst) {
            self.wait_turn().await;
            let n = self.seq.fetch_add(1, Ordering::Relaxed);
            let roll = rng.below(100);
            if roll < 45 {
                self.unit_order(n, &mut rng).await;
            } else if roll < 96 {
                self.batch(n, &mut rng).await;
            } else {
                self.conflict_pair(n).await;
            }
            // A late duplicate of an older request, long after its 200.
            if rng.below(100) < 10 {
                let old = {
                    let pool = self.acked_pool.lock().unwrap_or_else(|e| e.into_inner());
                    if pool.is_empty() {
                        None
                    } else {
                        Some(Arc::clone(&pool[rng.below(pool.len() as u64) as usize]))
                    }
                };
                if let Some(old) = old {
                    self.send(&old, true, n).await;
                }
            }
        }
    }

    /// New orders or batches started so far (the unit of `rate`).
    pub fn started(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }

    /// Paced: sleeps until this task's next slot on the shared schedule (at once when the
    /// schedule is behind, so a slow answer is caught up rather than dropped).
    async fn wait_turn(&self) {
        let slot = {
            let mut pace = self.pace.lock().unwrap_or_else(|e| e.into_inner());
            let Some(pace) = pace.as_mut() else { return };
            let slot = pace.start + pace.interval.mul_f64(pace.next as f64);
            pace.next += 1;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    fn final_status(rng: &mut Rng) -> Status {
        if rng.below(3) == 0 { FAILED } else { SUCCESS }
    }

    /// One order by unit calls, under the reference as key: sometimes PENDING first.
    async fn unit_order(&self, n: u64, rng: &mut Rng) {
        let reference = format!("CH-{}-U{n}", self.run_id);
        if rng.below(100) < 30 {
            let pending = Arc::new(Request {
                path: UNIT_PATH,
                key: reference.clone(),
                body: unit_body(&reference, PENDING),
                orders: vec![(reference.clone(), PENDING)],
                conflict: false,
            });
            if !self.send_with_duplicates(&pending, n, rng).await {
                return;
            }
        }
        let status = Self::final_status(rng);
        let request = Arc::new(Request {
            path: UNIT_PATH,
            key: reference.clone(),
            body: unit_body(&reference, status),
            orders: vec![(reference, status)],
            conflict: false,
        });
        self.send_with_duplicates(&request, n, rng).await;
    }

    async fn batch(&self, n: u64, rng: &mut Rng) {
        let key = format!("CH-{}-B{n}", self.run_id);
        let size = 2 + rng.below(9) as usize;
        let orders: Vec<(String, Status)> = (0..size)
            .map(|i| (format!("{key}-{i}"), Self::final_status(rng)))
            .collect();
        let request = Arc::new(Request {
            path: BATCH_PATH,
            key: key.clone(),
            body: batch_body(&key, &orders),
            orders,
            conflict: false,
        });
        self.send_with_duplicates(&request, n, rng).await;
    }

    /// SUCCESS and FAILED for one new order, under two keys, at the same time: whichever is
    /// applied first wins, the other must be quarantined as FINAL_STATUS_CONFLICT.
    async fn conflict_pair(&self, n: u64) {
        let reference = format!("CH-{}-X{n}", self.run_id);
        let make = |status: Status, suffix: &str| {
            Arc::new(Request {
                path: UNIT_PATH,
                key: format!("{reference}-{suffix}"),
                body: unit_body(&reference, status),
                orders: vec![(reference.clone(), status)],
                conflict: true,
            })
        };
        let (a, b) = (make(SUCCESS, "s"), make(FAILED, "f"));
        tokio::join!(self.send(&a, false, n), self.send(&b, false, n + 1));
    }

    /// Sends until a 200; then, now and then, the same request again as a bank's retry would.
    async fn send_with_duplicates(&self, request: &Arc<Request>, n: u64, rng: &mut Rng) -> bool {
        let acked = self.send(request, false, n).await;
        if acked {
            if rng.below(100) < 15 {
                self.send(request, true, n + 1).await;
            }
            let mut pool = self.acked_pool.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < 2000 {
                pool.push(Arc::clone(request));
            } else {
                let i = rng.below(pool.len() as u64) as usize;
                pool[i] = Arc::clone(request);
            }
        }
        acked
    }

    /// One logical request: attempts until a 200, a refusal, or the end of the run.
    async fn send(&self, request: &Arc<Request>, duplicate: bool, seed: u64) -> bool {
        self.counters.logical.fetch_add(1, Ordering::Relaxed);
        if !duplicate {
            let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
            for (reference, status) in &request.orders {
                sent.entry(reference.clone()).or_default().push(status);
            }
        }
        let mut delay = Duration::from_millis(100);
        for attempt in 0u64.. {
            if attempt > 0 && !self.retrying.load(Ordering::SeqCst) {
                self.counters.abandoned.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            let target = &self.targets[((seed + attempt) % self.targets.len() as u64) as usize];
            let nonce = random_nonce();
            let signed = match self.signer.sign(
                request.path,
                request.body.as_bytes(),
                &request.key,
                OffsetDateTime::now_utc(),
                &nonce,
            ) {
                Ok(signed) => signed,
                Err(error) => {
                    self.unexpected(format!("signing {}: {error:#}", request.key));
                    return false;
                }
            };
            let mut builder = self
                .http
                .post(format!("{target}{}", request.path))
                .body(request.body.clone());
            for (name, value) in signed.pairs() {
                builder = builder.header(name, value);
            }
            self.counters.sent.fetch_add(1, Ordering::Relaxed);
            if duplicate {
                self.counters
                    .duplicate_sends
                    .fetch_add(1, Ordering::Relaxed);
            }
            match builder.send().await {
                Ok(answer) if answer.status() == reqwest::StatusCode::OK => {
                    let text = answer.text().await.unwrap_or_default();
                    self.counters.ok.fetch_add(1, Ordering::Relaxed);
                    self.record(request, duplicate, &text);
                    return true;
                }
                Ok(answer)
                    if answer.status().is_server_error()
                        || answer.status() == reqwest::StatusCode::TOO_MANY_REQUESTS =>
                {
                    self.counters.unavailable.fetch_add(1, Ordering::Relaxed);
                    if self.in_alarm.load(Ordering::SeqCst) {
                        self.refused_in_alarm
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(nonce);
                    }
                }
                Ok(answer) => {
                    let status = answer.status();
                    let text = answer.text().await.unwrap_or_default();
                    self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    self.unexpected(format!("{} {}: {status} {text}", request.path, request.key));
                    return false;
                }
                Err(error) if error.is_timeout() => {
                    self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    self.counters.transport.fetch_add(1, Ordering::Relaxed);
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
        false
    }

    /// Marks the time a memory alarm is held (503s then are checked never to be applied).
    pub fn set_in_alarm(&self, on: bool) {
        self.in_alarm.store(on, Ordering::SeqCst);
    }

    fn unexpected(&self, what: String) {
        self.unexpected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(what);
    }

    fn record(&self, request: &Arc<Request>, duplicate: bool, answer: &str) {
        let line = serde_json::json!({
            "t_ms": self.started.elapsed().as_millis() as u64,
            "path": request.path,
            "idempotency_key": request.key,
            "duplicate": duplicate,
            "conflict": request.conflict,
            "orders": request.orders.iter().map(|(r, s)| serde_json::json!([r, s])).collect::<Vec<_>>(),
            "answer": serde_json::from_str::<serde_json::Value>(answer).unwrap_or(serde_json::Value::Null),
        });
        if let Ok(mut log) = self.log.lock() {
            let _ = writeln!(log, "{line}");
        }
        self.acks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Ack {
                request: Arc::clone(request),
            });
    }
}

fn order_json(reference: &str, status: Status) -> String {
    let (reason, at) = match status {
        FAILED => (
            r#", "reasonCode": "BUS_INSUFFICIENT_FUNDS", "reasonMessage": "Insufficient balance""#,
            "2025-11-19T07:09:30Z",
        ),
        PENDING => ("", "2025-11-19T07:00:00Z"),
        _ => ("", "2025-11-19T07:09:30Z"),
    };
    format!(
        r#"{{"reference": "{reference}", "bank_reference": "BNK-{reference}", "status": "{status}"{reason}, "processed_at": "{at}"}}"#
    )
}

pub fn unit_body(reference: &str, status: Status) -> String {
    order_json(reference, status)
}

pub fn batch_body(batch_id: &str, orders: &[(String, Status)]) -> String {
    let orders: Vec<String> = orders.iter().map(|(r, s)| order_json(r, s)).collect();
    format!(
        r#"{{"batch_id": "{batch_id}", "sent_at": "2025-11-19T07:15:00Z", "orders": [{}]}}"#,
        orders.join(", ")
    )
}

/// xorshift64*: enough randomness for choosing what to send, no dependency.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(salt: u64) -> Self {
        let seed =
            (uuid::Uuid::new_v4().as_u128() as u64) ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Self(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
