//! The faults: which ones a round injects ([`Fault::schedule`]), how each reads in the output,
//! and what injecting it does to the running harness ([`inject`]). A fault is a short sequence
//! of the harness's own operations, so that adding one touches this file alone.

use std::time::{Duration, Instant};

use crate::console::out;
use crate::failover::{ClusterFault, Failover, fail_over};
use crate::harness::{Harness, Link, Role};
use crate::load::Bank;
use crate::mid_group::kill_mid_group;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    KillIngress(usize),
    KillWorkers(usize),
    /// SIGKILL a workers process while its group transactions are provably open (see
    /// `mid_group`): every delivery of those groups must come back and be applied once.
    KillWorkersMidGroup(usize),
    CutBroker,
    CutDatabase,
    /// Single node: `rabbitmqctl stop` and start (graceful) or SIGKILL and start (crash).
    /// Cluster: `stop_app` / `start_app` on one node.
    RestartRabbit {
        node: usize,
        crash: bool,
    },
    RestartPostgres,
    /// Cluster only: SIGKILL one node under load, restart it a few seconds later.
    KillNode(usize),
    /// A broker memory alarm for `MEMORY_ALARM`: publishers blocked, the ingress answers 503.
    MemoryAlarm,
    /// The database cut for `LONG_OUTAGE`, many broker consumer timeouts long.
    LongDatabaseOutage,
    /// `--postgres-ha` only: a fault of the Patroni cluster (`failover`).
    Cluster(ClusterFault),
}

/// How long the memory alarm is held.
const MEMORY_ALARM: Duration = Duration::from_secs(3);
/// The long database outage: 12 consumer timeouts of the harness's broker (2 s), more than the
/// intake delivery limit (10); the 40-minute outage of production (30 min timeout), scaled.
const LONG_OUTAGE: Duration = Duration::from_secs(25);

/// The infrastructure faults' names, for `--infra`.
pub const INFRA_NAMES: [&str; 13] = [
    "cut-broker",
    "cut-database",
    "restart-rabbitmq",
    "crash-rabbitmq",
    "kill-node",
    "restart-postgres",
    "memory-alarm",
    "long-db-outage",
    "kill-primary",
    "kill-primary-ahead",
    "kill-patroni",
    "switchover",
    "cut-dcs",
];

impl Fault {
    pub fn label(self, cluster: bool) -> String {
        match self {
            Self::KillIngress(i) => format!("SIGKILL ingress-{}", i + 1),
            Self::KillWorkers(i) => format!("SIGKILL workers-{} (apply+relay)", i + 1),
            Self::KillWorkersMidGroup(i) => {
                format!(
                    "SIGKILL workers-{} mid-group (2+ messages in an open transaction)",
                    i + 1
                )
            }
            Self::CutBroker => "cut broker connections 2s".into(),
            Self::CutDatabase => "cut database connections 2s".into(),
            Self::RestartRabbit { node, crash: _ } if cluster => {
                format!(
                    "restart RabbitMQ node chaos{} (stop_app/start_app)",
                    node + 1
                )
            }
            Self::RestartRabbit { crash: false, .. } => "restart RabbitMQ (stop, start)".into(),
            Self::RestartRabbit { crash: true, .. } => "crash RabbitMQ (SIGKILL, start)".into(),
            Self::RestartPostgres => "restart PostgreSQL (pg_ctl restart -m fast)".into(),
            Self::KillNode(node) => format!("SIGKILL RabbitMQ node chaos{} under load", node + 1),
            Self::MemoryAlarm => format!("RabbitMQ memory alarm {}s", MEMORY_ALARM.as_secs()),
            Self::LongDatabaseOutage => {
                format!("cut database connections {}s", LONG_OUTAGE.as_secs())
            }
            Self::Cluster(ClusterFault::KillPrimary) => "SIGKILL the primary's PostgreSQL".into(),
            Self::Cluster(ClusterFault::KillPrimaryAheadOfStandby) => {
                "SIGKILL the primary's PostgreSQL, its WAL sender stopped 1s before".into()
            }
            Self::Cluster(ClusterFault::KillPrimaryPatroni) => {
                "SIGKILL the primary's Patroni".into()
            }
            Self::Cluster(ClusterFault::Switchover) => "Patroni switchover".into(),
            Self::Cluster(ClusterFault::CutDcs) => "etcd (the DCS) down 12s".into(),
        }
    }

