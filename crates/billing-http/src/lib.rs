//! The HTTP shell of the billing service (actix-web): routes, the Bearer API-key extractor,
//! request and response types, one mapping from domain errors to JSON errors, gateway
//! webhooks, the sandbox gateway and its checkout page, and the OpenAPI document.
//!
//! Only this crate knows JSON. It decides nothing about money: every rule is
//! `billing_core::service::Billing`'s.

pub mod amount;
pub mod auth;
pub mod dashboard;
pub mod drain;
pub mod error;
pub mod keycache;
pub mod limits;
pub mod metrics;
pub mod openapi;
mod page;
pub mod ratelimit;
pub mod routes;
pub mod sandbox;
pub mod statement;

use std::net::TcpListener;
use std::sync::{Arc, OnceLock};

use actix_web::dev::{ResourceDef, Server, Service};
use actix_web::error as actix_error;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Condition;
use actix_web::{App, HttpMessage, HttpRequest, HttpResponse, HttpServer, web};
use billing_core::money::Credits;
use billing_core::ports::{IDEMPOTENCY_KEY_LENGTH_MAX, IdGenerator};
use billing_core::service::Billing;
use tracing_actix_web::{RequestId, RootSpanBuilder, TracingLogger};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::amount::Amount;
use crate::error::ApiError;
use crate::sandbox::SandboxGateway;

/// Largest JSON request body, in bytes.
pub const JSON_BODY_SIZE_MAX: usize = 16 * 1024;
/// Largest form body (the sandbox page), in bytes.
const FORM_BODY_SIZE_MAX: usize = 4 * 1024;

/// How wallet amounts are shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletUnit {
    /// `currency` in balance responses: a currency code (`USD`) or `CREDITS`.
    pub code: String,
    /// Amounts are shown with at least this many decimals (2 for `25.50` USD).
    pub display_scale: u32,
}

impl WalletUnit {
    pub fn show(&self, credits: Credits) -> Amount {
        Amount::credits(credits, self.display_scale)
    }
}

/// What every handler shares.
pub struct AppState {
    pub billing: Billing,
    pub unit: WalletUnit,
    /// For API key ids.
    pub ids: Arc<dyn IdGenerator>,
    /// The sandbox gateway, when enabled (it serves its own checkout page).
    pub sandbox: Option<Arc<SandboxGateway>>,
    /// Authentication's limits and last-use records (per process).
    pub auth: auth::AuthGuard,
    /// The customer dashboard's sessions and links.
    pub dashboard: dashboard::DashboardSettings,
    /// Graceful shutdown: refuses new requests once started, counts those in flight.
    pub drain: Arc<drain::Drain>,
    /// `GET /metrics`: the recorder, who may read it, and where.
    pub metrics: metrics::MetricsEndpoint,
}

/// The `Idempotency-Key` header, if any: 1 to 255 printable ASCII bytes.
pub fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| {
            !k.is_empty()
                && k.len() <= IDEMPOTENCY_KEY_LENGTH_MAX
                && k.chars().all(|c| c.is_ascii_graphic())
        })
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                format!(
                    "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_LENGTH_MAX} printable ASCII characters"
                ),
            )
        })?;
    Ok(Some(key.to_owned()))
}

/// The `Idempotency-Key` header of a call that moves money, where it is required: without
/// one a retried call (a dropped connection after the commit) would move it twice.
pub fn required_idempotency_key(req: &HttpRequest) -> Result<String, ApiError> {
    idempotency_key(req)?.ok_or_else(|| {
        ApiError::bad_request(
            "idempotency_key_required",
            format!(
                "{} {} needs an Idempotency-Key header (one per operation; a retry sends the same)",
                req.method(),
                req.path()
            ),
        )
    })
}

