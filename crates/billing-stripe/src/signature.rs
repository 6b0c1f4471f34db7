//! Stripe's webhook signature scheme, checked against the core's clock.
//!
//! The `Stripe-Signature` header is `t={unix seconds},v1={hex},v1={hex}…` (other schemes, such
//! as `v0`, may appear and are ignored). Each `v1` is HMAC-SHA256 over `"{t}.{raw body}"` keyed
//! with an endpoint's signing secret; Stripe sends one `v1` per active secret while a secret is
//! rolled. async-stripe's `Webhook::construct_event` reads the system clock, so the check is
//! done here with the `now` the core passes in.

use billing_core::ports::GatewayError;
use billing_core::time::Timestamp;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The header carrying the signature (as received, in lower case).
pub const SIGNATURE_HEADER: &str = "stripe-signature";
/// Largest accepted distance between the signature's timestamp and now, either way (Stripe's
/// libraries' default tolerance).
pub const SIGNATURE_TOLERANCE_SECS: u64 = 300;
/// Limits on what is parsed from the header.
const SIGNATURE_HEADER_LENGTH_MAX: usize = 4096;
const SIGNATURES_MAX: usize = 16;

type HmacSha256 = Hmac<Sha256>;

fn bad(reason: &str) -> GatewayError {
    GatewayError::BadSignature(reason.to_owned())
}

/// The parts of a `Stripe-Signature` header.
struct SignatureHeader<'a> {
    /// The timestamp exactly as written, since it is part of the signed payload.
    timestamp_text: &'a str,
    timestamp: i64,
    signatures: Vec<Vec<u8>>,
}

fn parse_header(header: &str) -> Result<SignatureHeader<'_>, GatewayError> {
    if header.len() > SIGNATURE_HEADER_LENGTH_MAX {
        return Err(bad("signature header too long"));
    }
    let mut timestamp_text = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let Some((key, value)) = item.trim().split_once('=') else {
            return Err(bad("garbled signature header"));
        };
        match key {
            "t" if timestamp_text.is_none() => timestamp_text = Some(value),
            "t" => return Err(bad("two timestamps in signature header")),
            "v1" => {
                if signatures.len() == SIGNATURES_MAX {
                    return Err(bad("too many signatures in header"));
                }
                // A value that is not hex cannot match; the others may.
                if let Ok(bytes) = hex::decode(value) {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp_text = timestamp_text.ok_or_else(|| bad("no timestamp in signature header"))?;
    if timestamp_text.is_empty() || !timestamp_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("garbled timestamp in signature header"));
    }
    let timestamp = timestamp_text
        .parse::<i64>()
        .map_err(|_| bad("garbled timestamp in signature header"))?;
    if signatures.is_empty() {
        return Err(bad("no v1 signature in header"));
    }
    Ok(SignatureHeader {
        timestamp_text,
        timestamp,
        signatures,
    })
}

/// Whether `signature` is HMAC-SHA256(`secret`, `"{timestamp}.{body}"`), in constant time.
fn signature_matches(secret: &str, timestamp: &str, body: &[u8], signature: &[u8]) -> bool {
    let Ok(mut mac) = HmacSha256::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(signature).is_ok()
}

/// Checks a `Stripe-Signature` header against the raw body.
///
/// Accepts when some `v1` signature matches some secret and the header's timestamp is within
/// [`SIGNATURE_TOLERANCE_SECS`] of `now`. Every failure, a missing or garbled header included,
/// is [`GatewayError::BadSignature`]. Every (secret, signature) pair is computed, so the time
/// taken does not depend on which one matched.
pub fn verify_signature(
    header: Option<&str>,
    body: &[u8],
    secrets: &[String],
    now: Timestamp,
) -> Result<(), GatewayError> {
    let header = parse_header(header.ok_or_else(|| bad("no Stripe-Signature header"))?)?;
    let mut matched = false;
    for secret in secrets {
        for signature in &header.signatures {
            matched |= signature_matches(secret, header.timestamp_text, body, signature);
        }
    }
    if !matched {
        return Err(bad("no signature matches"));
    }
    if now.as_secs().abs_diff(header.timestamp) > SIGNATURE_TOLERANCE_SECS {
        return Err(bad("timestamp outside the tolerance window"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: &str, body: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(t.as_bytes());
        mac.update(b".");
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    fn secrets(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    const NOW: i64 = 1_700_000_000;

    #[test]
    fn accepts_a_valid_signature_and_ignores_other_schemes() {
        let body = b"{\"id\":\"evt_1\"}";
        let header = format!("t={NOW},v0=abcd,v1={}", sign("whsec_a", "1700000000", body));
        let now = Timestamp::from_secs(NOW);
        assert_eq!(
            verify_signature(Some(&header), body, &secrets(&["whsec_a"]), now),
            Ok(())
        );
    }

    #[test]
    fn refuses_garbled_headers() {
        let body = b"{}";
        let good = sign("whsec_a", "1700000000", body);
        let now = Timestamp::from_secs(NOW);
        for header in [
            String::new(),
            "garbage".to_owned(),
            format!("v1={good}"),
            format!("t=,v1={good}"),
            format!("t=-1700000000,v1={good}"),
            format!("t=17e8,v1={good}"),
            format!("t={NOW},t={NOW},v1={good}"),
            format!("t={NOW}"),
            format!("t={NOW},v1=zz"),
            format!("t={NOW},v1={}", "a".repeat(5000)),
        ] {
            assert!(
                matches!(
                    verify_signature(Some(&header), body, &secrets(&["whsec_a"]), now),
                    Err(GatewayError::BadSignature(_))
                ),
                "{header:?}"
            );
        }
    }

    #[test]
    fn window_is_inclusive_at_300_seconds_both_ways() {
        let body = b"{}";
        for (t, ok) in [
            (NOW - 300, true),
            (NOW + 300, true),
            (NOW - 301, false),
            (NOW + 301, false),
        ] {
            let header = format!("t={t},v1={}", sign("whsec_a", &t.to_string(), body));
            let result = verify_signature(
                Some(&header),
                body,
                &secrets(&["whsec_a"]),
                Timestamp::from_secs(NOW),
            );
            assert_eq!(result.is_ok(), ok, "t = now {:+}", t - NOW);
        }
    }
}
