//! Polling helpers for tests: wait until a condition holds, with a deadline. Never a fixed sleep.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `f` every 200 ms until it returns true or `timeout` passes. Returns whether it held.
pub async fn until<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads `get` every 200 ms until `ok` accepts what it returned or `timeout` passes: `Ok` with the value
/// accepted, or `Err` with the last one read (for the failure message).
pub async fn value<T, F, Fut>(timeout: Duration, mut get: F, ok: impl Fn(&T) -> bool) -> Result<T, T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let v = get().await;
        if ok(&v) {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(v);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
