//! The HTTP admin listener: `/metrics` (Prometheus text format), `/healthz`
//! (the process is alive) and `/readyz` (200 when ready, 503 with the reasons
//! otherwise). Nothing here changes state.

pub mod health;
pub mod metrics;

use crate::daemon::admin::health::Health;
use crate::daemon::admin::metrics::Metrics;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use tokio::sync::watch;

/// What the handlers read.
#[derive(Clone)]
pub struct AdminState {
    /// The registry to expose.
    pub metrics: Metrics,
    /// Readiness.
    pub health: Arc<Health>,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    state
        .metrics
        .ready
        .set(state.health.readiness().is_ok() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    match state.health.readiness() {
        Ok(()) => {
            state.metrics.ready.set(1);
            (StatusCode::OK, "ready\n".to_string())
        }
        Err(reasons) => {
            state.metrics.ready.set(0);
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {}\n", reasons.join("; ")),
            )
        }
    }
}

/// Serves until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    mut stop: watch::Receiver<bool>,
) {
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|stop| *stop).await;
        })
        .await;
    if let Err(error) = result {
        tracing::error!(%error, "the admin listener failed");
    }
}
