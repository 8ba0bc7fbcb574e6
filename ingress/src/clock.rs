//! Time as a dependency: the request path asks the [`Clock`] it was given, so tests (and the
//! interoperability vectors) verify signatures "as of" a fixed instant, never the wall clock.

use std::fmt::Debug;

use time::OffsetDateTime;

pub trait Clock: Debug + Send + Sync {
    fn now(&self) -> OffsetDateTime;
}

/// The machine's clock, for production.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock stopped at one instant, for tests.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub OffsetDateTime);

impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        self.0
    }
}
