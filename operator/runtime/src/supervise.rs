//! Supervised background tasks (no capability state): every long-running task of the process is spawned
//! here under a name. A task that panics or ends while the process still runs marks the process unhealthy,
//! so `/healthz` fails and Kubernetes restarts the pod — a dead probe engine, DNS server or watch never
//! goes unnoticed. Tasks of a leadership term (`spawn_term`) may end with the term, but a panic inside a
//! term still fails `/healthz`. No IO.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::task::{AbortHandle, JoinHandle};
use tracing::error;

/// The process-wide supervisor.
#[derive(Clone, Default)]
pub struct Supervisor {
    failed: Arc<Mutex<Vec<String>>>,
    stopping: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl Supervisor {
    /// Spawns a task that must run as long as the process: its end or panic is a failure. The handle aborts
    /// the task (an abort is not a failure).
    pub fn spawn<F>(&self, name: &'static str, fut: F) -> AbortHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.watch(name, tokio::spawn(fut), true)
    }

    /// Spawns a task of a leadership term: it may end (the term ended), but a panic is a failure.
    pub fn spawn_term<F>(&self, name: &'static str, fut: F) -> AbortHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.watch(name, tokio::spawn(fut), false)
    }

    fn watch(&self, name: &'static str, task: JoinHandle<()>, must_run: bool) -> AbortHandle {
        let abort = task.abort_handle();
        let me = self.clone();
        tokio::spawn(async move {
            let result = task.await;
            if me.stopping.load(Ordering::Relaxed) {
                return;
            }
            match result {
                Ok(()) if must_run => me.fail(name, "ended"),
                Ok(()) => {}
                Err(e) if e.is_panic() => me.fail(name, "panicked"),
                Err(_) => {} // aborted on purpose
            }
        });
        abort
    }

    /// Records that a task failed.
    pub fn fail(&self, name: &str, how: &str) {
        error!(
            task = name,
            how, "background task stopped: the process is unhealthy"
        );
        if let Ok(mut f) = self.failed.lock() {
            f.push(format!("{name} {how}"));
        }
        self.notify.notify_waiters();
    }

    /// Resolves once any task has failed.
    pub async fn failed(&self) {
        loop {
            let notified = self.notify.notified();
            if !self.failures().is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// Tasks that failed (empty while healthy).
    pub fn failures(&self) -> Vec<String> {
        self.failed.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// From now on, tasks ending are expected (shutdown).
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_makes_the_process_unhealthy() {
        let s = Supervisor::default();
        let _keep = s.spawn("healthy", std::future::pending());
        assert!(s.failures().is_empty());
        let _ = s.spawn("probe-engine", async {
            #[allow(clippy::panic)]
            {
                panic!("boom")
            }
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), s.failed())
            .await
            .expect("failure noticed");
        assert_eq!(s.failures(), ["probe-engine panicked"]);
    }

    #[tokio::test]
    async fn a_process_task_that_ends_is_a_failure_but_an_aborted_one_is_not() {
        let s = Supervisor::default();
        let h = s.spawn("aborted", std::future::pending());
        h.abort();
        let _ = s.spawn("ended", async {});
        tokio::time::timeout(std::time::Duration::from_secs(5), s.failed())
            .await
            .expect("failure noticed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(s.failures(), ["ended ended"]);
    }

    #[tokio::test]
    async fn a_term_task_may_end_but_not_panic() {
        let s = Supervisor::default();
        let _ = s.spawn_term("term-loop", async {});
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(s.failures().is_empty());
        let _ = s.spawn_term("term-panics", async {
            #[allow(clippy::panic)]
            {
                panic!("boom")
            }
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), s.failed())
            .await
            .expect("failure noticed");
    }
}
