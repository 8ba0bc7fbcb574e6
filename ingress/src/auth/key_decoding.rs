//! One key decoded at a time in the process. OpenSSL 3.0 decodes keys (PEM, DER, and the DER
//! josekit builds from a JWK) through decoders it sets up lazily and caches; two threads
//! decoding at once can find that cache half-built and refuse a valid key ("X509_PUBKEY_get0:
//! decode error"). The interop vectors test, whose two tests load keys in parallel, failed that
//! way in about 1 run in 70, and never with one test thread. Keys are decoded when they are
//! loaded (start-up, rotation) and by the signing tools, never per verified request, so a
//! process-wide lock costs nothing that matters.

use std::sync::{Mutex, PoisonError};

static DECODING: Mutex<()> = Mutex::new(());

/// Runs `decode` holding the process's key-decoding lock. Not reentrant: `decode` must not
/// call another function that takes it.
pub fn one_at_a_time<T>(decode: impl FnOnce() -> T) -> T {
    // A panic while decoding leaves nothing half-done that the lock protects.
    let _guard = DECODING.lock().unwrap_or_else(PoisonError::into_inner);
    decode()
}
