//! `GET /metrics`: Prometheus text format, from the `metrics` facade and
//! `metrics-exporter-prometheus` (rendered on this route, without the exporter's own
//! listener).
//!
//! The series (every name starts with `billing_`):
//!
//! | series | type | labels |
//! | --- | --- | --- |
//! | `billing_http_requests_total` | counter | `method`, `route` (the route's pattern, `unmatched` for none), `status` |
//! | `billing_http_request_duration_seconds` | histogram | `method`, `route` |
//! | `billing_ledger_entries_total` | counter | `type`, `direction` (`credit`, `debit`) |
//! | `billing_ledger_amount_units_total` | counter | `type`, `direction`; absolute amounts in 10^-9 of the wallet unit |
//! | `billing_ledger_batch_postings` | histogram | postings per ledger-writer batch (its count: the batches, failed ones included) |
//! | `billing_ledger_batch_seconds` | histogram | how long each batch's transaction took, lock and connection waits included, failed or not |
//! | `billing_ledger_posting_phase_seconds` | histogram | `phase` (`read`, `decide`, `write`, `commit`): where each posting transaction's time went, top-up settles and captures aside (its sums over the writers' postings show what a posting cost its writer) |
//! | `billing_topups_total` | counter | `gateway`, `status` (`created`: a payment started; `completed`, `failed`) |
//! | `billing_webhooks_total` | counter | `gateway`, `outcome` (a settle outcome, or `refused`) |
//! | `billing_webhook_verification_failures_total` | counter | `gateway` |
//! | `billing_reconciliation_runs_total` | counter | `outcome` (`ok`, `error`) |
//! | `billing_reconciliation_topups_total` | counter | `outcome` (a settle outcome, or `error`) |
//! | `billing_outbox_depth` | gauge | notices waiting to be delivered (emails, events) |
//! | `billing_outbox_oldest_age_seconds` | gauge | how long the oldest of them has waited |
//! | `billing_db_pool_connections` | gauge | `state` (`in_use`, `idle`, `max`) |
//! | `billing_db_pool_wait_seconds` | histogram | time to get a connection from the pool |
//! | `billing_sqlite_checkpoint_lock_seconds` | histogram | SQLite: how long each checkpointer round held the writer lock |
//!
//! Counters are per process (Prometheus sums them across the processes it scrapes);
//! the outbox gauges are the database's, the same from every process.
//!
//! Access: with `BILLING_METRICS_TOKEN` set, a scrape must send `Authorization: Bearer
//! <token>` (any listener). With `BILLING_METRICS_LISTEN` set, `/metrics` is also served on
//! that address (keep it internal), where no token is needed unless one is set. With
//! neither, `/metrics` answers 404: the figures are business data.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use billing_core::ports::GatewayError;
use billing_core::service::{HandleNotificationError, SettleOutcome};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::error::ApiError;

/// Histogram buckets of every `…_seconds` series: 1 ms to 10 s.
const SECONDS_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Histogram buckets of `billing_ledger_posting_phase_seconds`: 10 µs to 1 s (a phase of a
/// batch takes well under the millisecond that `SECONDS_BUCKETS` starts at).
const PHASE_BUCKETS: [f64; 13] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25,
    1.0,
];

/// Histogram buckets of `billing_ledger_batch_postings`: 1 to 512 postings.
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Where `/metrics` answers, and who may read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSettings {
    /// `BILLING_METRICS_TOKEN`: the bearer token a scrape must send.
    pub token: Option<String>,
    /// `BILLING_METRICS_LISTEN`: a second address serving `/metrics` (and nothing a
    /// customer needs).
    pub listen: Option<String>,
}

/// Refreshes gauges that are read, not counted (the pool's state), just before a render.
pub type GaugeRefresh = Arc<dyn Fn() + Send + Sync>;

/// What `/metrics` needs: the recorder's handle, the settings, the metrics listener's
/// address once bound, and the program's gauge refresh.
#[derive(Clone, Default)]
pub struct MetricsEndpoint {
    pub handle: Option<PrometheusHandle>,
    pub settings: MetricsSettings,
    pub listen_address: Option<SocketAddr>,
    pub refresh: Option<GaugeRefresh>,
}