    /// The name `--infra` selects it by.
    pub fn name(self) -> &'static str {
        match self {
            Self::CutBroker => "cut-broker",
            Self::CutDatabase => "cut-database",
            Self::RestartRabbit { crash: true, .. } => "crash-rabbitmq",
            Self::RestartRabbit { .. } => "restart-rabbitmq",
            Self::KillNode(_) => "kill-node",
            Self::RestartPostgres => "restart-postgres",
            Self::MemoryAlarm => "memory-alarm",
            Self::LongDatabaseOutage => "long-db-outage",
            Self::Cluster(ClusterFault::KillPrimary) => "kill-primary",
            Self::Cluster(ClusterFault::KillPrimaryAheadOfStandby) => "kill-primary-ahead",
            Self::Cluster(ClusterFault::KillPrimaryPatroni) => "kill-patroni",
            Self::Cluster(ClusterFault::Switchover) => "switchover",
            Self::Cluster(ClusterFault::CutDcs) => "cut-dcs",
            Self::KillIngress(_) => "kill-ingress",
            Self::KillWorkers(_) => "kill-workers",
            Self::KillWorkersMidGroup(_) => "kill-workers-mid-group",
        }
    }

    /// The faults of round `round` (0-based); `only`, when not empty, restricts the
    /// infrastructure faults to those names (in rotation order).
    pub fn schedule(round: usize, cluster: bool, ha: bool, only: &[String]) -> RoundFaults {
        let process = if round.is_multiple_of(2) {
            Fault::KillIngress((round / 2) % 2)
        } else {
            Fault::KillWorkers((round / 2) % 2)
        };
        let rotation: Vec<Fault> = Self::rotation(round, cluster, ha)
            .into_iter()
            .filter(|f| only.is_empty() || only.iter().any(|name| name == f.name()))
            .collect();
        let infra = match rotation.as_slice() {
            [] => Fault::CutBroker,
            faults => faults[round % faults.len()],
        };
        // Every fourth round (one that SIGKILLs an ingress) also kills a workers process
        // mid-group, late in the round, the two workers in turn; no round kills a workers
        // process twice. Not more often: each kill requeues up to a prefetch of deliveries,
        // and with the harness's 2 s consumer timeout the requeues of all the faults together
        // pushed accepted messages past the intake delivery limit (ops/chaos/README.md).
        let late = round
            .is_multiple_of(4)
            .then_some(Fault::KillWorkersMidGroup((round / 4) % 2));
        RoundFaults {
            process,
            infra,
            late,
        }
    }

    /// The infrastructure faults in the order the rounds take them (`round` picks the node).
    fn rotation(round: usize, cluster: bool, ha: bool) -> Vec<Fault> {
        let cycle = round / 7;
        if ha {
            // Four primary losses in seven rounds; the DCS cut and a link cut in between.
            vec![
                Fault::Cluster(ClusterFault::KillPrimary),
                if cluster {
                    Fault::KillNode(cycle % 3)
                } else {
                    Fault::CutBroker
                },
                Fault::Cluster(ClusterFault::KillPrimaryPatroni),
                Fault::Cluster(ClusterFault::Switchover),
                Fault::CutDatabase,
                Fault::Cluster(ClusterFault::KillPrimaryAheadOfStandby),
                Fault::Cluster(ClusterFault::CutDcs),
            ]
        } else if cluster {
            vec![
                Fault::CutBroker,
                Fault::CutDatabase,
                Fault::KillNode(cycle % 3),
                Fault::RestartPostgres,
                Fault::RestartRabbit {
                    node: (cycle + 1) % 3,
                    crash: false,
                },
                Fault::MemoryAlarm,
                Fault::LongDatabaseOutage,
            ]
        } else {
            vec![
                Fault::CutBroker,
                Fault::CutDatabase,
                Fault::RestartRabbit {
                    node: 0,
                    crash: false,
                },
                Fault::RestartPostgres,
                Fault::RestartRabbit {
                    node: 0,
                    crash: true,
                },
                Fault::MemoryAlarm,
                Fault::LongDatabaseOutage,
            ]
        }
    }
}

/// What one round injects: a process fault at its start, an infrastructure fault a third of
/// the way in, and, in some rounds, a late fault two thirds of the way in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundFaults {
    pub process: Fault,
    pub infra: Fault,
    pub late: Option<Fault>,
}

