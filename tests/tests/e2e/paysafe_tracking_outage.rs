//! The poller through a database outage, as a failover is to it (the primary gone for seconds):
//! its loop (`Poller::run`, not stepped) outlives the database going away while an item is due,
//! calls Paysafe for nothing it cannot claim meanwhile, and goes on by itself once the database
//! is back: the item polled to its final status and emitted once. How long after the restore
//! that took is printed, not asserted (ops/chaos/README.md has the harness's failover figures).

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use connector_e2e_tests::eventually;
use connector_e2e_tests::pipeline::TestDatabase;
use connector_e2e_tests::proxy::FaultProxy;
use connector_schema::paysafe::TrackedKind;

use crate::paysafe_tracking::{script, spawn};

#[tokio::test]
async fn the_poller_goes_on_by_itself_after_a_database_outage() {
    // A poll every second (no growth, no jitter); a lease short enough that an answer lost with
    // the database (polled, not recorded) is polled again within the test.
    let t = spawn(|s| {
        s.first_poll_after_secs = 1;
        s.backoff_multiplier = 1.0;
        s.backoff_jitter = 0.0;
        s.claim_lease_secs = 4;
    })
    .await;
    t.sim
        .set_script(script(
            TrackedKind::Payment,
            "pay-outage",
            &[("PROCESSING", Some(2)), ("COMPLETED", None)],
        ))
        .unwrap();
    t.track(TrackedKind::Payment, "pay-outage").await;

    let proxy = FaultProxy::start("127.0.0.1:5432".parse().unwrap())
        .await
        .unwrap();
    let through_proxy = TestDatabase::url_of(&t.pipeline.db.name)
        .replace("127.0.0.1:5432", &proxy.addr().to_string());
    let pool = connector_workers::db::pool(&TestDatabase::settings_for(&through_proxy)).unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(t.poller_on(pool, stop.clone()).run());

    assert!(
        eventually(Duration::from_secs(10), || async {
            t.sim.poll_count("pay-outage") >= 1
        })
        .await,
        "the poller never polled"
    );
    proxy.cut();
    // An answer already on its way may still be recorded or lost; none is asked after it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let polls_at_cut = t.sim.poll_count("pay-outage");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        t.sim.poll_count("pay-outage"),
        polls_at_cut,
        "nothing claimed, nothing polled while the database is away"
    );
    assert_eq!(t.item("pay-outage").await.1, "polling");
    assert!(
        !running.is_finished(),
        "the poller's loop ended with the database"
    );

    proxy.restore();
    let restored = Instant::now();
    assert!(
        eventually(Duration::from_secs(30), || async {
            t.item("pay-outage").await.1 == "final"
        })
        .await,
        "the poller did not go on after the database came back: {:?}",
        t.item("pay-outage").await
    );
    eprintln!(
        "pay-outage final {:.1} s after the database came back",
        restored.elapsed().as_secs_f64()
    );
    assert_eq!(t.item("pay-outage").await.0, "COMPLETED");
    assert_eq!(
        t.events().await,
        [(
            "paysafe.payment.completed".to_owned(),
            "pay-outage".to_owned(),
            "COMPLETED".to_owned()
        )]
    );
    stop.cancel();
    running.await.unwrap();
    t.pipeline.teardown().await;
}
