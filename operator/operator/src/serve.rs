//! The HTTP endpoints of a replica (IO): `/metrics` (Prometheus text), `/healthz` (every supervised
//! background task still runs: 503 naming the failed tasks otherwise) and `/readyz` (the replica is up and
//! either leading or standing by).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use azora_runtime::supervise::Supervisor;
use prometheus::{Encoder, Registry, TextEncoder};
use tracing::{error, info};

/// Readiness flag shared with the main loop.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Sets readiness.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }
}

#[derive(Clone)]
struct AppState {
    registry: Registry,
    ready: Readiness,
    supervisor: Supervisor,
}

async fn healthz(State(s): State<AppState>) -> (StatusCode, String) {
    let failed = s.supervisor.failures();
    if failed.is_empty() {
        (StatusCode::OK, "ok".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("failed: {}", failed.join(", ")),
        )
    }
}

async fn metrics(State(s): State<AppState>) -> (StatusCode, String) {
    let mut buf = Vec::new();
    match TextEncoder::new().encode(&s.registry.gather(), &mut buf) {
        Ok(()) => (StatusCode::OK, String::from_utf8_lossy(&buf).into_owned()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn readyz(State(s): State<AppState>) -> StatusCode {
    if s.ready.0.load(Ordering::Relaxed) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Serves until the task is aborted.
pub async fn serve(addr: String, registry: Registry, ready: Readiness, supervisor: Supervisor) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState {
            registry,
            ready,
            supervisor,
        });
    match tokio::net::TcpListener::bind(&addr).await {
        Ok(listener) => {
            info!(%addr, "serving /metrics, /healthz, /readyz");
            if let Err(e) = axum::serve(listener, app).await {
                error!(error = &e as &dyn std::error::Error, "metrics server failed");
            }
        }
        Err(e) => error!(%addr, error = &e as &dyn std::error::Error, "cannot bind the metrics address"),
    }
}
