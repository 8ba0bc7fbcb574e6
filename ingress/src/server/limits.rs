//! The caps on connections (DESIGN.md §2.8): how many at once in all, from one IP address, and
//! in their TLS handshake. A connection past a cap is refused in the accept loop, before any
//! TLS work or task, so a flood costs an accept and a close; the connections already admitted
//! keep their places and are served.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::forwarded::TrustedProxies;
use crate::config::HttpSettings;
use crate::metrics;

/// Which cap refused a connection: the `reason` label of the refusal metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `http.max_connections`.
    Global,
    /// `http.max_connections_per_address`.
    PerAddress,
    /// `http.max_concurrent_handshakes`.
    Handshakes,
}

impl Refused {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Global => "max_connections",
            Self::PerAddress => "max_connections_per_address",
            Self::Handshakes => "max_concurrent_handshakes",
        }
    }
}

/// The caps of one listener.
#[derive(Debug)]
pub struct ConnectionLimits {
    connections: Arc<Semaphore>,
    handshakes: Arc<Semaphore>,
    per_address: Option<Arc<PerAddress>>,
    /// Proxies forward every client's connection from their own address: exempt from the
    /// per-address cap, which would otherwise starve everyone behind them.
    exempt: Option<Arc<TrustedProxies>>,
}

impl ConnectionLimits {
    pub fn new(http: &HttpSettings, exempt: Option<Arc<TrustedProxies>>) -> Self {
        Self {
            connections: Arc::new(Semaphore::new(http.max_connections)),
            handshakes: Arc::new(Semaphore::new(http.max_concurrent_handshakes)),
            per_address: (http.max_connections_per_address > 0).then(|| {
                Arc::new(PerAddress {
                    max: http.max_connections_per_address,
                    open: Mutex::new(HashMap::new()),
                })
            }),
            exempt,
        }
    }

    /// Takes a place under every cap for a connection from `peer` (and a handshake place when
    /// it will do TLS), or says which cap is full. Never waits.
    pub fn admit(&self, peer: IpAddr, tls: bool) -> Result<Admitted, Refused> {
        let connection = self
            .connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Global)?;
        let address = match &self.per_address {
            Some(per_address) if !self.exempt.as_ref().is_some_and(|p| p.trusts(peer)) => {
                Some(per_address.take(peer).ok_or(Refused::PerAddress)?)
            }
            _ => None,
        };
        let handshake = if tls {
            Some(
                self.handshakes
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| Refused::Handshakes)?,
            )
        } else {
            None
        };
        Ok(Admitted {
            handshake,
            _address: address,
            _connection: connection,
            _open: OpenConnection::count(),
        })
    }
}

/// An admitted connection's places; each is given back when the connection ends.
#[derive(Debug)]
pub struct Admitted {
    /// Give it back once the handshake is over: [`Admitted::handshake_done`].
    handshake: Option<OwnedSemaphorePermit>,
    _address: Option<AddressSlot>,
    _connection: OwnedSemaphorePermit,
    _open: OpenConnection,
}

impl Admitted {
    pub fn handshake_done(&mut self) {
        self.handshake = None;
    }
}

/// Connections open per IP address.
#[derive(Debug)]
struct PerAddress {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerAddress {
    fn take(self: &Arc<Self>, peer: IpAddr) -> Option<AddressSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(peer).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            table: self.clone(),
            peer,
        })
    }
}

/// One connection's count in [`PerAddress`]; an address with none left leaves the table, so
/// the table holds only addresses connected now.
#[derive(Debug)]
struct AddressSlot {
    table: Arc<PerAddress>,
    peer: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self
            .table
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

/// The open-connections gauge, counted for as long as the connection lives.
#[derive(Debug)]
struct OpenConnection;

impl OpenConnection {
    fn count() -> Self {
        metrics::connection_opened();
        Self
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::connection_closed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(global: usize, per_address: usize, handshakes: usize) -> ConnectionLimits {
        let http = HttpSettings {
            max_connections: global,
            max_connections_per_address: per_address,
            max_concurrent_handshakes: handshakes,
            ..HttpSettings::default()
        };
        ConnectionLimits::new(&http, None)
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn each_cap_refuses_past_its_size_and_frees_its_place_on_drop() {
        let limits = limits(3, 2, 10);
        let first = limits.admit(A, false).unwrap();
        let _second = limits.admit(A, false).unwrap();
        assert_eq!(limits.admit(A, false).unwrap_err(), Refused::PerAddress);
        let _other = limits.admit(B, false).unwrap();
        assert_eq!(limits.admit(B, false).unwrap_err(), Refused::Global);
        drop(first);
        limits.admit(A, false).expect("a place was given back");

        let limits = super::tests::limits(10, 0, 1);
        let mut handshaking = limits.admit(A, true).unwrap();
        assert_eq!(limits.admit(B, true).unwrap_err(), Refused::Handshakes);
        limits
            .admit(B, false)
            .expect("plain connections do no handshake");
        handshaking.handshake_done();
        limits
            .admit(B, true)
            .expect("the handshake place was given back");
    }

    #[test]
    fn trusted_proxies_are_exempt_from_the_per_address_cap() {
        let proxy = crate::config::ProxySettings {
            trusted_addresses: vec!["10.0.0.1".into()],
            ..crate::config::ProxySettings::default()
        };
        let http = HttpSettings {
            max_connections_per_address: 1,
            ..HttpSettings::default()
        };
        let limits = ConnectionLimits::new(&http, TrustedProxies::from_settings(&proxy).unwrap());
        let _held: Vec<_> = (0..5).map(|_| limits.admit(A, false).unwrap()).collect();
        let _b = limits.admit(B, false).unwrap();
        assert_eq!(limits.admit(B, false).unwrap_err(), Refused::PerAddress);
    }
}
