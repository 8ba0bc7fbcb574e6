//! A RabbitMQ node of the test's own (the fault harness's `RabbitNode`, on free loopback
//! ports), for faults that would disturb everyone on the shared broker: a memory alarm, a
//! short consumer timeout. It is killed when dropped.

use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use uuid::Uuid;

use connector_chaos::services::RabbitNode;

#[derive(Debug)]
pub struct PrivateBroker {
    /// First, so the node stops before its directory goes.
    pub node: RabbitNode,
    _dir: tempfile::TempDir,
}

impl PrivateBroker {
    /// Boots a node, with `advanced_config` (Erlang terms) if given.
    pub async fn start(advanced_config: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("a work directory");
        // Unique: two nodes of one name cannot run at once on the machine.
        let name = format!("e2e{}", &Uuid::new_v4().simple().to_string()[..10]);
        let mut node = RabbitNode::named(dir.path(), &name).expect("a node prepared");
        if let Some(terms) = advanced_config {
            node.set_advanced_config(terms)
                .expect("advanced.config written");
        }
        node.start().await.expect("the private RabbitMQ node boots");
        Self { node, _dir: dir }
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.node.addr())
    }

    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.url(), ConnectionProperties::default())
            .await
            .expect("the private node accepts connections")
    }

    /// Messages ready on `queue`.
    pub async fn depth(&self, queue: &str) -> u32 {
        let connection = self.connect().await;
        let channel = connection.create_channel().await.unwrap();
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let depth = channel
            .queue_declare(queue.into(), options, FieldTable::default())
            .await
            .expect("the queue exists")
            .message_count();
        let _ = connection.close(200, "done".into()).await;
        depth
    }

    /// Takes (acknowledges) every message ready on `queue`; their bodies.
    pub async fn take_all(&self, queue: &str) -> Vec<Vec<u8>> {
        let connection = self.connect().await;
        let channel = connection.create_channel().await.unwrap();
        let mut bodies = Vec::new();
        while let Some(message) = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            bodies.push(message.delivery.data);
        }
        let _ = connection.close(200, "done".into()).await;
        bodies
    }
}
