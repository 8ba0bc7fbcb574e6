//! What `mode = "production"` refuses (the mode itself: [`Mode`]): an ingress that would take
//! bank callbacks without client certificates, talk to the broker as `guest`, or believe a
//! forwarded certificate from too wide a range of addresses. Each refusal names its key.

use std::net::IpAddr;

use connector_runtime::config::{Mode, check_broker_user};

use super::{ConfigError, Settings};

impl Settings {
    /// The production rules; nothing in development.
    pub(super) fn check_production(&self) -> Result<(), ConfigError> {
        if !self.mode.is_production() {
            return Ok(());
        }
        if !(self.tls.enabled() || self.proxy.enabled()) {
            return Err(ConfigError::new(
                "tls.cert_file",
                "mode = \"production\" requires TLS with client certificates on the bank routes: set tls.cert_file, tls.key_file and tls.client_ca_files (or proxy.trusted_addresses behind a load balancer that terminates mTLS)",
            ));
        }
        if self.tls.enabled() && self.tls.client_ca_files.is_empty() {
            return Err(ConfigError::new(
                "tls.client_ca_files",
                "mode = \"production\" requires the CAs that issue bank client certificates",
            ));
        }
        let uri = self
            .broker
            .url
            .parse::<lapin::uri::AMQPUri>()
            .map_err(|e| ConfigError::new("broker.url", format!("not an AMQP URI: {e}")))?;
        check_broker_user(Mode::Production, &uri.authority.userinfo.username)?;
        for (i, network) in self.proxy.trusted_addresses.iter().enumerate() {
            // A malformed entry is refused, naming it, when the proxies are loaded.
            let Some((address, prefix)) = network_prefix(network) else {
                continue;
            };
            let (widest, key) = if address.is_ipv4() {
                (self.proxy.widest_ipv4_prefix, "proxy.widest_ipv4_prefix")
            } else {
                (self.proxy.widest_ipv6_prefix, "proxy.widest_ipv6_prefix")
            };
            if prefix < widest {
                return Err(ConfigError::new(
                    format!("proxy.trusted_addresses[{i}]"),
                    format!(
                        "`{network}` trusts a /{prefix}, wider than the /{widest} that {key} allows in mode = \"production\": anyone in that range could forward a bank's certificate; name the proxies' own addresses or subnet"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The address and prefix length of `10.0.0.0/24` or `10.0.0.7` (a single address is its full
/// width); IPv4-mapped IPv6 addresses count as IPv4, as the proxy check treats them.
fn network_prefix(text: &str) -> Option<(IpAddr, u8)> {
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address.parse::<IpAddr>().ok()?, Some(prefix.parse().ok()?)),
        None => (text.parse::<IpAddr>().ok()?, None),
    };
    let address = address.to_canonical();
    Some((
        address,
        prefix.unwrap_or(if address.is_ipv4() { 32 } else { 128 }),
    ))
}