fn json_error(err: actix_error::JsonPayloadError, _req: &HttpRequest) -> actix_error::Error {
    use actix_error::JsonPayloadError as E;
    use actix_web::http::StatusCode;
    let api = match &err {
        E::Overflow { .. } | E::OverflowKnownLength { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than {JSON_BODY_SIZE_MAX} bytes"),
        ),
        E::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send Content-Type: application/json",
        ),
        E::Deserialize(e) if e.is_data() => ApiError::bad_request("invalid_request", e.to_string()),
        E::Deserialize(e) => ApiError::bad_request("invalid_json", format!("malformed JSON: {e}")),
        other => ApiError::bad_request("invalid_request", other.to_string()),
    };
    actix_error::InternalError::from_response(err, actix_web::ResponseError::error_response(&api))
        .into()
}

fn query_error(err: actix_error::QueryPayloadError, _req: &HttpRequest) -> actix_error::Error {
    let api = ApiError::bad_request("invalid_request", format!("query: {err}"));
    actix_error::InternalError::from_response(err, actix_web::ResponseError::error_response(&api))
        .into()
}

fn path_error(err: actix_error::PathError, _req: &HttpRequest) -> actix_error::Error {
    let api = ApiError::bad_request("invalid_request", format!("path: {err}"));
    actix_error::InternalError::from_response(err, actix_web::ResponseError::error_response(&api))
        .into()
}

fn payload_error_config() -> web::PayloadConfig {
    web::PayloadConfig::new(routes::gateway::WEBHOOK_BODY_SIZE_MAX)
}

/// Paths served outside the OpenAPI document (pages), with their methods.
const PAGE_ROUTES: &[(&str, &str)] = &[
    ("/sandbox/checkout/{payment_ref}", "GET, POST"),
    ("/checkout/return/{gateway}", "GET"),
    ("/openapi.json", "GET"),
];

/// Every known path and the methods it answers (its `Allow` header), from the OpenAPI
/// document and [`PAGE_ROUTES`]: what the 405 answer needs.
fn known_routes() -> &'static [(ResourceDef, String)] {
    static ROUTES: OnceLock<Vec<(ResourceDef, String)>> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let doc = openapi::ApiDoc::openapi();
        let mut routes: Vec<(ResourceDef, String)> = doc
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let methods = [
                    ("GET", item.get.is_some()),
                    ("POST", item.post.is_some()),
                    ("PUT", item.put.is_some()),
                    ("DELETE", item.delete.is_some()),
                    ("PATCH", item.patch.is_some()),
                ];
                let allow: Vec<&str> = methods
                    .iter()
                    .filter(|(_, served)| *served)
                    .map(|(m, _)| *m)
                    .collect();
                (ResourceDef::new(path.as_str()), allow.join(", "))
            })
            .collect();
        routes.extend(
            PAGE_ROUTES
                .iter()
                .map(|(path, allow)| (ResourceDef::new(*path), (*allow).to_owned())),
        );
        routes
    })
}

/// Unknown paths answer `404 not_found`; a known path with a method it does not serve
/// answers `405 method_not_allowed` with `Allow`.
async fn not_found(req: HttpRequest) -> HttpResponse {
    use actix_web::http::StatusCode;
    let path = req.path();
    if let Some((_, allow)) = known_routes().iter().find(|(def, _)| def.is_match(path)) {
        let mut response = actix_web::ResponseError::error_response(&ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!(
                "{} is not served here; this path answers {allow}",
                req.method()
            ),
        ));
        if let Ok(value) = HeaderValue::from_str(allow) {
            response.headers_mut().insert(header::ALLOW, value);
        }
        return response;
    }
    actix_web::ResponseError::error_response(&ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint",
    ))
}

