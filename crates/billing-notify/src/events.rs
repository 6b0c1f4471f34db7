//! Signed events over HTTP.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use billing_core::money::Credits;
use billing_core::notices::{Cause, Notice, Topic};
use billing_core::ports::{DeliveryError, EventSink};
use hmac::{KeyInit, Mac};
use serde_json::{Map, Value, json};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "Billing-Signature";

/// An amount as a JSON number with its exact digits.
fn amount(credits: Credits) -> Value {
    serde_json::from_str(&credits.to_string())
        .unwrap_or_else(|_| Value::String(credits.to_string()))
}

/// The event's JSON body: `{"id", "type", "created_at", "data"}`; `data` holds the account,
/// the balance after the cause and the cause's id (`transaction_id` or `topup_id`), plus
/// what the type needs (`threshold`; `limit`, `spent`, `action`; `credits`; `reason`).
pub fn event_body(notice: &Notice) -> String {
    let mut data = Map::new();
    data.insert("account_id".into(), json!(notice.account_id.as_str()));
    data.insert("balance".into(), amount(notice.balance));
    match &notice.cause {
        Cause::Transaction(id) => data.insert("transaction_id".into(), json!(id)),
        Cause::TopUp(id) => data.insert("topup_id".into(), json!(id)),
    };
    match notice.topic {
        Topic::SpendingLimitReached => {
            if let Some(limit) = notice.threshold {
                data.insert("limit".into(), amount(limit));
            }
            if let Some(spent) = notice.amount {
                data.insert("spent".into(), amount(spent));
            }
            if let Some(action) = &notice.reason {
                data.insert("action".into(), json!(action));
            }
        }
        _ => {
            if let Some(threshold) = notice.threshold {
                data.insert("threshold".into(), amount(threshold));
            }
            if let Some(credits) = notice.amount {
                data.insert("credits".into(), amount(credits));
            }
            if let Some(reason) = &notice.reason {
                data.insert("reason".into(), json!(reason));
            }
        }
    }
    json!({
        "id": notice.id,
        "type": notice.topic.as_str(),
        "created_at": notice.created_at.to_rfc3339(),
        "data": Value::Object(data),
    })
    .to_string()
}

/// `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn sign(secret: &[u8], timestamp: i64, body: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| {
        // HMAC takes keys of any length; this branch is unreachable.
        HmacSha256::new_from_slice(b"").unwrap_or_else(|_| unreachable!())
    });
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// What a receiver does: checks `header` against `body` in constant time, and that `t` is
/// within `tolerance_secs` of `now`.
pub fn verify(secret: &[u8], header: &str, body: &str, now: i64, tolerance_secs: i64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1 = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if now.abs_diff(t) > tolerance_secs.unsigned_abs() {
        return false;
    }
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(format!("{t}.{body}").as_bytes());
    mac.verify_slice(&v1).is_ok()
}

/// POSTs events to the platform's receiver.
pub struct HttpEventSink {
    client: reqwest::Client,
    url: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for HttpEventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpEventSink")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl HttpEventSink {
    pub fn new(url: &str, secret: &str) -> Result<HttpEventSink, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("event client: {e}"))?;
        Ok(HttpEventSink {
            client,
            url: url.to_owned(),
            secret: secret.as_bytes().to_vec(),
        })
    }
}

#[async_trait]
impl EventSink for HttpEventSink {
    async fn deliver(&self, notice: &Notice) -> Result<(), DeliveryError> {
        let body = event_body(notice);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let response = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, sign(&self.secret, now, &body))
            .body(body)
            .send()
            .await
            .map_err(|e| DeliveryError(format!("event {}: {}", notice.id, e.without_url())))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(DeliveryError(format!(
                "event {}: receiver answered {status}",
                notice.id
            )))
        }
    }
}

/// No receiver configured: events are dropped (each still written to the outbox, so that a
/// receiver configured later does not see old ones).
#[derive(Debug, Default)]
pub struct NoEvents;

#[async_trait]
impl EventSink for NoEvents {
    async fn deliver(&self, _notice: &Notice) -> Result<(), DeliveryError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use billing_core::ids::AccountId;
    use billing_core::time::Timestamp;

    #[test]
    fn signatures_verify_and_name_their_time() {
        let header = sign(b"whsec", 1_700_000_000, "{}");
        assert!(header.starts_with("t=1700000000,v1="));
        assert!(verify(b"whsec", &header, "{}", 1_700_000_100, 300));
        assert!(
            !verify(b"whsec", &header, "{ }", 1_700_000_100, 300),
            "body changed"
        );
        assert!(
            !verify(b"other", &header, "{}", 1_700_000_100, 300),
            "wrong secret"
        );
        assert!(
            !verify(b"whsec", &header, "{}", 1_700_000_400, 300),
            "too old"
        );
        assert!(!verify(b"whsec", "t=1,v1=zz", "{}", 1, 300));
    }

    #[test]
    fn event_bodies_carry_the_cause_and_exact_amounts() {
        let mut notice = Notice::new(
            Topic::BalanceLow,
            &AccountId::new("acct_1"),
            "9.123456789".parse().expect("credits"),
            Cause::Transaction("txn_1".into()),
            Timestamp::from_secs(1_768_473_000),
        );
        notice.threshold = Some("10".parse().expect("credits"));
        let body: Value = serde_json::from_str(&event_body(&notice)).expect("json");
        assert_eq!(body["id"], "evt_txn_1_balance_low");
        assert_eq!(body["type"], "balance.low");
        assert_eq!(body["data"]["transaction_id"], "txn_1");
        assert_eq!(body["data"]["balance"].to_string(), "9.123456789");
        assert_eq!(body["data"]["threshold"].to_string(), "10");
        assert!(
            body["created_at"]
                .as_str()
                .expect("time")
                .starts_with("2026-01-15T")
        );
    }
}
