//! async-stripe's errors, translated into the port's.

use billing_core::ports::GatewayError;
use stripe::{ApiErrors, ApiErrorsType, StripeError};

fn describe(error: &ApiErrors, status: u16) -> String {
    let mut text = format!("stripe {} (HTTP {status})", error.type_.as_str());
    if let Some(code) = &error.code {
        text.push_str(&format!(" {}", code.as_str()));
    }
    if let Some(decline) = &error.decline_code {
        text.push_str(&format!(" ({decline})"));
    }
    if let Some(message) = &error.message {
        text.push_str(&format!(": {message}"));
    }
    text
}

/// Card errors are declines; 429, 409 (a concurrent request with the same idempotency key),
/// 424 and 5xx may succeed later; other 4xx are refusals. An unreadable answer, a connection
/// error or a timeout leaves the outcome unknown: transient.
pub(crate) fn gateway_error(error: StripeError) -> GatewayError {
    match error {
        StripeError::Stripe(api, status) => {
            let text = describe(&api, status);
            if matches!(status, 409 | 424 | 429) || status >= 500 {
                GatewayError::Transient(text)
            } else if api.type_ == ApiErrorsType::CardError || status == 402 {
                GatewayError::Declined(text)
            } else {
                GatewayError::InvalidRequest(text)
            }
        }
        StripeError::ConfigError(e) => GatewayError::InvalidRequest(format!("stripe client: {e}")),
        StripeError::JSONDeserialize(e) => {
            GatewayError::Transient(format!("unreadable stripe response: {e}"))
        }
        StripeError::ClientError(e) => GatewayError::Transient(format!("stripe unreachable: {e}")),
        StripeError::Timeout => GatewayError::Transient("stripe timed out".to_owned()),
    }
}
