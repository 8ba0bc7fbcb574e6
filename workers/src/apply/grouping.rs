//! Cutting the intake consumer's deliveries into groups for group commit.
//!
//! A group is bounded in messages (one commit amortised over many unit callbacks) and in body
//! bytes: a batch callback already carries many orders, so a few of them fill a transaction,
//! and grouping more would only serialise work that `apply.concurrency` groups run side by side
//! (batches of 100 orders lost a quarter of their rate when 64 of them shared one group).

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use lapin::message::Delivery;

/// When a group is complete: whichever limit is reached first (a group always has at least
/// one message, however large).
#[derive(Debug, Clone, Copy)]
pub(super) struct GroupLimits {
    pub messages: usize,
    pub bytes: usize,
    pub linger: Duration,
}

/// `deliveries` in groups within `limits`: a group is what is ready when its first delivery
/// arrives, plus what arrives within the linger of it. An error ends the stream, after the
/// group it interrupted.
pub(super) fn groups<S>(
    deliveries: S,
    limits: GroupLimits,
) -> impl Stream<Item = lapin::Result<Vec<Delivery>>>
where
    S: Stream<Item = lapin::Result<Delivery>> + Unpin,
{
    enum State<S> {
        Open(S),
        Failed(lapin::Error),
        Done,
    }
    futures_util::stream::unfold(State::Open(deliveries), move |state| async move {
        let mut deliveries = match state {
            State::Open(deliveries) => deliveries,
            State::Failed(error) => return Some((Err(error), State::Done)),
            State::Done => return None,
        };
        let first = match deliveries.next().await? {
            Ok(delivery) => delivery,
            Err(error) => return Some((Err(error), State::Done)),
        };
        let mut bytes = first.data.len();
        let mut group = vec![first];
        let deadline = tokio::time::Instant::now() + limits.linger;
        while group.len() < limits.messages && bytes < limits.bytes {
            // Polls the stream before the deadline: what is ready is taken even at zero linger.
            match tokio::time::timeout_at(deadline, deliveries.next()).await {
                Err(_lingered) => break,
                Ok(None) => return Some((Ok(group), State::Done)),
                Ok(Some(Err(error))) => return Some((Ok(group), State::Failed(error))),
                Ok(Some(Ok(delivery))) => {
                    bytes += delivery.data.len();
                    group.push(delivery);
                }
            }
        }
        Some((Ok(group), State::Open(deliveries)))
    })
}
