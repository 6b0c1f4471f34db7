//! The one mapping from domain errors to HTTP: `{"error": {"code", "message"}}` with a stable
//! `code` and the right status. The full cause goes to the log; a 5xx body never carries an
//! internal detail.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use billing_core::ledger::RefundRuleError;
use billing_core::ports::{GatewayError, StoreError};
use billing_core::service::{
    CreateAccountError, CreateTopUpError, HandleNotificationError, LedgerOpError, ManageRateError,
    StatementError,
};
use billing_core::topup::TopUpRuleError;
use serde::Serialize;
use utoipa::ToSchema;

/// An error answered to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, sent as `Retry-After` (429 and 503 answers).
    pub retry_after: Option<u64>,
}

/// The error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `insufficient_funds`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// `404 account_not_found`: the account does not exist, or the caller's key may not act
    /// on it (the two look the same).
    pub fn account_not_found() -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "account_not_found",
            "no such account",
        )
    }

    /// `429 rate_limited` with `Retry-After`.
    pub fn rate_limited(message: impl Into<String>, retry_after_secs: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after_secs),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// A server-side failure: logged in full, answered without detail.
    pub fn internal(cause: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "an internal error occurred; it has been logged",
        )
    }
}

impl ApiError {
    /// This error's response, with `Connection: close`: for a client that should not send
    /// more on this connection (it is shutting down, or it sent what it must not).
    pub fn closing_response(&self) -> HttpResponse {
        let mut response = self.error_response();
        response
            .head_mut()
            .set_connection_type(actix_web::http::ConnectionType::Close);
        response
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        if self.status.is_server_error() {
            tracing::warn!(
                code = self.code,
                status = self.status.as_u16(),
                "request failed"
            );
        } else {
            tracing::info!(code = self.code, status = self.status.as_u16(), message = %self.message, "request refused");
        }
        let mut response = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            response.insert_header(("Retry-After", secs.to_string()));
        }
        response.json(ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message.clone(),
            },
        })
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Unavailable(cause) => {
                tracing::error!(error = %cause, "storage unavailable");
                ApiError {
                    retry_after: Some(1),
                    ..ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "storage_unavailable",
                        "storage is temporarily unavailable; retry later",
                    )
                }
            }
            StoreError::Duplicate(what) => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("already exists: {what}"),
            ),
            corrupt @ StoreError::Corrupt(_) => ApiError::internal(&corrupt),
        }
    }
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> ApiError {
        match e {
            GatewayError::Declined(m) => ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "payment_declined",
                format!("payment declined: {m}"),
            ),
            GatewayError::InvalidRequest(m) => {
                tracing::error!(error = %m, "payment gateway refused a request");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "gateway_error",
                    "the payment gateway refused the request",
                )
            }
            GatewayError::Transient(m) => {
                tracing::warn!(error = %m, "payment gateway unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "gateway_unavailable",
                    "the payment gateway is temporarily unavailable; retry later",
                )
            }
            GatewayError::BadSignature(m) => ApiError::bad_request(
                "invalid_signature",
                format!("notification signature rejected: {m}"),
            ),
            GatewayError::Malformed(m) => ApiError::bad_request(
                "invalid_notification",
                format!("notification not understood: {m}"),
            ),
        }
    }
}

fn conflict() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_conflict",
        "this Idempotency-Key was already used with a different request",
    )
}

impl From<CreateTopUpError> for ApiError {
    fn from(e: CreateTopUpError) -> ApiError {
        let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
        match e {
            CreateTopUpError::AccountNotFound => ApiError::account_not_found(),
            CreateTopUpError::PackNotFound => ApiError::new(
                StatusCode::NOT_FOUND,
                "pack_not_found",
                "no active pack with this id",
            ),
            CreateTopUpError::UnknownGateway(g) => ApiError::bad_request(
                "unknown_gateway",
                format!("payment gateway {g:?} is not enabled"),
            ),
            CreateTopUpError::Invalid(m) => ApiError::bad_request("invalid_request", m),
            CreateTopUpError::Rule(rule @ TopUpRuleError::BelowMinimum { .. }) => {
                ApiError::new(unprocessable, "below_minimum", rule.to_string())
            }
            CreateTopUpError::Rule(rule @ TopUpRuleError::ContactSales { .. }) => {
                ApiError::new(unprocessable, "contact_sales", rule.to_string())
            }
            CreateTopUpError::Rule(TopUpRuleError::Amount(e)) => {
                ApiError::bad_request("invalid_amount", format!("amount: {e}"))
            }
            CreateTopUpError::IdempotencyConflict => conflict(),
            cannot @ CreateTopUpError::CannotSaveMethod(_) => ApiError::new(
                unprocessable,
                "payment_method_not_savable",
                cannot.to_string(),
            ),
            CreateTopUpError::Gateway(e) => e.into(),
            CreateTopUpError::Store(e) => e.into(),
        }
    }
}

impl From<LedgerOpError> for ApiError {
    fn from(e: LedgerOpError) -> ApiError {
        match e {
            LedgerOpError::Invalid(m) => ApiError::bad_request("invalid_request", m),
            LedgerOpError::AccountNotFound => ApiError::account_not_found(),
            LedgerOpError::SpendingLimitExceeded(m) => {
                crate::routes::controls::spending_limit_exceeded(m)
            }
            free @ LedgerOpError::NothingToCharge => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "nothing_to_charge",
                free.to_string(),
            ),
            unknown @ LedgerOpError::UnknownModel(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_model",
                unknown.to_string(),
            ),
            insufficient @ LedgerOpError::InsufficientFunds { .. } => ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_funds",
                insufficient.to_string(),
            ),
            LedgerOpError::IdempotencyConflict => conflict(),
            LedgerOpError::Refund(rule @ RefundRuleError::ExceedsRefundable { .. }) => {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "refund_exceeds_refundable",
                    rule.to_string(),
                )
            }
            LedgerOpError::Refund(rule) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "refund_not_allowed",
                rule.to_string(),
            ),
            LedgerOpError::Store(e) => e.into(),
        }
    }
}

impl From<CreateAccountError> for ApiError {
    fn from(e: CreateAccountError) -> ApiError {
        match e {
            CreateAccountError::Invalid(m) => ApiError::bad_request("invalid_request", m),
            CreateAccountError::Store(e) => e.into(),
        }
    }
}

impl From<HandleNotificationError> for ApiError {
    fn from(e: HandleNotificationError) -> ApiError {
        match e {
            HandleNotificationError::UnknownGateway(g) => ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_gateway",
                format!("payment gateway {g:?} is not enabled"),
            ),
            HandleNotificationError::Gateway(e) => e.into(),
            HandleNotificationError::Store(e) => e.into(),
        }
    }
}

impl From<ManageRateError> for ApiError {
    fn from(e: ManageRateError) -> ApiError {
        match e {
            ManageRateError::Invalid(m) => ApiError::bad_request("invalid_request", m.to_string()),
            ManageRateError::NotFound => ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_model",
                "no rate for this model",
            ),
            ManageRateError::Store(e) => e.into(),
        }
    }
}

impl From<StatementError> for ApiError {
    fn from(e: StatementError) -> ApiError {
        match e {
            StatementError::EmptyPeriod => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_period",
                e.to_string(),
            ),
            StatementError::TooLarge { .. } => {
                ApiError::bad_request("statement_too_large", e.to_string())
            }
            StatementError::AccountNotFound => ApiError::account_not_found(),
            StatementError::Store(e) => e.into(),
        }
    }
}
