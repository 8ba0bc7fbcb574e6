//! The operator console in a real browser: headless Chromium driven through chromedriver, on a
//! laptop-sized window. An operator asks for a release, an approver confirms it, the order's
//! event reaches the ledger; a dead letter is replayed; a viewer cannot act even by script; a
//! form without its CSRF token is refused. Every page it visits is kept as a screenshot in
//! `target/console-screenshots/`.
//!
//! Needs `chromium` and `chromedriver`: when chromedriver is missing, the test runs
//! `ops/console/install-browser` (Debian's `chromium` and `chromium-driver`), and fails saying
//! so if that cannot install them.

use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use uuid::Uuid;

use connector_e2e_tests::console::{PASSWORD, TestConsole, spawn_console};
use connector_e2e_tests::pipeline::{Pipeline, spawn_pipeline};
use connector_e2e_tests::{eventually, unit_body};

const UNIT: &str = "/callbacks/orders/status";
/// Pages render from a local database; this bounds a wait that should take milliseconds, and is
/// generous because `cargo test --workspace` runs every end-to-end test at once on few cores.
const PAGE_WITHIN: Duration = Duration::from_secs(60);

/// A chromedriver of the test's own, on a free port, killed (with the browsers it started:
/// its whole process group) when dropped, also when the test fails.
struct Chromedriver {
    child: Child,
    url: String,
}

impl Chromedriver {
    async fn start() -> Self {
        ensure_browser_installed();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let status = format!("{}/status", driver.url);
        assert!(
            eventually(Duration::from_secs(60), || async {
                reqwest::get(&status)
                    .await
                    .is_ok_and(|r| r.status().is_success())
            })
            .await,
            "chromedriver never answered on {status}"
        );
        driver
    }

