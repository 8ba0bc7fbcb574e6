//! The three daemons' configurations, as files and command lines.

use std::ffi::OsString;
use std::path::Path;

use super::{LOOP_WAIT, Member, RETRY_TIMEOUT, TTL};

pub(super) fn etcd_argv(dir: &Path, client: u16, peer: u16) -> Vec<OsString> {
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    [
        "/usr/bin/etcd".to_owned(),
        "--name=dcs".to_owned(),
        format!("--data-dir={}", dir.join("etcd").display()),
        format!("--listen-client-urls={client_url}"),
        format!("--advertise-client-urls={client_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=dcs={peer_url}"),
    ]
    .map(OsString::from)
    .into()
}

pub(super) fn patroni_config(
    name: &str,
    pg_port: u16,
    api_port: u16,
    etcd_port: u16,
    dir: &Path,
    bin: &Path,
    synchronous: bool,
) -> String {
    let dir = dir.display();
    let bin = bin.display();
    let max_lag: u64 = if synchronous { 1 << 20 } else { 1 << 30 };
    format!(
        "scope: chaos
name: {name}
restapi:
  listen: 127.0.0.1:{api_port}
  connect_address: 127.0.0.1:{api_port}
etcd3:
  hosts: 127.0.0.1:{etcd_port}
bootstrap:
  dcs:
    ttl: {TTL}
    loop_wait: {LOOP_WAIT}
    retry_timeout: {RETRY_TIMEOUT}
    # A primary whose PostgreSQL died is replaced at once, not restarted in place.
    primary_start_timeout: 0
    synchronous_mode: {synchronous}
    # Asynchronous (the negative control): a standby behind by up to 1 GiB may still be
    # promoted, so that what asynchronous replication loses shows.
    maximum_lag_on_failover: {max_lag}
    postgresql:
      use_pg_rewind: true
      parameters:
        max_connections: 200
        wal_log_hints: 'on'
  initdb:
  - encoding: UTF8
  - auth: trust
  - username: postgres
  pg_hba:
  - local all all trust
  - host all all 127.0.0.1/32 trust
  - host replication all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:{pg_port}
  connect_address: 127.0.0.1:{pg_port}
  data_dir: {dir}/{name}-data
  bin_dir: {bin}
  pgpass: {dir}/{name}.pgpass
  authentication:
    replication:
      username: postgres
    superuser:
      username: postgres
  parameters:
    unix_socket_directories: {dir}
"
    )
}

/// HAProxy in TCP mode: a member is in rotation only while its Patroni answers `GET /primary`
/// with 200; once marked down, its sessions are cut, so no connection stays on a demoted or
/// orphaned primary.
pub(super) fn haproxy_config(port: u16, members: &[Member]) -> String {
    let servers: String = members
        .iter()
        .map(|m| {
            format!(
                "    server {} 127.0.0.1:{} maxconn 200 check port {}\n",
                m.name, m.pg_port, m.api_port
            )
        })
        .collect();
    format!(
        "global
    maxconn 1000
defaults
    mode tcp
    timeout connect 2s
    timeout client 30m
    timeout server 30m
    timeout check 1s
listen primary
    bind 127.0.0.1:{port}
    option httpchk GET /primary
    http-check expect status 200
    default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions
{servers}"
    )
}
