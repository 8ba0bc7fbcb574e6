//! Operators' commands (DESIGN.md §7), one module per command group: quarantined messages
//! (list, show, release, discard), dead-letter queues (list, replay), an order's timeline,
//! Paysafe items (track, show) and throw-away topologies (delete). Each returns the text to
//! print, so the tests check exactly what an operator sees. They are used as `admin::<command>`,
//! as the command line names them; the modules only sort them.

mod dead_letters;
mod order;
mod paysafe;
mod publish;
mod quarantine;
mod topology;

pub use dead_letters::{
    DeadLetter, DeadLetterQueue, ReplayFilter, dead_letters_list, dead_letters_peek,
    dead_letters_replay, dead_letters_replay_matching,
};
pub use order::order_timeline;
pub use paysafe::{paysafe_show, paysafe_track};
pub use publish::{confirm_channel, publish_confirmed};
pub use quarantine::{
    quarantine_discard, quarantine_discard_held, quarantine_list, quarantine_release,
    quarantine_show,
};
pub use topology::topology_delete;
