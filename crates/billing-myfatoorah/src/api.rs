//! One MyFatoorah API call: the request, the response envelope
//! (`{IsSuccess, Message, ValidationErrors, Data}`) and the translation of failures into
//! [`GatewayError`].

use billing_core::ports::GatewayError;
use reqwest::StatusCode;
use serde_json::{Map, Value};

/// Largest response body read from the API; anything longer is treated as unreadable.
pub(crate) const RESPONSE_SIZE_MAX: usize = 1024 * 1024;
/// Longest error message passed on from the API, in characters.
const ERROR_MESSAGE_LENGTH_MAX: usize = 500;
/// Most validation errors quoted in one error message.
const VALIDATION_ERRORS_QUOTED_MAX: usize = 10;

/// `POST {api_base}{path}` with the bearer token and a JSON body; answers the envelope's
/// `Data` object of a successful call.
///
/// - connection errors, timeouts, 408, 429, 5xx, other non-2xx/4xx statuses and 2xx bodies
///   that are not a successful envelope with a `Data` object → `Transient` (the outcome is
///   unknown: the call may or may not have taken effect);
/// - 401 → `InvalidRequest("unauthorized")`;
/// - other 4xx, or a 2xx envelope with `IsSuccess: false` → `InvalidRequest` with the API's
///   message and validation errors.
pub(crate) async fn post(
    http: &reqwest::Client,
    api_base: &str,
    token: &str,
    path: &str,
    body: &Value,
) -> Result<Map<String, Value>, GatewayError> {
    let url = format!("{api_base}{path}");
    let response = http
        .post(&url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .map_err(|e| transport_error(path, &e))?;
    let status = response.status();
    let bytes = read_limited(response)
        .await
        .map_err(|e| GatewayError::Transient(format!("{path}: {e}")))?;
    interpret(path, status, &bytes)
}

/// Reads the body, refusing more than [`RESPONSE_SIZE_MAX`] bytes.
async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error_text(&e))?
    {
        if bytes.len() + chunk.len() > RESPONSE_SIZE_MAX {
            return Err(format!("response longer than {RESPONSE_SIZE_MAX} bytes"));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

fn transport_error(path: &str, e: &reqwest::Error) -> GatewayError {
    GatewayError::Transient(format!("{path}: {}", transport_error_text(e)))
}

fn transport_error_text(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else {
        // reqwest's message names the URL, which holds no secret (the token is a header).
        format!("request failed: {e}")
    }
}

/// Translates a response into `Data` or an error (see [`post`]).
pub(crate) fn interpret(
    path: &str,
    status: StatusCode,
    body: &[u8],
) -> Result<Map<String, Value>, GatewayError> {
    if status == StatusCode::UNAUTHORIZED {
        return Err(GatewayError::InvalidRequest("unauthorized".to_owned()));
    }
    if status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS {
        return Err(GatewayError::Transient(format!("{path}: http {status}")));
    }
    if status.is_client_error() {
        let message = parse_envelope(body)
            .and_then(|envelope| error_message(&envelope))
            .unwrap_or_else(|| format!("http {}", status.as_u16()));
        return Err(GatewayError::InvalidRequest(message));
    }
    if !status.is_success() {
        return Err(GatewayError::Transient(format!(
            "{path}: http {}",
            status.as_u16()
        )));
    }
    let Some(mut envelope) = parse_envelope(body) else {
        return Err(GatewayError::Transient(format!(
            "{path}: unparsable response"
        )));
    };
    match envelope.get("IsSuccess") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => {
            let message =
                error_message(&envelope).unwrap_or_else(|| "IsSuccess is false".to_owned());
            return Err(GatewayError::InvalidRequest(message));
        }
        _ => {
            return Err(GatewayError::Transient(format!(
                "{path}: response without IsSuccess"
            )));
        }
    }
    match envelope.remove("Data") {
        Some(Value::Object(data)) => Ok(data),
        _ => Err(GatewayError::Transient(format!(
            "{path}: successful response without Data"
        ))),
    }
}

fn parse_envelope(body: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Value>(body).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// `Message` followed by each `Name: Error` of `ValidationErrors`, or `None` when the envelope
/// says nothing.
fn error_message(envelope: &Map<String, Value>) -> Option<String> {
    let mut parts = Vec::new();
    let message = envelope
        .get("Message")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|m| !m.is_empty());
    parts.extend(message.map(str::to_owned));
    if let Some(Value::Array(errors)) = envelope.get("ValidationErrors") {
        for error in errors.iter().take(VALIDATION_ERRORS_QUOTED_MAX) {
            let name = error.get("Name").and_then(Value::as_str).unwrap_or("");
            let text = error.get("Error").and_then(Value::as_str).unwrap_or("");
            match (name.is_empty(), text.is_empty()) {
                (_, true) => {}
                (true, false) => parts.push(text.to_owned()),
                (false, false) => parts.push(format!("{name}: {text}")),
            }
        }
    }
    if parts.is_empty() {
        return None;
    }
    let message: String = parts
        .join("; ")
        .chars()
        .filter(|c| !c.is_control())
        .take(ERROR_MESSAGE_LENGTH_MAX)
        .collect();
    Some(message)
}

/// The text of a scalar JSON value as MyFatoorah writes ids: a string as is, a number as
/// written (exact, thanks to `arbitrary_precision`). `None` for anything else.
pub(crate) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(text: &str) -> Vec<u8> {
        text.as_bytes().to_vec()
    }

    #[test]
    fn validation_errors_become_invalid_request() {
        let body = envelope(
            r#"{"IsSuccess":false,"Message":"Invalid data","ValidationErrors":[{"Name":"InvoiceValue","Error":"Invoice value must be more than 0"}],"Data":null}"#,
        );
        assert_eq!(
            interpret("/v2/SendPayment", StatusCode::BAD_REQUEST, &body),
            Err(GatewayError::InvalidRequest(
                "Invalid data; InvoiceValue: Invoice value must be more than 0".to_owned()
            ))
        );
    }

    #[test]
    fn statuses_map_to_errors() {
        let p = "/v2/GetPaymentStatus";
        assert_eq!(
            interpret(p, StatusCode::UNAUTHORIZED, b""),
            Err(GatewayError::InvalidRequest("unauthorized".to_owned()))
        );
        assert_eq!(
            interpret(p, StatusCode::NOT_FOUND, b"<html>"),
            Err(GatewayError::InvalidRequest("http 404".to_owned()))
        );
        for status in [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::BAD_GATEWAY,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::FOUND,
        ] {
            assert!(
                matches!(interpret(p, status, b"{}"), Err(GatewayError::Transient(_))),
                "{status}"
            );
        }
        for body in [
            &b"not json"[..],
            b"[]",
            b"{\"IsSuccess\":true}",
            b"{\"IsSuccess\":true,\"Data\":null}",
            b"{\"Data\":{}}",
        ] {
            assert!(
                matches!(
                    interpret(p, StatusCode::OK, body),
                    Err(GatewayError::Transient(_))
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            interpret(
                p,
                StatusCode::OK,
                b"{\"IsSuccess\":false,\"Message\":\"Invalid key\"}"
            ),
            Err(GatewayError::InvalidRequest("Invalid key".to_owned()))
        );
        assert!(interpret(p, StatusCode::OK, b"{\"IsSuccess\":true,\"Data\":{}}").is_ok());
    }
}