/// The process's Prometheus recorder, installed as the `metrics` global recorder on first
/// use. `None` when the program had installed another recorder: its metrics are its own.
pub fn recorder() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
                .ok()?
                .set_buckets_for_metric(
                    Matcher::Full("billing_ledger_batch_postings".into()),
                    &BATCH_BUCKETS,
                )
                .ok()?
                .set_buckets_for_metric(
                    Matcher::Full("billing_ledger_posting_phase_seconds".into()),
                    &PHASE_BUCKETS,
                )
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    // Histograms keep their samples until upkeep folds them into the
                    // buckets: run it whether or not anyone scrapes.
                    let upkeep = handle.clone();
                    let spawned = std::thread::Builder::new()
                        .name("metrics-upkeep".into())
                        .spawn(move || {
                            loop {
                                std::thread::sleep(std::time::Duration::from_secs(5));
                                upkeep.run_upkeep();
                            }
                        });
                    if let Err(e) = spawned {
                        tracing::warn!(error = %e, "no metrics upkeep thread: /metrics is off");
                        return None;
                    }
                    Some(handle)
                }
                Err(_) => {
                    tracing::warn!("another metrics recorder is installed: /metrics is off");
                    None
                }
            }
        })
        .clone()
}

/// Middleware: counts every request by method, route pattern and status, and times it.
pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    // A fixed set: a client may send any method name, and labels must stay bounded.
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let response = next.call(req).await?;
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let status = response.status().as_u16().to_string();
    metrics::counter!(
        "billing_http_requests_total",
        "method" => method,
        "route" => route.clone(),
        "status" => status
    )
    .increment(1);
    metrics::histogram!(
        "billing_http_request_duration_seconds",
        "method" => method,
        "route" => route
    )
    .record(started.elapsed().as_secs_f64());
    Ok(response)
}

/// Middleware: the metrics listener serves `/metrics` and nothing else (it is reached
/// without the edge proxy, so the API must not be).
pub async fn only_metrics_on_its_listener(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let on_metrics_listener = req
        .app_data::<web::Data<AppState>>()
        .and_then(|state| state.metrics.listen_address)
        .is_some_and(|address| req.app_config().local_addr() == address);
    if on_metrics_listener && req.match_info().as_str() != "/metrics" {
        let response = ApiError::not_found("route").error_response();
        return Ok(req.into_response(response).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// Counts a webhook's outcome, and a failed signature check by gateway.
pub(crate) fn webhook(gateway: &str, outcome: &Result<SettleOutcome, HandleNotificationError>) {
    let name = match outcome {
        Ok(o) => o.name(),
        // An unknown gateway name is anyone's path: not a label.
        Err(HandleNotificationError::UnknownGateway(_)) => return,
        Err(_) => "refused",
    };
    if let Err(HandleNotificationError::Gateway(GatewayError::BadSignature(_))) = outcome {
        metrics::counter!(
            "billing_webhook_verification_failures_total",
            "gateway" => gateway.to_owned()
        )
        .increment(1);
    }
    metrics::counter!("billing_webhooks_total", "gateway" => gateway.to_owned(), "outcome" => name)
        .increment(1);
}

/// Whether this request may read the metrics.
fn allowed(endpoint: &MetricsEndpoint, req: &HttpRequest) -> bool {
    if let Some(token) = &endpoint.settings.token {
        let sent = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, token)| token.trim());
        // Digests, so that the comparison takes as long whatever the lengths.
        let (sent, token) = (
            Sha256::digest(sent.as_bytes()),
            Sha256::digest(token.as_bytes()),
        );
        return bool::from(sent.as_slice().ct_eq(token.as_slice()));
    }
    endpoint
        .listen_address
        .is_some_and(|address| req.app_config().local_addr() == address)
}

/// `GET /metrics`.
pub async fn scrape(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let endpoint = &state.metrics;
    let Some(handle) = endpoint.handle.as_ref().filter(|_| allowed(endpoint, &req)) else {
        if endpoint.settings.token.is_some() {
            return ApiError::unauthorized("/metrics needs Authorization: Bearer <metrics token>")
                .error_response();
        }
        return ApiError::not_found("metrics endpoint").error_response();
    };
    if let Some(refresh) = &endpoint.refresh {
        refresh();
    }
    match state.billing.store().outbox_depth().await {
        Ok((depth, oldest)) => {
            metrics::gauge!("billing_outbox_depth").set(depth as f64);
            let age = oldest.map_or(0.0, |at| {
                (state.billing.now().as_micros() - at.as_micros()).max(0) as f64 / 1e6
            });
            metrics::gauge!("billing_outbox_oldest_age_seconds").set(age);
        }
        Err(e) => tracing::warn!(error = %e, "outbox depth unknown for /metrics"),
    }
    handle.run_upkeep();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(handle.render())
}
