//! `connector-evidence`: the evidence archive's admin command (see the crate's library).

use std::process::ExitCode;

use clap::Parser as _;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = connector_evidence::Cli::parse();
    let mut out = std::io::stdout().lock();
    ExitCode::from(connector_evidence::run(cli, &mut out).await.code())
}
