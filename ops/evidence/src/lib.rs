//! `connector-evidence`: checks the evidence archive (every file against its manifest record,
//! the record chain, and optionally the chain against its anchor in PostgreSQL), and proves a
//! request from the archive alone by re-verifying the sender's signature offline with the
//! ingress's own verification code. The clock is never read: a years-old request is judged by
//! what was signed, not by when it is checked.

mod anchor;
mod archive;
mod cli;
mod prove;
mod report;

pub use anchor::{AnchorError, check_anchor};
pub use archive::{Archive, ArchiveError};
pub use cli::{Cli, Command, Exit, run};
pub use prove::{Proof, Verdict};
