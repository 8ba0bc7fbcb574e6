//! The global budget of request bytes held in memory (`http.max_in_flight_body_bytes`): every
//! route takes its body's bytes from it as they arrive and gives them back once the request is
//! answered. When it is spent, a new body is refused at once (503 with `Retry-After`) rather
//! than queued: many slow or large bodies at once cannot exhaust memory, and the sender learns
//! it should come back (DESIGN.md §2.8).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget, shared by every request of the process.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    /// `Retry-After` of the refusal.
    pub retry_after_secs: u64,
}

/// The budget is spent: this many more bytes do not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the in-flight body budget cannot hold {0} more bytes")]
pub struct BudgetSpent(pub usize);

impl BodyBudget {
    pub fn new(max_bytes: usize, retry_after_secs: u64) -> Self {
        Self {
            bytes: Arc::new(Semaphore::new(max_bytes)),
            retry_after_secs,
        }
    }

    /// An empty share, grown as a body arrives.
    pub fn share(&self) -> HeldBytes {
        HeldBytes {
            budget: self.bytes.clone(),
            permit: None,
        }
    }
}

/// Bytes taken from the budget; given back when dropped.
#[derive(Debug)]
pub struct HeldBytes {
    budget: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

impl HeldBytes {
    /// Takes `more` bytes, or refuses at once when the budget cannot hold them.
    pub fn grow(&mut self, more: usize) -> Result<(), BudgetSpent> {
        if more == 0 {
            return Ok(());
        }
        let permits = u32::try_from(more).map_err(|_| BudgetSpent(more))?;
        let taken = self
            .budget
            .clone()
            .try_acquire_many_owned(permits)
            .map_err(|_| BudgetSpent(more))?;
        match &mut self.permit {
            Some(permit) => permit.merge(taken),
            None => self.permit = Some(taken),
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.permit
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_take_from_one_budget_and_give_back_on_drop() {
        let budget = BodyBudget::new(100, 1);
        let mut first = budget.share();
        first.grow(60).unwrap();
        first.grow(30).unwrap();
        assert_eq!(first.len(), 90);
        let mut second = budget.share();
        assert_eq!(second.grow(11), Err(BudgetSpent(11)));
        second.grow(10).unwrap();
        drop(first);
        second.grow(90).expect("the first share was given back");
    }
}
