//! Graceful shutdown. Once [`Drain::start`] is called (on `SIGTERM`), every new request
//! answers `503 shutting_down` with `Retry-After: 1` and `Connection: close`, `/readyz`
//! answers `503 draining` (a load balancer takes the process out), and the requests already
//! in flight are counted so that the process stops only once they are answered.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::web;
use tokio::sync::Notify;

use crate::AppState;
use crate::error::ApiError;

/// Whether the process is shutting down, and how many requests it is still answering.
#[derive(Default)]
pub struct Drain {
    draining: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
}

impl Drain {
    /// From now on, new requests are refused.
    pub fn start(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.idle.notify_waiters();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Requests accepted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Waits (without polling) until no accepted request is left, at most `timeout`.
    /// Answers whether every one was answered.
    pub async fn idle(&self, timeout: Duration) -> bool {
        let waited = tokio::time::timeout(timeout, async {
            loop {
                let notified = self.idle.notified();
                if self.in_flight() == 0 {
                    return;
                }
                notified.await;
            }
        })
        .await;
        waited.is_ok()
    }

    fn enter(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self)
    }
}

/// One accepted request; dropped when its answer is ready.
struct InFlight<'a>(&'a Drain);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Middleware: refuses new requests while draining, counts the accepted ones.
pub async fn refuse_while_draining(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next.call(req).await.map(|r| r.map_into_left_body());
    };
    // Probes still answer while draining: /readyz says so, /healthz that the process lives.
    let probe = matches!(req.path(), "/readyz" | "/healthz");
    // Counted first, then checked: a request the drain did not see is refused, so once
    // `idle` has seen none left, none is accepted.
    let accepted = state.drain.enter();
    if state.drain.is_draining() && !probe {
        drop(accepted);
        let refused = ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "this process is shutting down; retry (another process will answer)",
            )
        };
        return Ok(req
            .into_response(refused.closing_response())
            .map_into_right_body());
    }
    let response = next.call(req).await;
    drop(accepted);
    response.map(|r| r.map_into_left_body())
}
