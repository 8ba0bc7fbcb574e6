//! Each party has its own broker user (README, "Broker users"): the ingress may publish its
//! four kinds to `connector.intake` and nothing else, the merchant's service only
//! `paysafe.track`, the workers declare the topology and consume. The users and permissions are
//! read from the compose stack's definitions file, `ops/compose/rabbitmq/definitions.json`, and
//! created on the real RabbitMQ in a throw-away vhost (user names suffixed, fresh passwords),
//! so this test and the file cannot drift. Everything goes when the test ends (`Drop`).

use std::time::Duration;

use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::Value;
use uuid::Uuid;

use connector_e2e_tests::{amqp_addr, spawn_app_with, unit_body};
use connector_schema::Topology;
use connector_schema::topology::QueueOptions;

const DEFINITIONS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../ops/compose/rabbitmq/definitions.json"
);

fn rabbitmqctl(args: &[&str]) -> std::process::Output {
    std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs (the test broker is local)")
}

fn rabbitmqctl_ok(args: &[&str]) {
    let output = rabbitmqctl(args);
    assert!(
        output.status.success(),
        "rabbitmqctl {}: {}",
        args.first().unwrap_or(&""),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The definitions file's users and permissions, created in a vhost of their own; deleted
/// (vhost and users) on drop.
struct BrokerUsers {
    vhost: String,
    /// (name in the file, name created, password)
    users: Vec<(String, String, String)>,
}

impl BrokerUsers {
    fn create() -> Self {
        let definitions: Value =
            serde_json::from_str(&std::fs::read_to_string(DEFINITIONS).unwrap()).unwrap();
        let file_vhost = definitions["vhosts"][0]["name"]
            .as_str()
            .unwrap()
            .to_owned();
        let run = Uuid::new_v4().simple().to_string();
        let mut created = Self {
            vhost: format!("test-users-{run}"),
            users: Vec::new(),
        };
        rabbitmqctl_ok(&["add_vhost", &created.vhost]);
        for user in definitions["users"].as_array().unwrap() {
            let name = user["name"].as_str().unwrap();
            let real = format!("{name}-{}", &run[..12]);
            let password = Uuid::new_v4().simple().to_string();
            rabbitmqctl_ok(&["add_user", &real, &password]);
            created
                .users
                .push((name.to_owned(), real.clone(), password));
            let tags: Vec<&str> = user["tags"].as_str().unwrap().split(',').collect();
            let mut args = vec!["set_user_tags", real.as_str()];
            args.extend(tags.iter().filter(|tag| !tag.is_empty()));
            rabbitmqctl_ok(&args);
        }
        let field = |entry: &Value, name: &str| entry[name].as_str().unwrap().to_owned();
        for permission in definitions["permissions"].as_array().unwrap() {
            assert_eq!(field(permission, "vhost"), file_vhost);
            let user = created.real(&field(permission, "user")).to_owned();
            rabbitmqctl_ok(&[
                "set_permissions",
                "-p",
                &created.vhost,
                &user,
                &field(permission, "configure"),
                &field(permission, "write"),
                &field(permission, "read"),
            ]);
        }
        for permission in definitions["topic_permissions"].as_array().unwrap() {
            assert_eq!(field(permission, "vhost"), file_vhost);
            let user = created.real(&field(permission, "user")).to_owned();
            rabbitmqctl_ok(&[
                "set_topic_permissions",
                "-p",
                &created.vhost,
                &user,
                &field(permission, "exchange"),
                &field(permission, "write"),
                &field(permission, "read"),
            ]);
        }
        created
    }

    fn real(&self, name: &str) -> &str {
        self.users
            .iter()
            .find(|(file, _, _)| file == name)
            .map(|(_, real, _)| real.as_str())
            .unwrap_or_else(|| panic!("user {name} is not in the definitions file"))
    }

    /// The AMQP URL of user `name` (as the file names it) on the throw-away vhost.
    fn url(&self, name: &str) -> String {
        let (_, real, password) = self.users.iter().find(|(file, _, _)| file == name).unwrap();
        format!(
            "amqp://{real}:{password}@{}/{}?heartbeat=10",
            amqp_addr(),
            self.vhost
        )
    }

    async fn connect(&self, name: &str) -> Connection {
        Connection::connect(&self.url(name), ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("{name} logs in: {e}"))
    }
}

impl Drop for BrokerUsers {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["delete_vhost", &self.vhost]);
        for (_, real, _) in &self.users {
            let _ = rabbitmqctl(&["delete_user", real]);
        }
    }
}