/// Registers every route, the extractor limits and error handlers.
pub fn configure(state: web::Data<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    let policy = state.billing.policy();
    let doc_settings = openapi::DocSettings {
        currency: policy.currency.code().to_owned(),
        currency_exponent: policy.currency.exponent(),
        wallet_decimals: state
            .unit
            .display_scale
            .min(billing_core::money::LEDGER_SCALE),
        gateways: state
            .billing
            .gateways()
            .names()
            .map(str::to_owned)
            .collect(),
    };
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(state)
            .app_data(
                web::JsonConfig::default()
                    .limit(JSON_BODY_SIZE_MAX)
                    .error_handler(json_error),
            )
            .app_data(web::QueryConfig::default().error_handler(query_error))
            .app_data(web::PathConfig::default().error_handler(path_error))
            .app_data(web::FormConfig::default().limit(FORM_BODY_SIZE_MAX))
            .app_data(payload_error_config())
            .service(routes::wallet::balance)
            .service(routes::wallet::top_up)
            .service(routes::wallet::top_up_status)
            .service(routes::wallet::transactions)
            .service(routes::wallet::transaction)
            .service(routes::wallet::topup_packs)
            .service(routes::wallet::topup_history)
            .service(routes::platform::usage)
            .service(routes::controls::get_spending_limit)
            .service(routes::controls::put_spending_limit)
            .service(routes::controls::admin_get_spending_limit)
            .service(routes::controls::admin_put_spending_limit)
            .service(routes::alerts::get_alert)
            .service(routes::alerts::put_alert)
            .service(routes::alerts::admin_get_alert)
            .service(routes::alerts::admin_put_alert)
            .service(routes::autotopup::get_auto_topup)
            .service(routes::autotopup::put_auto_topup)
            .service(routes::autotopup::get_payment_method)
            .service(routes::autotopup::delete_payment_method)
            .service(routes::autotopup::admin_get_auto_topup)
            .service(routes::autotopup::admin_put_auto_topup)
            .service(routes::autotopup::admin_get_payment_method)
            .service(routes::autotopup::admin_delete_payment_method)
            .service(routes::holds::place)
            .service(routes::holds::get_hold)
            .service(routes::holds::capture)
            .service(routes::holds::release)
            .service(routes::holds::extend)
            .service(routes::rates::rates)
            .service(routes::rates::set_rate)
            .service(routes::rates::delete_rate)
            .service(routes::platform::create_account)
            .service(routes::platform::get_account)
            .service(routes::platform::create_key)
            .service(routes::platform::list_account_keys)
            .service(routes::platform::create_service_key)
            .service(routes::platform::list_keys)
            .service(routes::platform::revoke_key)
            .service(routes::platform::grant)
            .service(routes::platform::refund)
            .service(routes::platform::list_packs)
            .service(routes::platform::create_pack)
            .service(routes::platform::update_pack)
            .service(routes::platform::deactivate_pack)
            .service(routes::gateway::webhook)
            .service(routes::gateway::checkout_return)
            .service(routes::gateway::healthz)
            .service(routes::gateway::readyz)
            .route("/metrics", web::get().to(metrics::scrape))
            .service(sandbox::checkout_page)
            .service(sandbox::checkout_decide)
            .service(sandbox::charges)
            .configure(dashboard::configure)
            .service(
                SwaggerUi::new("/docs/{_:.*}")
                    .external_url_unchecked("/openapi.json", openapi::document(&doc_settings)),
            )
            .default_service(web::to(not_found));
    }
}

/// The span every log line of a request carries: its id (also sent back as `X-Request-Id`),
/// method and path. Lean on purpose: the log formatter writes a span's fields out when the
/// request starts, whether or not a line is ever logged in it, and the default span's dozen
/// fields (its route found by matching every pattern, the status and errors recorded into
/// it at the end) cost more than a debit's ledger write. A refused or failed request logs
/// its own line, with its code and status.
struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &actix_web::dev::ServiceRequest) -> tracing::Span {
        let request_id = request.extensions().get::<RequestId>().copied();
        tracing::info_span!(
            "request",
            request_id = request_id.map(tracing::field::display),
            method = %request.method(),
            path = request.path(),
        )
    }

    fn on_request_end<B: actix_web::body::MessageBody>(
        _span: tracing::Span,
        _outcome: &Result<actix_web::dev::ServiceResponse<B>, actix_web::Error>,
    ) {
    }
}

/// How many threads serve HTTP and how many connections they hold open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Serving {
    /// Worker threads (0: one per core), at most [`Serving::MAX_WORKERS`].
    pub workers: usize,
    /// Client connections open at once, over all workers and both listeners (`/metrics`'s
    /// too): past it the listeners stop accepting (new connections wait in the kernel's
    /// backlog) until one closes. It bounds the memory that connections can take under
    /// overload. Each worker takes an equal share, rounded down but at least one, so a bound
    /// below the number of workers holds one connection a worker.
    pub max_connections: usize,
}

