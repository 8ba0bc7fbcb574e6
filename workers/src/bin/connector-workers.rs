//! `connector-workers`: the background roles and the operators' admin commands.
//!
//! `connector-workers run` (all roles) or `run --role apply --role relay`; `migrate`;
//! `quarantine list|show|release|discard`; `dead-letters list|replay`; `order timeline REF`;
//! `paysafe track|show`; `topology delete`; `console hash-password`. The commands themselves are in `admin`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use uuid::Uuid;

use connector_runtime::{shutdown, telemetry};
use connector_schema::paysafe::{TrackCommand, TrackedKind};
use connector_workers::admin::{self, DeadLetterQueue};
use connector_workers::config::Settings;
use connector_workers::db;
use connector_workers::startup::{Role, Workers};

/// The same allocator as the ingress's binary: the apply's CPU per order of a batch callback
/// fell by about 7 % against glibc's (ops/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(version, about = "The connector's workers and admin commands")]
struct Cli {
    /// TOML configuration file; `CONNECTOR_*` environment variables override it.
    #[arg(long, env = "CONNECTOR_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run worker roles until SIGTERM or Ctrl-C (all of them unless some are named).
    Run {
        #[arg(long = "role", value_enum)]
        roles: Vec<Role>,
    },
    /// Create the database if it is missing, apply pending migrations, and exit.
    Migrate,
    /// Messages held because they could not be applied.
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
    /// The dead-letter queues.
    #[command(subcommand)]
    DeadLetters(DeadLetterCommand),
    /// An order's history.
    #[command(subcommand)]
    Order(OrderCommand),
    /// The broker topology of this configuration.
    #[command(subcommand)]
    Topology(TopologyCommand),
    /// Paysafe payments and standalone credits.
    #[command(subcommand)]
    Paysafe(PaysafeCommand),
    /// The operator console's accounts.
    #[command(subcommand)]
    Console(ConsoleCommand),
}

#[derive(Debug, Subcommand)]
enum ConsoleCommand {
    /// Read a password on stdin and print its argon2id hash, for `console.accounts`'s
    /// `password_hash` (the password itself is never configured).
    HashPassword,
}

#[derive(Debug, Subcommand)]
enum TopologyCommand {
    /// Delete the queues (and their messages) and exchanges of a throw-away topology, one with
    /// `topology.queue_expires_secs` set; refused for any other.
    Delete,
}

#[derive(Debug, Subcommand)]
enum PaysafeCommand {
    /// Start tracking a payment or standalone credit that Paysafe answered PROCESSING, by
    /// publishing the `paysafe.track` command the merchant's payment service publishes.
    Track {
        #[arg(long, value_parser = ["payment", "standalone_credit"])]
        kind: String,
        #[arg(long)]
        id: String,
        #[arg(long)]
        merchant_ref_num: String,
        /// Minor units (546 = 5.46 CAD).
        #[arg(long)]
        amount: i64,
        #[arg(long)]
        currency_code: String,
    },
    /// An item's state, history and ledger events.
    Show { id: String },
}

#[derive(Debug, Subcommand)]
enum QuarantineCommand {
    /// Held messages (all, with --all).
    List {
        #[arg(long)]
        all: bool,
    },
    /// One message with its raw request.
    Show { message_id: Uuid },
    /// Send a held message back to the intake queue for another try.
    Release {
        message_id: Uuid,
        #[arg(long, default_value = "released by an operator")]
        note: String,
    },
    /// Close a held message without applying it (kept for audit); or, with --reason and
    /// --held-for instead of an id, every message held for that reason that long.
    Discard {
        #[arg(required_unless_present = "reason", conflicts_with = "reason")]
        message_id: Option<Uuid>,
        /// Every held message with this reason (e.g. FINAL_STATUS_CONFLICT) ...
        #[arg(long, requires = "held_for")]
        reason: Option<String>,
        /// ... held longer than this many seconds.
        #[arg(long, requires = "reason")]
        held_for: Option<u64>,
        #[arg(long)]
        note: String,
    },
}

