//! Per-bank rate limiting (GCRA, from `governor`): a misbehaving or compromised client cannot
//! starve the others of the ingress or flood the intake queue. Keys are authenticated client
//! ids only, so the state is bounded by the number of configured banks.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

#[derive(Debug)]
pub struct ClientRateLimiter {
    /// `None` when limiting is off.
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

impl ClientRateLimiter {
    /// `per_second` = 0 turns limiting off; the burst is at least one request.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
            DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            limiter,
            clock: DefaultClock::default(),
        }
    }

    /// Counts one request of `client_id`; `Err` carries how long until it may send again.
    pub fn check(&self, client_id: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter
            .check_key(&client_id.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusal_with_a_wait_and_other_clients_unaffected() {
        let limiter = ClientRateLimiter::new(1, 2);
        assert!(limiter.check("BANK_X").is_ok());
        assert!(limiter.check("BANK_X").is_ok());
        let wait = limiter.check("BANK_X").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(limiter.check("BANK_Y").is_ok());
    }

    #[test]
    fn zero_means_unlimited() {
        let limiter = ClientRateLimiter::new(0, 0);
        assert!((0..10_000).all(|_| limiter.check("BANK_X").is_ok()));
    }
}
