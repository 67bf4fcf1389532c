//! How an executor's result is hashed: what nodes (and the simulator) compare to prove that
//! every node computed the same result.

use synevi_types::{Executor, SyneviResult};

/// BLAKE3 of a result's postcard serialisation (or of the error's text).
pub fn result_hash<E: Executor>(result: &SyneviResult<E>) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    match result {
        Ok(outcome) => match postcard::to_allocvec(outcome) {
            Ok(bytes) => hasher.update(b"ok").update(&bytes),
            Err(error) => hasher
                .update(b"unserialisable")
                .update(error.to_string().as_bytes()),
        },
        Err(error) => hasher.update(b"error").update(error.to_string().as_bytes()),
    };
    *hasher.finalize().as_bytes()
}
