//! `sqlx::migrate!` embeds `migrations/` at compile time but cannot tell Cargo to watch the
//! directory: without this, a new migration file leaves an earlier build (and its binaries)
//! without it.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