#[derive(Debug, Subcommand)]
enum DeadLetterCommand {
    /// Show messages without removing them.
    List {
        #[arg(value_enum, default_value = "intake")]
        queue: DeadLetterQueue,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Move messages back to their exchange.
    Replay {
        #[arg(value_enum, default_value = "intake")]
        queue: DeadLetterQueue,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
enum OrderCommand {
    /// Every notification, transition and ledger event of an order.
    Timeline { reference: String },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Needs no configuration: an operator hashes a password before any file exists.
    if let Command::Console(ConsoleCommand::HashPassword) = cli.command {
        return finish(hash_password());
    }
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("connector-workers: {error}");
            return ExitCode::from(2);
        }
    };
    let _logs = telemetry::init(&settings.log);
    finish(execute(cli.command, settings).await)
}

fn finish(result: anyhow::Result<String>) -> ExitCode {
    match result {
        Ok(output) => {
            let _ = std::io::stdout().write_all(output.as_bytes());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("connector-workers: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command, settings: Settings) -> anyhow::Result<String> {
    let topology = settings.topology.topology();
    match command {
        Command::Run { roles } => {
            let roles = if roles.is_empty() {
                vec![Role::Apply, Role::Relay, Role::Lifecycle, Role::Poller]
            } else {
                roles
            };
            let workers = Workers::build(settings, roles).await?;
            tracing::info!(ops_listen = %workers.ops_addr(), "workers listening");
            workers.run_until_stopped(shutdown::signal()).await?;
            Ok(String::new())
        }
        Command::Migrate => {
            let created = db::create_if_missing(&settings.database.url).await?;
            let pool = db::pool(&settings.database)?;
            db::migrate(&pool, &settings.retention).await?;
            Ok(if created {
                "database created; migrations applied\n"
            } else {
                "migrations applied\n"
            }
            .into())
        }
        Command::Quarantine(command) => {
            let pool = db::pool(&settings.database)?;
            match command {
                QuarantineCommand::List { all } => admin::quarantine_list(&pool, all).await,
                QuarantineCommand::Show { message_id } => {
                    admin::quarantine_show(&pool, message_id).await
                }
                QuarantineCommand::Release { message_id, note } => {
                    let (_connection, channel) =
                        admin::confirm_channel(&settings.broker.url).await?;
                    admin::quarantine_release(
                        &pool,
                        &channel,
                        &topology,
                        &settings.seal_keys()?,
                        message_id,
                        &note,
                    )
                    .await
                }
                QuarantineCommand::Discard {
                    message_id,
                    reason,
                    held_for,
                    note,
                } => match (message_id, reason, held_for) {
                    (Some(message_id), _, _) => {
                        admin::quarantine_discard(&pool, message_id, &note).await
                    }
                    (None, Some(reason), Some(held_for)) => {
                        admin::quarantine_discard_held(&pool, &reason, held_for, &note).await
                    }
                    // clap requires an id or both filters.
                    _ => Err(anyhow::anyhow!(
                        "give a message id, or --reason with --held-for"
                    )),
                },
            }
        }
        Command::DeadLetters(command) => {
            let connection =
                connector_workers::broker::connect(&settings.broker.url, "admin").await?;
            match command {
                DeadLetterCommand::List { queue, limit } => {
                    admin::dead_letters_list(&connection, &topology, queue, limit).await
                }
                DeadLetterCommand::Replay { queue, limit } => {
                    let seal = settings.seal_keys()?;
                    admin::dead_letters_replay(&connection, &topology, &seal, queue, limit).await
                }
            }
        }
        Command::Topology(TopologyCommand::Delete) => {
            let connection =
                connector_workers::broker::connect(&settings.broker.url, "admin").await?;
            admin::topology_delete(&connection, &topology).await
        }
        Command::Paysafe(PaysafeCommand::Track {
            kind,
            id,
            merchant_ref_num,
            amount,
            currency_code,
        }) => {
            let command = TrackCommand {
                kind: TrackedKind::parse(&kind)
                    .ok_or_else(|| anyhow::anyhow!("unknown kind {kind}"))?,
                id,
                merchant_ref_num,
                amount,
                currency_code,
            };
            let (_connection, channel) = admin::confirm_channel(&settings.broker.url).await?;
            topology.declare_intake(&channel).await?;
            admin::paysafe_track(&channel, &topology, &command).await
        }
        Command::Paysafe(PaysafeCommand::Show { id }) => {
            let pool = db::pool(&settings.database)?;
            admin::paysafe_show(&pool, &id).await
        }
        Command::Console(ConsoleCommand::HashPassword) => hash_password(),
        Command::Order(OrderCommand::Timeline { reference }) => {
            let pool = db::pool(&settings.database)?;
            admin::order_timeline(&pool, &reference).await
        }
    }
}

fn hash_password() -> anyhow::Result<String> {
    let mut password = String::new();
    std::io::stdin().read_line(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        anyhow::bail!("give the password on stdin");
    }
    Ok(format!(
        "{}\n",
        connector_workers::console::hash_password(password)?
    ))
}