    /// Headless Chromium, 1366×768 (a laptop screen).
    async fn browser(&self) -> Client {
        let mut options = json!({
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--window-size=1366,768",
            ],
        });
        if Path::new("/usr/bin/chromium").exists() {
            options["binary"] = json!("/usr/bin/chromium");
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert("goog:chromeOptions".into(), options);
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a Chromium session through chromedriver")
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // Its own process group (see `start`): chromedriver and the Chromium it launched.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// Runs `ops/console/install-browser` when chromedriver is not on PATH.
fn ensure_browser_installed() {
    let on_path = |program: &str| {
        Command::new(program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if on_path("chromedriver") {
        return;
    }
    let script = workspace_root().join("ops/console/install-browser");
    let output = Command::new(&script)
        .output()
        .unwrap_or_else(|error| panic!("running {}: {error}", script.display()));
    assert!(
        output.status.success() && on_path("chromedriver"),
        "the console's browser test needs chromium and chromedriver, and {} could not install them \
         (run it as root or with sudo, or install the Debian packages chromium and chromium-driver):\n{}{}",
        script.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// `target/console-screenshots/` (of `CARGO_TARGET_DIR` when set), created.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_relative() {
                workspace_root().join(dir)
            } else {
                dir
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The browser, the console it is pointed at, and where its screenshots go.
struct Browser {
    client: Client,
    console: String,
    shots: PathBuf,
}

impl Browser {
    async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.console))
            .await
            .unwrap();
    }

    async fn title(&self) -> String {
        self.client.title().await.unwrap_or_default()
    }

    /// Waits until the page titled `title` (its `h1`) is shown.
    async fn wait_for_page(&self, title: &str) {
        let arrived = eventually(PAGE_WITHIN, || async {
            self.title().await.starts_with(title)
        })
        .await;
        assert!(
            arrived,
            "expected the page {title:?}, the browser shows {:?} at {:?}: {}",
            self.title().await,
            self.client.current_url().await.map(|u| u.to_string()),
            self.text("main").await
        );
    }

    /// The visible text of the first element matching CSS `selector`, waiting for it.
    async fn text(&self, selector: &str) -> String {
        match self
            .client
            .wait()
            .at_most(PAGE_WITHIN)
            .for_element(Locator::Css(selector))
            .await
        {
            Ok(element) => element.text().await.unwrap(),
            Err(error) => {
                let page = match self.client.find(Locator::Css("body")).await {
                    Ok(body) => body.text().await.unwrap_or_default(),
                    Err(_) => self.client.source().await.unwrap_or_default(),
                };
                format!(
                    "(no {selector} ({error}) on the page {:?}: {page})",
                    self.title().await
                )
            }
        }
    }

    async fn count(&self, selector: &str) -> usize {
        self.client
            .find_all(Locator::Css(selector))
            .await
            .unwrap()
            .len()
    }

    async fn click(&self, selector: &str) {
        self.client
            .wait()
            .at_most(PAGE_WITHIN)
            .for_element(Locator::Css(selector))
            .await
            .unwrap_or_else(|error| panic!("no {selector} on the page: {error}"))
            .click()
            .await
            .unwrap();
    }

    async fn type_into(&self, selector: &str, text: &str) {
        self.client
            .find(Locator::Css(selector))
            .await
            .unwrap_or_else(|error| panic!("no {selector} on the page: {error}"))
            .send_keys(text)
            .await
            .unwrap();
    }

    /// Keeps what the browser shows as `<name>.png`.
    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot of {name}");
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    /// Signs in through the sign-in form, as a person would type it.
    async fn sign_in(&self, account: &str) {
        self.goto("/login").await;
        self.wait_for_page("Sign in").await;
        self.type_into("#sign-in input[name=account]", account)
            .await;
        self.type_into("#sign-in input[name=password]", PASSWORD)
            .await;
        self.click("#sign-in button[type=submit]").await;
        // Only a session cookie the browser stored and sent back gets past the sign-in page.
        self.wait_for_page("Quarantine").await;
        let who = self.text("header .who").await;
        assert!(who.starts_with(&format!("{account} (")), "{who}");
    }

    async fn sign_out(&self) {
        self.click("#sign-out").await;
        self.wait_for_page("Sign in").await;
        assert!(
            self.client
                .get_named_cookie("__Host-console-session")
                .await
                .is_err(),
            "signing out clears the session cookie"
        );
    }

    /// The message's page, opened from the quarantine list's link.
    async fn open_message(&self, message_id: Uuid) {
        self.goto("/quarantine").await;
        self.wait_for_page("Quarantine").await;
        self.client
            .find(Locator::LinkText(&message_id.to_string()))
            .await
            .unwrap_or_else(|error| panic!("{message_id} is listed: {error}"))
            .click()
            .await
            .unwrap();
        self.wait_for_page(&format!("Quarantined message {message_id}"))
            .await;
    }
}

async fn post(p: &Pipeline, reference: &str, status: &str, key: &str) {
    let response = p
        .app
        .post_signed(UNIT, &unit_body(reference, status), key)
        .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

async fn held_state(p: &Pipeline, message_id: Uuid) -> String {
    sqlx::query_scalar("SELECT state FROM quarantined_messages WHERE message_id = $1")
        .bind(message_id)
        .fetch_one(&p.db.pool)
        .await
        .unwrap()
}

async fn requests_for(p: &Pipeline, message_id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM console_requests WHERE message_id = $1")
        .bind(message_id)
        .fetch_one(&p.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_console_works_in_a_real_browser() {
    let p = spawn_pipeline().await;

    // A key reuse: PAY-B came with the key PAY-A was accepted with.
    post(&p, "PAY-A", "SUCCESS", "KEY-AB").await;
    post(&p, "PAY-B", "SUCCESS", "KEY-AB").await;
    // A final status conflict: PAY-C SUCCESS, then FAILED.
    post(&p, "PAY-C", "SUCCESS", "PAY-C-s").await;
    post(&p, "PAY-C", "FAILED", "PAY-C-f").await;
    p.apply_all().await;
    let held = p.quarantined().await;
    let held_for = |reason: &str| {
        held.iter()
            .find(|(r, _)| r == reason)
            .unwrap_or_else(|| panic!("a message held for {reason}: {held:?}"))
            .1
    };
    let (reuse, conflict) = (
        held_for("IDEMPOTENCY_KEY_REUSED"),
        held_for("FINAL_STATUS_CONFLICT"),
    );
    assert_eq!(held.len(), 2, "{held:?}");
    // The reuse's cause goes away as the lifecycle purge would remove it once the key's
    // retention ended: the key is no longer bound to PAY-A, so PAY-B can be released.
    let unbound = sqlx::query("DELETE FROM idempotency_keys WHERE idempotency_key = 'KEY-AB'")
        .execute(&p.db.pool)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(unbound, 1);

    let console: TestConsole = spawn_console(&p, true).await;
    let driver = Chromedriver::start().await;
    let b = Browser {
        client: driver.browser().await,
        console: console.url.clone(),
        shots: screenshot_dir(),
    };

    // Signed out, every page leads to the sign-in form.
    b.goto("/quarantine").await;
    b.wait_for_page("Sign in").await;
    b.screenshot("01-sign-in").await;

    // The operator asks for the release.
    b.sign_in("olga").await;
    // The `__Host-`, Secure session cookie was stored on http://127.0.0.1 (a secure context).
    let cookie = b
        .client
        .get_named_cookie("__Host-console-session")
        .await
        .expect("Chromium keeps the __Host- session cookie on http://127.0.0.1");
    assert_eq!(
        (cookie.secure(), cookie.http_only(), cookie.path()),
        (Some(true), Some(true), Some("/"))
    );
    let listed = b.text("#quarantine").await;
    assert!(
        listed.contains(&reuse.to_string()) && listed.contains(&conflict.to_string()),
        "{listed}"
    );
    b.screenshot("02-quarantine").await;

    b.client
        .find(Locator::Css("#filter select[name=reason]"))
        .await
        .unwrap()
        .select_by_value("IDEMPOTENCY_KEY_REUSED")
        .await
        .unwrap();
    b.click("#filter button[type=submit]").await;
    assert!(
        eventually(PAGE_WITHIN, || async {
            b.client
                .current_url()
                .await
                .is_ok_and(|u| u.as_str().contains("reason=IDEMPOTENCY_KEY_REUSED"))
        })
        .await
    );
    let filtered = b.text("#quarantine").await;
    assert!(
        filtered.contains(&reuse.to_string()) && !filtered.contains(&conflict.to_string()),
        "{filtered}"
    );
    assert_eq!(
        b.count("#quarantine tr").await,
        2,
        "a header and one message"
    );
    b.screenshot("03-quarantine-filtered").await;

    b.client
        .find(Locator::LinkText(&reuse.to_string()))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_for_page(&format!("Quarantined message {reuse}"))
        .await;
    let explained = b.text("#on-release").await;
    assert!(explained.contains("idempotency key"), "{explained}");
    let message = b.text("#message").await;
    assert!(message.contains("PAY-B"), "{message}");
    b.screenshot("04-quarantine-message").await;

    let comment = "KEY-AB's retention ended; PAY-B is a genuine new order";
    b.type_into("#release-form textarea[name=comment]", comment)
        .await;
    b.click("#release").await;
    let flash = b.text("#flash").await;
    assert!(flash.starts_with("Requested"), "{flash}");
    let pending = b.text("#pending").await;
    assert!(
        pending.contains("release requested by olga") && pending.contains(comment),
        "{pending}"
    );
    // Four eyes: nothing happened yet, and olga cannot confirm her own request.
    assert_eq!(b.count("#confirm").await, 0, "no confirm button for olga");
    assert_eq!(b.count("#release-form, #discard-form").await, 0);
    assert_eq!(held_state(&p, reuse).await, "held");
    assert_eq!(p.depth(&p.app.topology.intake_queue).await, 0);
    b.screenshot("05-quarantine-message-requested").await;
    b.sign_out().await;

    // The approver confirms it.
    b.sign_in("abe").await;
    b.open_message(reuse).await;
    let pending = b.text("#pending").await;
    assert!(pending.contains("requested by olga"), "{pending}");
    b.type_into(
        "#confirm-form textarea[name=comment]",
        "checked with the bank",
    )
    .await;
    b.click("#confirm").await;
    let flash = b.text("#flash").await;
    assert!(flash.starts_with("Confirmed"), "{flash}");
    assert_eq!(held_state(&p, reuse).await, "released");
    assert_eq!(p.apply_all().await, 1, "the released message is applied");
    assert_eq!(p.order_status("PAY-B").await.as_deref(), Some("SUCCESS"));
    p.relay_all().await;

    b.goto("/search?q=PAY-B").await;
    b.wait_for_page("Search").await;
    let timeline = b.text("pre.timeline").await;
    let succeeded = timeline
        .lines()
        .find(|line| line.contains("order.succeeded"))
        .unwrap_or_else(|| panic!("an order.succeeded event: {timeline}"));
    assert!(succeeded.contains("published"), "{timeline}");
    assert!(!succeeded.contains("NOT YET PUBLISHED"), "{timeline}");
    b.screenshot("06-search-timeline").await;
    let events = p.ledger_events().await;
    assert!(
        events
            .iter()
            .any(|(e, _, _)| e.reference == "PAY-B" && e.event_type == "order.succeeded"),
        "{events:?}"
    );

    b.goto("/requests").await;
    b.wait_for_page("Requests").await;
    let requests = b.text("#requests").await;
    let row = requests
        .lines()
        .find(|line| line.contains(&reuse.to_string()))
        .unwrap_or_else(|| panic!("the request is listed: {requests}"));
    assert!(
        row.contains("release")
            && row.contains("olga")
            && row.contains("confirmed")
            && row.contains("abe"),
        "{row}"
    );
    b.screenshot("07-requests").await;

    b.goto("/audit").await;
    b.wait_for_page("Audit").await;
    let audit = b.text("#audit").await;
    let line_of = |action: &str| {
        audit
            .lines()
            .find(|line| {
                line.split_whitespace().any(|word| word == action)
                    && line.contains(&reuse.to_string())
            })
            .unwrap_or_else(|| panic!("{action} of {reuse} is audited: {audit}"))
            .to_owned()
    };
    let asked = line_of("request-release");
    assert!(asked.contains("olga") && asked.contains(comment), "{asked}");
    let done = line_of("release");
    assert!(
        done.contains("abe")
            && done.contains(comment)
            && done.contains("requested by olga, confirmed by abe")
            && done.contains("ok"),
        "{done}"
    );
    b.screenshot("08-audit").await;

    b.goto("/banks").await;
    b.wait_for_page("Banks").await;
    let banks_held = b.text("#held").await;
    assert!(banks_held.contains("FINAL_STATUS_CONFLICT"), "{banks_held}");
    let received = b.text("#received").await;
    assert!(received.contains("corelink.status"), "{received}");
    b.screenshot("09-banks").await;
    b.sign_out().await;

    // A dead letter: an accepted, sealed callback rejected off the intake queue, which RabbitMQ
    // dead-letters (with its x-death record) as it does a message the workers gave up on.
    let dead = p.dead_letter_accepted("PAY-D").await;
    assert!(
        p.depth_reaches(&p.app.topology.intake_dead_letter_queue, 1)
            .await
    );

    b.sign_in("olga").await;
    b.goto("/dead-letters").await;
    b.wait_for_page("Dead letters: intake").await;
    let letters = b.text("#dead-letters").await;
    let row = letters
        .lines()
        .find(|line| line.contains(&dead))
        .unwrap_or_else(|| panic!("{dead} is listed: {letters}"));
    assert!(row.contains("rejected"), "{row}");
    b.screenshot("10-dead-letters").await;
    let row = b
        .client
        .find(Locator::XPath(&format!(
            "//table[@id='dead-letters']//tr[td[1][normalize-space()='{dead}']]"
        )))
        .await
        .unwrap();
    row.find(Locator::Css("input[name=comment]"))
        .await
        .unwrap()
        .send_keys("rejected by mistake during maintenance")
        .await
        .unwrap();
    row.find(Locator::Css(".replay-one"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_for_page("Dead letters replayed").await;
    let report = b.text("#flash").await;
    assert!(report.contains("replayed 1"), "{report}");
    b.screenshot("11-dead-letters-replayed").await;
    assert_eq!(p.depth(&p.app.topology.intake_dead_letter_queue).await, 0);
    assert_eq!(p.apply_all().await, 1);
    assert_eq!(p.order_status("PAY-D").await.as_deref(), Some("SUCCESS"));

    // A form without its CSRF token is refused, whoever sends it.
    b.open_message(conflict).await;
    let left = b
        .client
        .execute(
            "const form = document.getElementById('discard-form');
             form.querySelector('input[name=csrf]').remove();
             return form.querySelectorAll('input[name=csrf]').length;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(left, json!(0));
    b.type_into("#discard-form textarea[name=comment]", "no token")
        .await;
    b.click("#discard").await;
    b.wait_for_page("Forbidden").await;
    let refusal = b.text("#error").await;
    assert!(refusal.contains("CSRF"), "{refusal}");
    b.screenshot("12-csrf-refused").await;
    assert_eq!(held_state(&p, conflict).await, "held");
    assert_eq!(requests_for(&p, conflict).await, 0);
    b.goto("/quarantine").await;
    b.wait_for_page("Quarantine").await;
    b.sign_out().await;

    // A viewer reads, and cannot act: no forms, and a POST made by script is refused.
    b.sign_in("vera").await;
    b.open_message(conflict).await;
    assert_eq!(
        b.count("#release-form, #discard-form, #release, #discard")
            .await,
        0
    );
    let note = b.text("main").await;
    assert!(
        note.contains("Your role (viewer) can read, not act."),
        "{note}"
    );
    b.screenshot("13-quarantine-message-viewer").await;
    let answer = b
        .client
        .execute(
            "const body = new URLSearchParams();
             body.set('csrf', document.querySelector('input[name=csrf]').value);
             body.set('comment', 'a viewer tries anyway');
             return fetch(arguments[0], { method: 'POST', body, redirect: 'manual' })
                 .then(r => r.text().then(text => [r.status, text]));",
            vec![json!(format!("/quarantine/{conflict}/discard"))],
        )
        .await
        .unwrap();
    assert_eq!(answer[0], json!(403), "{answer}");
    assert!(
        answer[1]
            .as_str()
            .is_some_and(|body| body.contains("needs the role operator")),
        "{answer}"
    );
    assert_eq!(held_state(&p, conflict).await, "held");
    assert_eq!(requests_for(&p, conflict).await, 0);

    b.client.clone().close().await.unwrap();
    drop(driver);
    p.teardown().await;
}