impl RoundFaults {
    /// In the order a round injects them.
    pub fn all(self) -> impl Iterator<Item = Fault> {
        [Some(self.process), Some(self.infra), self.late]
            .into_iter()
            .flatten()
    }
}

/// What the injections leave for the final report.
#[derive(Debug, Default)]
pub struct FaultLog {
    pub injected: usize,
    /// What happened while a cluster node was down, one line per node loss.
    pub node_losses: Vec<String>,
    /// What each mid-group kill proved, one line each.
    pub mid_group: Vec<String>,
    /// Faults that could not prove their point (a mid-group kill that found no open group):
    /// each fails the run.
    pub unproven: Vec<String>,
    /// What each fault of the Patroni cluster did.
    pub failovers: Vec<Failover>,
}

/// Injects `fault` and waits until it is over (the process, link or service back); `bank`'s
/// counters measure what the clients saw while a node was down. Returns what the fault
/// proved, for the round line, when it has something to say.
pub async fn inject(
    harness: &mut Harness,
    bank: &Bank,
    fault: Fault,
    log: &mut FaultLog,
) -> anyhow::Result<Option<String>> {
    log.injected += 1;
    match fault {
        Fault::KillIngress(i) => {
            harness.kill_process(Role::Ingress, i).await;
            harness.start_process(Role::Ingress, i)?;
        }
        Fault::KillWorkers(i) => {
            harness.kill_process(Role::Workers, i).await;
            harness.tick(Duration::from_secs(1)).await;
            harness.start_process(Role::Workers, i)?;
        }
        Fault::KillWorkersMidGroup(i) => {
            let said = match kill_mid_group(harness, i).await? {
                Ok(proof) => {
                    let line = proof.line();
                    log.mid_group.push(format!("workers-{}: {line}", i + 1));
                    line
                }
                Err(problem) => {
                    log.unproven.push(problem.clone());
                    format!("mid-group NOT PROVEN: {problem}")
                }
            };
            return Ok(Some(said));
        }
        Fault::CutBroker | Fault::CutDatabase => {
            let link = if fault == Fault::CutBroker {
                Link::Broker
            } else {
                Link::Database
            };
            harness.proxy(link)?.cut();
            harness.tick(Duration::from_secs(2)).await;
            harness.proxy(link)?.restore();
        }
        Fault::RestartRabbit { node, crash } => {
            if harness.is_cluster() {
                harness.restart_node_app(node).await?;
            } else {
                if crash {
                    harness.kill_node(node).await;
                } else {
                    harness.stop_node(node).await;
                }
                harness.start_node(node).await?;
            }
        }
        Fault::RestartPostgres => harness.restart_postgres().await?,
        Fault::MemoryAlarm => {
            bank.set_in_alarm(true);
            harness.memory_alarm(true).await?;
            harness.tick(MEMORY_ALARM).await;
            harness.memory_alarm(false).await?;
            // Answers to requests refused while blocked may still be on their way back.
            harness.tick(Duration::from_secs(1)).await;
            bank.set_in_alarm(false);
        }
        Fault::LongDatabaseOutage => {
            harness.proxy(Link::Database)?.cut();
            harness.tick(LONG_OUTAGE).await;
            harness.proxy(Link::Database)?.restore();
        }
        Fault::KillNode(node) => {
            let line = lose_node(harness, bank, node).await?;
            log.node_losses.push(line);
        }
        Fault::Cluster(fault) => {
            let failover = fail_over(harness, fault).await?;
            let line = failover.line();
            log.failovers.push(failover);
            return Ok(Some(line));
        }
    }
    Ok(None)
}

