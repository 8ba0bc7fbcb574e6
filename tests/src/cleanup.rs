//! What a test creates on the shared servers goes when the test ends, passed or failed (`Drop`
//! runs on unwind too), so runs leave nothing behind for the next one to trip over. The
//! deletion runs on a runtime of its own in a thread of its own: `Drop` cannot await, and the
//! test's runtime may be single-threaded and busy dropping.

use std::future::Future;

use lapin::{Connection, ConnectionProperties};

use connector_schema::Topology;

use crate::amqp_url;

/// Runs `cleanup` to completion before returning, whatever runtime the caller is on.
pub fn run_detached(cleanup: impl Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            runtime.block_on(cleanup);
        }
    })
    .join();
}

/// Deletes a throw-away topology (its queues, their messages, its exchanges) when dropped.
#[derive(Debug)]
pub struct TopologyGuard(Topology);

impl TopologyGuard {
    pub fn new(topology: Topology) -> Self {
        Self(topology)
    }
}

impl Drop for TopologyGuard {
    fn drop(&mut self) {
        let topology = self.0.clone();
        run_detached(async move {
            let Ok(connection) =
                Connection::connect(&amqp_url(), ConnectionProperties::default()).await
            else {
                return;
            };
            if let Ok(channel) = connection.create_channel().await
                && let Err(error) = topology.delete(&channel).await
            {
                eprintln!(
                    "test clean-up: deleting topology {}: {error}",
                    topology.intake_exchange
                );
            }
            connection.close(200, "test done".into()).await.ok();
        });
    }
}