/// Publishes one persistent message to `connector.intake` with `routing_key` and waits for the
/// broker's confirm: `Ok` when acked, else what the broker said.
async fn publish(connection: &Connection, routing_key: &str) -> Result<(), String> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| e.to_string())?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let confirm = channel
        .basic_publish(
            "connector.intake".into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            b"{}",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .map_err(|e| e.to_string())?;
    let confirmation = tokio::time::timeout(Duration::from_secs(10), confirm)
        .await
        .map_err(|_| "no confirm".to_owned())?
        .map_err(|e| e.to_string())?;
    if confirmation.is_ack() {
        Ok(())
    } else {
        Err(format!("{confirmation:?}"))
    }
}

fn assert_access_refused(result: Result<(), String>, what: &str) {
    let error = result.expect_err(what);
    assert!(error.contains("ACCESS_REFUSED"), "{what}: {error}");
}

#[tokio::test]
async fn each_party_has_only_the_broker_permissions_the_definitions_file_gives() {
    let users = BrokerUsers::create();
    let topology = Topology::with_prefix(Topology::DEFAULT_PREFIX, QueueOptions::default());

    // The real ingress, as the ingress user with declare_topology = false: before the workers
    // have declared the intake exchange it cannot be ready (it checks, and retries).
    let url = users.url("connector-ingress");
    let ingress_app = tokio::spawn(spawn_app_with(move |settings| {
        settings.broker.url = url;
        settings.broker.declare_topology = false;
        settings.topology.prefix = Topology::DEFAULT_PREFIX.into();
        settings.topology.queue_expires_secs = None;
    }));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !ingress_app.is_finished(),
        "the ingress connected although the intake exchange does not exist yet"
    );

    // The workers declare the whole topology, as they do at start-up.
    let workers = users.connect("connector-workers").await;
    let channel = workers.create_channel().await.unwrap();
    topology
        .declare_intake(&channel)
        .await
        .expect("workers declare the intake");
    topology
        .declare_ledger(&channel)
        .await
        .expect("workers declare the ledger");

    // The ingress cannot declare (configure), so it must run with declare_topology = false.
    let ingress = users.connect("connector-ingress").await;
    let declare = async {
        let channel = ingress.create_channel().await.unwrap();
        topology
            .declare_intake(&channel)
            .await
            .map_err(|e| e.to_string())
    };
    assert_access_refused(declare.await, "the ingress declaring the topology");
    publish(&ingress, "corelink.status")
        .await
        .expect("the ingress publishes a callback");
    assert_access_refused(
        publish(&ingress, "paysafe.track").await,
        "the ingress publishing a merchant's track command",
    );
    let get = async {
        let channel = ingress.create_channel().await.unwrap();
        channel
            .basic_get("connector.intake".into(), BasicGetOptions::default())
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    };
    assert_access_refused(get.await, "the ingress consuming the intake");

    let merchant = users.connect("merchant-payments").await;
    publish(&merchant, "paysafe.track")
        .await
        .expect("the merchant tracks a payment");
    for forbidden in ["corelink.status", "paysafe.webhook", "bnc.account_binding"] {
        assert_access_refused(
            publish(&merchant, forbidden).await,
            &format!("the merchant publishing {forbidden}"),
        );
    }

    // Now declared: the real ingress gets ready and answers 200 for a signed callback; the
    // workers consume everything that got through, and only that.
    let app = ingress_app
        .await
        .expect("the ingress gets ready once the exchange exists");
    let response = app
        .post_signed(
            "/callbacks/orders/status",
            &unit_body("PAY-USERS-1", "SUCCESS"),
            "PAY-USERS-1",
        )
        .await;
    assert_eq!(response.status().as_u16(), 200);
    app.stop().await.unwrap();

    let channel = workers.create_channel().await.unwrap();
    let mut routing_keys = Vec::new();
    while let Some(message) = channel
        .basic_get("connector.intake".into(), BasicGetOptions { no_ack: true })
        .await
        .expect("the workers consume the intake")
    {
        routing_keys.push(message.delivery.routing_key.to_string());
    }
    routing_keys.sort();
    assert_eq!(
        routing_keys,
        ["corelink.status", "corelink.status", "paysafe.track"],
        "the ingress's two callbacks and the merchant's command"
    );
}
