//! The connector's binaries under test: built first (unless `--no-build`) so that a run never
//! tests stale code, and looked up beside the harness's own executable, in the same target
//! directory and profile.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// The directory holding connector-ingress and connector-workers, built first unless told not.
pub fn binaries(no_build: bool) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the harness's directory")?.to_owned();
    if !no_build {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = std::process::Command::new(cargo);
        command.current_dir(&workspace).args([
            "build",
            "--quiet",
            "--bins",
            "-p",
            "connector-ingress",
            "-p",
            "connector-workers",
        ]);
        if !cfg!(debug_assertions) {
            command.arg("--release");
        }
        run_to_end(
            &mut command,
            "cargo build (connector-ingress, connector-workers)",
        )?;
    }
    for binary in ["connector-ingress", "connector-workers"] {
        if !dir.join(binary).exists() {
            bail!(
                "{} is missing: build it (cargo build --bins -p {binary})",
                dir.join(binary).display()
            );
        }
    }
    Ok(dir)
}

/// Runs a one-shot command (a build, a migration, an admin command) to completion and returns
/// its standard output; a failure carries its output. The caller's `CONNECTOR_*` variables are
/// removed: only the harness's files configure it.
pub fn run_to_end(command: &mut std::process::Command, what: &str) -> anyhow::Result<String> {
    for (name, _) in std::env::vars() {
        if name.starts_with("CONNECTOR_") {
            command.env_remove(name);
        }
    }
    let output = command
        .output()
        .with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
