//! Gateway notifications (`POST /webhooks/{gateway}`), the page customers return to after a
//! checkout, and `/healthz`.

use std::collections::HashMap;

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use billing_core::ids::TopUpId;
use billing_core::ports::Notification;
use billing_core::service::SettleOutcome;
use billing_core::topup::TopUpStatus;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::page::{escape, page};

/// Largest notification body accepted, in bytes.
pub const WEBHOOK_BODY_SIZE_MAX: usize = 256 * 1024;

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookResponse {
    pub received: bool,
    /// What the notification did: `completed`, `failed`, `already_settled`, `pending`,
    /// `amount_mismatch` or `ignored`.
    pub outcome: String,
}

/// A payment gateway's notification. No Bearer key: the gateway's signature is verified
/// before anything else, then the payment is confirmed server to server. A duplicate, late
/// or concurrent notification credits nothing twice.
#[utoipa::path(
    tag = "webhooks",
    params(("gateway" = String, Path, description = "`sandbox`, `stripe` or `myfatoorah`")),
    request_body(content = String, content_type = "application/json", description = "The gateway's signed notification, as the gateway sends it"),
    responses(
        (status = 200, body = WebhookResponse),
        (status = 400, description = "Bad or stale signature", body = ErrorBody),
        (status = 404, description = "Gateway not enabled", body = ErrorBody),
        (status = 503, description = "Gateway or storage unavailable: retry", body = ErrorBody),
    )
)]
#[post("/webhooks/{gateway}")]
pub async fn webhook(
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<web::Json<WebhookResponse>, ApiError> {
    let gateway = path.into_inner();
    let notification = Notification {
        headers: req
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                value
                    .to_str()
                    .ok()
                    .map(|v| (name.as_str().to_ascii_lowercase(), v.to_owned()))
            })
            .collect(),
        body: body.to_vec(),
    };
    let outcome = state
        .billing
        .handle_notification(&gateway, &notification)
        .await;
    match &outcome {
        Ok(o) => tracing::info!(gateway, outcome = o.name(), "notification handled"),
        Err(e) => tracing::warn!(gateway, error = %e, "notification refused"),
    }
    crate::metrics::webhook(&gateway, &outcome);
    let outcome = outcome?;
    if let SettleOutcome::AmountMismatch(t) = &outcome {
        tracing::error!(topup = %t.id, gateway, "gateway reports a paid amount that differs from the top-up; left pending");
    }
    Ok(web::Json(WebhookResponse {
        received: true,
        outcome: outcome.name().to_owned(),
    }))
}

/// Where a gateway sends the customer back. The query is never trusted: it only names the
/// top-up whose status is then asked of the gateway, server to server.
#[get("/checkout/return/{gateway}")]
pub async fn checkout_return(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let gateway_name = path.into_inner();
    let Some(gateway) = state.billing.gateways().get(&gateway_name).cloned() else {
        return page(
            404,
            "Unknown payment gateway",
            "<p>This gateway is not enabled.</p>",
        );
    };
    let topup = match query.get("topup") {
        Some(id) if id.len() <= 100 => state.billing.store().topup(&TopUpId::new(id.clone())).await,
        _ => Ok(None),
    };
    let topup = match topup {
        Ok(Some(t)) if t.gateway == gateway_name => t,
        Ok(_) => return page(404, "Unknown top-up", "<p>No such top-up.</p>"),
        Err(e) => {
            tracing::error!(error = %e, "storage unavailable on checkout return");
            return page(
                503,
                "Please retry",
                "<p>Storage is temporarily unavailable.</p>",
            );
        }
    };
    let status = match state.billing.settle(gateway.as_ref(), topup.clone()).await {
        Ok(outcome) => outcome.into_topup().map_or(topup.status, |t| t.status),
        Err(_) => topup.status,
    };
    // A customer who started the top-up in the dashboard goes back to it.
    if let Ok(Some(session)) = crate::dashboard::session::current(&state, &req).await
        && session.account == topup.account_id
    {
        return HttpResponse::SeeOther()
            .insert_header((
                actix_web::http::header::LOCATION,
                format!("/dashboard/top-ups/{}", topup.id),
            ))
            .finish();
    }
    let credits = topup
        .credits
        .checked_add(topup.bonus)
        .unwrap_or(topup.credits);
    let (title, text) = match status {
        TopUpStatus::Completed => (
            "Payment received",
            format!(
                "{} {} have been added to your wallet.",
                state.unit.show(credits).0,
                escape(&state.unit.code)
            ),
        ),
        TopUpStatus::Failed => (
            "Payment not completed",
            "The payment failed or was cancelled; nothing was charged to your wallet.".to_owned(),
        ),
        TopUpStatus::Pending => (
            "Payment pending",
            "We are waiting for the payment gateway's confirmation; credits appear within minutes."
                .to_owned(),
        ),
    };
    page(
        200,
        title,
        &format!(
            "<p>{text}</p><p class=\"muted\">Top-up <code>{}</code></p>",
            escape(topup.id.as_str())
        ),
    )
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub storage: String,
}

/// Readiness for a load balancer: the database answers and has every migration this build
/// expects. `503` otherwise (take the process out of rotation; it keeps running).
#[utoipa::path(tag = "ops", responses((status = 200, body = Health), (status = 503, body = Health)))]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.drain.is_draining() {
        return HttpResponse::ServiceUnavailable().json(Health {
            status: "draining".into(),
            storage: "ok".into(),
        });
    }
    match state.billing.store().ready().await {
        Ok(()) => HttpResponse::Ok().json(Health {
            status: "ready".into(),
            storage: "ok".into(),
        }),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: not ready");
            HttpResponse::ServiceUnavailable().json(Health {
                status: "not_ready".into(),
                storage: "unavailable".into(),
            })
        }
    }
}

/// Liveness and storage reachability.
#[utoipa::path(tag = "ops", responses((status = 200, body = Health), (status = 503, body = Health)))]
#[get("/healthz")]
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    match state.billing.store().has_admin_key().await {
        Ok(_) => HttpResponse::Ok().json(Health {
            status: "ok".into(),
            storage: "ok".into(),
        }),
        Err(e) => {
            tracing::error!(error = %e, "health check: storage unavailable");
            HttpResponse::ServiceUnavailable().json(Health {
                status: "degraded".into(),
                storage: "unavailable".into(),
            })
        }
    }
}