impl Default for Serving {
    fn default() -> Serving {
        Serving {
            workers: 0,
            max_connections: 10_000,
        }
    }
}

impl Serving {
    /// The most worker threads actix starts (it panics past it).
    pub const MAX_WORKERS: usize = 512;

    /// The worker threads to start: actix's own default for 0 (one per core, 2 when the
    /// count cannot be read), never more than [`Serving::MAX_WORKERS`].
    fn worker_threads(self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
            n => n,
        }
        .min(Self::MAX_WORKERS)
    }

    /// Each worker's share of `max_connections` (actix counts per worker): rounded down, so
    /// that the workers together never hold more than the bound, but at least one.
    fn per_worker(self) -> usize {
        (self.max_connections / self.worker_threads()).max(1)
    }
}

/// Starts the HTTP server on `listener` (and on `metrics_listener`, for `/metrics`) with
/// `serving`'s worker threads and connection bound.
/// Every response carries the request's id in `X-Request-Id`, and every request is logged
/// with it.
pub fn serve(
    state: web::Data<AppState>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    serving: Serving,
) -> std::io::Result<Server> {
    // Metrics off: no per-request counting (the route pattern, labels) on the hot path.
    let counting = state.metrics.handle.is_some();
    let metrics_listener_on = state.metrics.listen_address.is_some();
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(auth::authenticate))
            .wrap(actix_web::middleware::from_fn(drain::refuse_while_draining))
            .wrap(actix_web::middleware::from_fn(limits::enforce))
            // Outside the limits and the drain, so that their answers carry the id too, and
            // are never stored by a cache: balances, transactions and keys are one account's
            // (a response that says otherwise, the dashboard's stylesheet, keeps its own).
            .wrap_fn(|req, srv| {
                let request_id = req.extensions().get::<RequestId>().copied();
                let response = srv.call(req);
                async move {
                    let mut response = response.await?;
                    let headers = response.headers_mut();
                    if let Some(id) = request_id
                        && let Ok(value) = HeaderValue::from_str(&id.to_string())
                    {
                        headers.insert(HeaderName::from_static("x-request-id"), value);
                    }
                    if !headers.contains_key(header::CACHE_CONTROL) {
                        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                    }
                    Ok(response)
                }
            })
            .wrap(Condition::new(
                metrics_listener_on,
                actix_web::middleware::from_fn(metrics::only_metrics_on_its_listener),
            ))
            .wrap(TracingLogger::<RequestSpan>::new())
            .wrap(Condition::new(
                counting,
                actix_web::middleware::from_fn(metrics::record),
            ))
            .configure(configure(state.clone()))
    })
    .listen(listener)?;
    if let Some(metrics_listener) = metrics_listener {
        server = server.listen(metrics_listener)?;
    }
    server = server
        .workers(serving.worker_threads())
        .max_connections(serving.per_worker());
    // Signals are the caller's: it drains (billing_server::Running::serve_until_shutdown)
    // before stopping, so the stop itself waits only briefly for connections.
    Ok(server.shutdown_timeout(5).disable_signals().run())
}

#[cfg(test)]
mod tests {
    use super::Serving;

    #[test]
    fn the_connection_bound_is_split_over_the_workers_rounding_down() {
        let split = |workers, max_connections| {
            Serving {
                workers,
                max_connections,
            }
            .per_worker()
        };
        assert_eq!(split(2, 10_000), 5_000);
        assert_eq!(split(2, 5), 2);
        assert_eq!(split(4, 1), 1);
        assert_eq!(split(1, 2), 2);
        assert_eq!(split(3, 1_000_000), 333_333);
        // Never more workers than actix starts.
        assert_eq!(split(100_000, 1_024_000), 2_000);
        // 0 workers: one per core, each with its share.
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        assert_eq!(split(0, 10_000 * cores), 10_000);
    }
}