/// SIGKILLs cluster node `node` under load, restarts it 4 s later, and says what the clients
/// and the intake queue went through meanwhile.
async fn lose_node(harness: &mut Harness, bank: &Bank, node: usize) -> anyhow::Result<String> {
    let before = bank.counters.snapshot();
    let on_node = harness.connections_to_node(node);
    let killed = Instant::now();
    harness.kill_node(node).await;
    harness.tick(Duration::from_secs(1)).await;
    let leader = harness.intake_leader().await.unwrap_or_else(|| "?".into());
    harness.tick(Duration::from_secs(3)).await;
    let down = bank.counters.snapshot().minus(before);
    let down_secs = killed.elapsed().as_secs_f64();
    harness.start_node(node).await?;
    let online = harness.intake_online().await.unwrap_or_else(|| "?".into());
    let line = format!(
        "chaos{} SIGKILLed with {on_node} connector connections on it: in the {down_secs:.1} s it was down, {} requests, {} × 200, {} × 503, {} connection errors; intake leader then {leader}; after its restart ({:.1} s later) intake members online: {online}",
        node + 1,
        down.sent,
        down.ok,
        down.unavailable,
        down.transport,
        killed.elapsed().as_secs_f64(),
    );
    out(format!("  {line}"));
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::Fault;

    #[test]
    fn the_short_form_injects_every_kind_of_fault() {
        let faults: Vec<Fault> = (0..4)
            .flat_map(|r| Fault::schedule(r, false, false, &[]).all())
            .collect();
        for wanted in [
            Fault::KillIngress(0),
            Fault::KillIngress(1),
            Fault::KillWorkers(0),
            Fault::KillWorkers(1),
            Fault::KillWorkersMidGroup(0),
            Fault::CutBroker,
            Fault::CutDatabase,
            Fault::RestartPostgres,
        ] {
            assert!(
                faults.contains(&wanted),
                "{wanted:?} missing from {faults:?}"
            );
        }
        assert!(
            faults
                .iter()
                .any(|f| matches!(f, Fault::RestartRabbit { .. }))
        );
    }

    #[test]
    fn infra_selects_the_alarm_and_the_long_outage() {
        let only = ["memory-alarm".to_owned(), "long-db-outage".to_owned()];
        let faults: Vec<Fault> = (0..4)
            .map(|r| Fault::schedule(r, false, false, &only).infra)
            .collect();
        assert_eq!(
            faults,
            [
                Fault::MemoryAlarm,
                Fault::LongDatabaseOutage,
                Fault::MemoryAlarm,
                Fault::LongDatabaseOutage
            ]
        );
    }

    #[test]
    fn the_ha_long_form_loses_the_primary_at_least_ten_times_in_every_way() {
        use crate::failover::ClusterFault;
        let faults: Vec<Fault> = (0..18)
            .map(|r| Fault::schedule(r, false, true, &[]).infra)
            .collect();
        let losses = faults
            .iter()
            .filter(|f| matches!(f, Fault::Cluster(c) if *c != ClusterFault::CutDcs))
            .count();
        assert!(losses >= 10, "{losses} primary losses in {faults:?}");
        for wanted in [
            ClusterFault::KillPrimary,
            ClusterFault::KillPrimaryAheadOfStandby,
            ClusterFault::KillPrimaryPatroni,
            ClusterFault::Switchover,
            ClusterFault::CutDcs,
        ] {
            assert!(faults.contains(&Fault::Cluster(wanted)), "{wanted:?}");
        }
        assert!(!faults.contains(&Fault::RestartPostgres));
    }

    #[test]
    fn the_cluster_form_loses_every_node_in_turn() {
        let faults: Vec<Fault> = (0..24)
            .flat_map(|r| Fault::schedule(r, true, false, &[]).all())
            .collect();
        for node in 0..3 {
            assert!(
                faults.contains(&Fault::KillNode(node)),
                "node {node} never killed"
            );
        }
    }

    #[test]
    fn the_mid_group_kill_is_late_in_rounds_that_kill_no_workers_process_at_their_start() {
        for cluster in [false, true] {
            let rounds: Vec<_> = (0..24)
                .map(|r| Fault::schedule(r, cluster, false, &[]))
                .collect();
            let mut late = Vec::new();
            for plan in &rounds {
                for fault in [plan.process, plan.infra] {
                    assert!(
                        !matches!(fault, Fault::KillWorkersMidGroup(_)),
                        "{fault:?} outside the late slot"
                    );
                }
                if let Some(fault) = plan.late {
                    assert!(
                        matches!(plan.process, Fault::KillIngress(_)),
                        "{plan:?}: a workers process killed twice in one round"
                    );
                    late.push(fault);
                }
            }
            // Every fourth round, the two workers processes in turn.
            assert_eq!(late.len(), 6);
            let expected: Vec<Fault> = (0..6).map(|i| Fault::KillWorkersMidGroup(i % 2)).collect();
            assert_eq!(late, expected);
        }
        // The short form: one mid-group kill.
        let short: Vec<Fault> = (0..4)
            .filter_map(|r| Fault::schedule(r, false, false, &[]).late)
            .collect();
        assert_eq!(short, [Fault::KillWorkersMidGroup(0)]);
    }
}
