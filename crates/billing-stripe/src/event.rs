//! What a verified webhook event is about. Only routing facts are read here (the event id, the
//! Checkout Session id and the top-up id we gave Stripe); whether anything was paid is always
//! asked from Stripe afterwards ([`crate::StripeGateway::payment_status`]).

use std::collections::HashMap;

use billing_core::ids::TopUpId;
use billing_core::ports::{GatewayError, VerifiedNotification};
use serde::Deserialize;

/// The event types that concern a Checkout Session of ours.
pub(crate) const CHECKOUT_EVENT_TYPES: [&str; 4] = [
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
];

/// The event types that concern an off-session PaymentIntent of ours (auto top-up).
pub(crate) const INTENT_EVENT_TYPES: [&str; 2] =
    ["payment_intent.succeeded", "payment_intent.payment_failed"];

/// Longest id accepted from an event (Stripe's ids are well below it).
const EVENT_ID_LENGTH_MAX: usize = 255;

#[derive(Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    type_: String,
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    /// Read only for checkout events, so that any other object shape is accepted.
    object: serde_json::Value,
}

#[derive(Deserialize)]
struct SessionObject {
    id: String,
    object: String,
    #[serde(default)]
    client_reference_id: Option<String>,
    #[serde(default)]
    metadata: Option<HashMap<String, String>>,
}

fn malformed(reason: impl Into<String>) -> GatewayError {
    GatewayError::Malformed(reason.into())
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= EVENT_ID_LENGTH_MAX && id.chars().all(|c| c.is_ascii_graphic())
}

/// Reads a verified event body.
///
/// For the four `checkout.session.*` events of [`CHECKOUT_EVENT_TYPES`]: the session id as
/// `payment_ref` and the top-up id from `client_reference_id` (else `metadata.topup_id`).
/// Any other event type gives `topup_id: None, payment_ref: None`, which the core ignores
/// (and acknowledges, so that Stripe stops resending it).
pub(crate) fn parse_event(body: &[u8]) -> Result<VerifiedNotification, GatewayError> {
    let event: Event =
        serde_json::from_slice(body).map_err(|e| malformed(format!("event is not JSON: {e}")))?;
    if !valid_id(&event.id) {
        return Err(malformed("event has no valid id"));
    }
    if INTENT_EVENT_TYPES.contains(&event.type_.as_str()) {
        return intent_event(event);
    }
    if !CHECKOUT_EVENT_TYPES.contains(&event.type_.as_str()) {
        tracing::debug!(event_id = %event.id, event_type = %event.type_, "stripe event ignored");
        return Ok(VerifiedNotification {
            event_id: event.id,
            topup_id: None,
            payment_ref: None,
        });
    }
    let session: SessionObject = serde_json::from_value(event.data.object)
        .map_err(|e| malformed(format!("{} without a session: {e}", event.type_)))?;
    if session.object != "checkout.session" || !valid_id(&session.id) {
        return Err(malformed(format!(
            "{} about a {} object",
            event.type_, session.object
        )));
    }
    let topup_id = session
        .client_reference_id
        .filter(|id| valid_id(id))
        .or_else(|| {
            session
                .metadata
                .and_then(|mut m| m.remove("topup_id"))
                .filter(|id| valid_id(id))
        })
        .map(TopUpId::new);
    Ok(VerifiedNotification {
        event_id: event.id,
        topup_id,
        payment_ref: Some(session.id),
    })
}

/// `payment_intent.*`: the PaymentIntent id as `payment_ref` and the top-up from
/// `metadata.topup_id` (set on off-session charges; a Checkout's own PaymentIntent does not
/// match its top-up's `cs_…` reference, so the core ignores it).
fn intent_event(event: Event) -> Result<VerifiedNotification, GatewayError> {
    let intent: SessionObject = serde_json::from_value(event.data.object)
        .map_err(|e| malformed(format!("{} without a payment intent: {e}", event.type_)))?;
    if intent.object != "payment_intent" || !valid_id(&intent.id) {
        return Err(malformed(format!(
            "{} about a {} object",
            event.type_, intent.object
        )));
    }
    let topup_id = intent
        .metadata
        .and_then(|mut m| m.remove("topup_id"))
        .filter(|id| valid_id(id))
        .map(TopUpId::new);
    Ok(VerifiedNotification {
        event_id: event.id,
        topup_id,
        payment_ref: Some(intent.id),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_the_fallback_for_the_topup_id() {
        let body = br#"{"id":"evt_1","type":"checkout.session.expired","data":{"object":
            {"id":"cs_1","object":"checkout.session","client_reference_id":null,
             "metadata":{"topup_id":"topup_9"}}}}"#;
        let parsed = parse_event(body).expect("parses");
        assert_eq!(parsed.topup_id, Some(TopUpId::new("topup_9")));
        assert_eq!(parsed.payment_ref.as_deref(), Some("cs_1"));
    }

    #[test]
    fn refuses_a_checkout_event_about_something_else() {
        let intent = br#"{"id":"evt_2","type":"payment_intent.succeeded","data":{"object":
            {"id":"pi_9","object":"payment_intent","metadata":{"topup_id":"topup_auto_txn_1"}}}}"#;
        let parsed = parse_event(intent).expect("intent event");
        assert_eq!(parsed.payment_ref.as_deref(), Some("pi_9"));
        assert_eq!(
            parsed.topup_id.map(|t| t.to_string()).as_deref(),
            Some("topup_auto_txn_1")
        );
        let body = br#"{"id":"evt_1","type":"checkout.session.completed","data":{"object":
            {"id":"pi_1","object":"payment_intent"}}}"#;
        assert!(matches!(parse_event(body), Err(GatewayError::Malformed(_))));
        assert!(matches!(
            parse_event(b"not json"),
            Err(GatewayError::Malformed(_))
        ));
    }
}
