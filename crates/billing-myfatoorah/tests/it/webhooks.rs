//! `verify_notification`: the signature vectors of `webhook_signature_examples.json`, forged
//! and unsigned notifications, and webhooks signed and delivered by the fake.

use billing_core::ids::TopUpId;
use billing_core::ports::{GatewayError, Notification, PaymentGateway, VerifiedNotification};
use billing_core::time::Timestamp;
use billing_myfatoorah::webhook::{self, SIGNATURE_HEADER, VERSION_HEADER};
use billing_myfatoorah::{MyFatoorahConfig, MyFatoorahGateway};
use billing_testkit::fake_myfatoorah::{self as fake_mf, FakeMyFatoorah, WebhookVersion};
use serde_json::{Value, json};

use crate::support::{
    SECRET, checkout_request, currency, fixture, fixture_bytes, gateway, invoice_id, money,
    notification, raw_notification,
};

const NOW: Timestamp = Timestamp::from_secs(1_768_473_000);

/// An adapter whose webhook secret is `secret` (no API calls are made).
fn gateway_with_secret(secret: &str) -> MyFatoorahGateway {
    MyFatoorahGateway::new(MyFatoorahConfig::new(
        "token",
        secret,
        currency("KWD"),
        "https://billing.example.test",
    ))
    .expect("valid configuration")
}

async fn verify(
    secret: &str,
    notification: &Notification,
) -> Result<VerifiedNotification, GatewayError> {
    gateway_with_secret(secret)
        .verify_notification(notification, NOW)
        .await
}

fn signed(body: &[u8], signature: &str, version: Option<&str>) -> Notification {
    let mut headers = vec![
        ("content-type", "application/json"),
        ("myfatoorah-signature", signature),
    ];
    if let Some(version) = version {
        headers.push(("myfatoorah-webhook-version", version));
    }
    raw_notification(&headers, body)
}

fn examples() -> Value {
    fixture("webhook_signature_examples.json")
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is a string"))
}

fn is_bad_signature<T: std::fmt::Debug>(result: &Result<T, GatewayError>) -> bool {
    matches!(result, Err(GatewayError::BadSignature(_)))
}

#[tokio::test]
async fn every_v1_library_vector_is_accepted() {
    let examples = examples();
    let vectors = examples["source_vectors_v1"]
        .as_array()
        .expect("source_vectors_v1 is a list");
    assert_eq!(vectors.len(), 2);
    for vector in vectors {
        let name = str_of(vector, "name");
        let body = serde_json::to_vec(&vector["body"]).expect("serializes");
        let data = vector["body"]["Data"].as_object().expect("Data object");
        assert_eq!(
            webhook::v1_signing_string(data, &[]).as_deref(),
            Some(str_of(vector, "signing_string")),
            "{name}"
        );
        let secret = str_of(vector, "secret");
        let signature = str_of(vector, "expected_signature");
        assert_eq!(
            webhook::sign(secret, str_of(vector, "signing_string")),
            signature
        );

        for version in [Some("v1"), Some("V1"), None] {
            let result = verify(secret, &signed(&body, signature, version)).await;
            match vector["body"]["EventType"].as_u64() {
                // TransactionsStatusChanged: accepted and read.
                Some(1) => {
                    let verified = result.unwrap_or_else(|e| panic!("{name}: {e}"));
                    assert_eq!(verified.payment_ref.as_deref(), Some("994285"));
                    assert_eq!(verified.topup_id, Some(TopUpId::new("139")));
                    assert_eq!(verified.event_id, "v1:994285:100202125611400734:FAILED");
                }
                // BalanceTransferred: the signature passes, and the event is not ours to act on.
                _ => assert!(
                    matches!(result, Err(GatewayError::Malformed(_))),
                    "{name}: {result:?}"
                ),
            }
        }
        assert!(
            is_bad_signature(
                &verify("another-secret", &signed(&body, signature, Some("v1"))).await
            ),
            "{name} with another secret"
        );
    }
}

#[tokio::test]
async fn the_computed_v2_vector_is_accepted() {
    let examples = examples();
    let vector = examples["computed_here"]
        .as_array()
        .and_then(|v| v.iter().find(|e| e["version"] == "V2"))
        .expect("a V2 vector");
    let body = fixture_bytes(str_of(vector, "body_file"));
    let parsed: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(
        webhook::v2_signing_string("1", parsed["Data"].as_object().expect("Data")).as_deref(),
        Some(str_of(vector, "signing_string"))
    );
    let signature = str_of(vector, "signature");
    let secret = str_of(vector, "secret");
    for version in [Some("v2"), None] {
        let verified = verify(secret, &signed(&body, signature, version))
            .await
            .expect("the V2 vector verifies");
        assert_eq!(
            verified,
            VerifiedNotification {
                event_id: "v2:6409988:07076409988323998875:SUCCESS:PAID".to_owned(),
                topup_id: None,
                payment_ref: Some("6409988".to_owned()),
            }
        );
    }
}

#[tokio::test]
async fn the_computed_v1_vector_is_accepted() {
    let examples = examples();
    let vector = examples["computed_here"]
        .as_array()
        .and_then(|v| v.iter().find(|e| e["version"] == "V1"))
        .expect("a V1 vector");
    let item = fixture("webhook_v1_transactions_status_changed_getwebhooks_item.json");
    // The GetWebhooks log item holds the Data; a real V1 body wraps it.
    let body = json!({
        "EventType": 1,
        "Event": "TransactionsStatusChanged",
        "DateTime": "12022025154216",
        "CountryIsoCode": "KWT",
        "Data": item["Data"],
    });
    assert_eq!(
        webhook::v1_signing_string(body["Data"].as_object().expect("Data"), &[]).as_deref(),
        Some(str_of(vector, "signing_string"))
    );
    let body = serde_json::to_vec(&body).expect("serializes");
    let verified = verify(
        str_of(vector, "secret"),
        &signed(&body, str_of(vector, "signature"), Some("v1")),
    )
    .await
    .expect("the V1 vector verifies");
    assert_eq!(verified.payment_ref.as_deref(), Some("5131277"));
    assert_eq!(
        verified.topup_id,
        Some(TopUpId::new("rLVgyA7C6v19bHwpXEIDrA5wW"))
    );
    // The log item's own signature was made with MyFatoorah's unknown secret.
    let logged = str_of(&item, "Signature");
    assert!(is_bad_signature(
        &verify(SECRET, &signed(&body, logged, Some("v1"))).await
    ));
}

#[tokio::test]
async fn tampered_bodies_are_rejected() {
    let examples = examples();
    // V1 library vector 3, with its FAILED payment turned into a SUCCESS.
    let vector = &examples["source_vectors_v1"][1];
    let original = serde_json::to_vec(&vector["body"]).expect("serializes");
    let text = String::from_utf8(original.clone()).expect("UTF-8");
    assert!(text.contains("\"FAILED\""));
    let forged = text.replace("\"FAILED\"", "\"SUCCESS\"");
    let (secret, signature) = (
        str_of(vector, "secret"),
        str_of(vector, "expected_signature"),
    );
    assert!(
        verify(secret, &signed(&original, signature, Some("v1")))
            .await
            .is_ok()
    );
    assert!(is_bad_signature(
        &verify(secret, &signed(forged.as_bytes(), signature, Some("v1"))).await
    ));

    // The V2 sample, pointed at another invoice.
    let body = fixture_bytes("webhook_v2_payment_status_changed.json");
    let forged = String::from_utf8(body)
        .expect("UTF-8")
        .replace("\"Id\": \"6409988\"", "\"Id\": \"6409989\"");
    assert!(forged.contains("6409989"));
    let signature = "c+rTI8/6pMWYrglboAwcjU1TBhP8teF7UycJl98xmkw=";
    assert!(is_bad_signature(
        &verify(SECRET, &signed(forged.as_bytes(), signature, Some("v2"))).await
    ));
}

#[tokio::test]
async fn unsigned_and_unreadable_notifications_are_rejected() {
    let body = fixture_bytes("webhook_v2_payment_status_changed.json");
    let signature = "c+rTI8/6pMWYrglboAwcjU1TBhP8teF7UycJl98xmkw=";
    let cases: Vec<(&str, Notification)> = vec![
        ("no header", raw_notification(&[], &body)),
        ("empty header", signed(&body, "  ", Some("v2"))),
        ("not base64", signed(&body, "%%%not-base64%%%", Some("v2"))),
        (
            "wrong signature",
            signed(
                &body,
                "uRBOogk9ek7Hgsxs/Rt7Nvbu7Vxf+4eI5gwvbtg0NCw=",
                Some("v2"),
            ),
        ),
        (
            "truncated signature",
            signed(&body, "c+rTI8/6pMWYrglb", Some("v2")),
        ),
        (
            "version header contradicts the body",
            signed(&body, signature, Some("v1")),
        ),
        (
            "unknown version header",
            signed(&body, signature, Some("v3")),
        ),
        (
            "not JSON",
            signed(b"InvoiceId=6409988", signature, Some("v2")),
        ),
        ("not an object", signed(b"[1,2]", signature, None)),
        ("empty body", signed(b"", signature, None)),
        (
            "no webhook shape",
            signed(b"{\"Invoice\":{\"Id\":\"1\"}}", signature, None),
        ),
    ];
    for (name, notification) in cases {
        let result = verify(SECRET, &notification).await;
        assert!(is_bad_signature(&result), "{name}: {result:?}");
    }
    // The header is found whatever its case.
    let upper = raw_notification(
        &[(SIGNATURE_HEADER, signature), (VERSION_HEADER, "V2")],
        &body,
    );
    assert!(verify(SECRET, &upper).await.is_ok());
}

#[tokio::test]
async fn a_v2_event_code_without_a_field_list_is_rejected() {
    let body = json!({
        "Event": {"Code": 99, "Name": "SOMETHING_NEW", "Reference": "WH-1"},
        "Data": {"Invoice": {"Id": "1"}}
    });
    let body = serde_json::to_vec(&body).expect("serializes");
    let signature = webhook::sign(SECRET, "");
    assert!(is_bad_signature(
        &verify(SECRET, &signed(&body, &signature, None)).await
    ));
}

#[tokio::test]
async fn a_signed_refund_event_is_not_acted_on() {
    let data = json!({"Refund": {"Id": "R1", "Status": "REFUNDED"}, "Amount": {"ValueInBaseCurrency": "1.000"}, "ReferencedInvoice": {"Id": "6409988"}});
    let string =
        webhook::v2_signing_string("2", data.as_object().expect("object")).expect("code 2");
    assert_eq!(
        string,
        "Refund.Id=R1,Refund.Status=REFUNDED,Amount.ValueInBaseCurrency=1.000,ReferencedInvoice.Id=6409988"
    );
    let body = serde_json::to_vec(&json!({
        "Event": {"Code": 2, "Name": "REFUND_STATUS_CHANGED", "Reference": "WH-2"},
        "Data": data,
    }))
    .expect("serializes");
    let result = verify(
        SECRET,
        &signed(&body, &webhook::sign(SECRET, &string), Some("v2")),
    )
    .await;
    assert!(
        matches!(result, Err(GatewayError::Malformed(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn webhooks_signed_by_the_fake_are_accepted_and_forgeries_rejected() {
    let fake = FakeMyFatoorah::start().await;
    let gateway = gateway(&fake);
    let checkout = gateway
        .create_checkout(&checkout_request("topup_000001", money("12.500", "KWD")))
        .await
        .expect("checkout");
    let id = invoice_id(&checkout.payment_ref);
    assert!(fake.mark_paid(id));

    let v1 = fake
        .webhook(id, WebhookVersion::V1, SECRET)
        .expect("invoice exists");
    let verified = gateway
        .verify_notification(&notification(&v1), NOW)
        .await
        .expect("V1 verifies");
    assert_eq!(
        verified.payment_ref.as_deref(),
        Some(checkout.payment_ref.as_str())
    );
    assert_eq!(verified.topup_id, Some(TopUpId::new("topup_000001")));
    assert!(
        verified.event_id.starts_with(&format!("v1:{id}:")),
        "{}",
        verified.event_id
    );

    let v2 = fake
        .webhook(id, WebhookVersion::V2, SECRET)
        .expect("invoice exists");
    let verified_v2 = gateway
        .verify_notification(&notification(&v2), NOW)
        .await
        .expect("V2 verifies");
    assert_eq!(
        verified_v2.payment_ref.as_deref(),
        Some(checkout.payment_ref.as_str())
    );
    assert_eq!(verified_v2.topup_id, None);
    assert!(
        verified_v2
            .event_id
            .starts_with(&format!("v2:{}:", checkout.payment_ref)),
        "{}",
        verified_v2.event_id
    );

    // The same delivery twice has the same event id, and so has another announcement of the
    // same signed state: the id is built from signed fields only.
    let again = gateway
        .verify_notification(&notification(&v2), NOW)
        .await
        .expect("V2 verifies");
    assert_eq!(again.event_id, verified_v2.event_id);
    let next = fake
        .webhook(id, WebhookVersion::V2, SECRET)
        .expect("invoice exists");
    let next = gateway
        .verify_notification(&notification(&next), NOW)
        .await
        .expect("V2 verifies");
    assert_eq!(next.event_id, verified_v2.event_id);
    // `Event.Reference` is not signed: editing it keeps the signature valid, and must not
    // change the id (else a replay could mark a future event as seen).
    let mut edited = v2.clone();
    let mut body: serde_json::Value = serde_json::from_slice(&edited.body).expect("json");
    body["Event"]["Reference"] = serde_json::json!("WH-999999");
    edited.body = serde_json::to_vec(&body).expect("json");
    let replayed = gateway
        .verify_notification(&notification(&edited), NOW)
        .await
        .expect("still validly signed");
    assert_eq!(replayed.event_id, verified_v2.event_id);

    for version in [WebhookVersion::V1, WebhookVersion::V2] {
        let forged = fake
            .tampered_webhook(id, version, SECRET)
            .expect("invoice exists");
        assert!(
            is_bad_signature(
                &gateway
                    .verify_notification(&notification(&forged), NOW)
                    .await
            ),
            "tampered {version:?}"
        );
        let other_secret = fake
            .webhook(id, version, "not-our-secret")
            .expect("invoice exists");
        assert!(
            is_bad_signature(
                &gateway
                    .verify_notification(&notification(&other_secret), NOW)
                    .await
            ),
            "other secret {version:?}"
        );
        let unsigned = fake
            .webhook(id, version, SECRET)
            .expect("invoice exists")
            .without_header("MyFatoorah-Signature");
        assert!(
            is_bad_signature(
                &gateway
                    .verify_notification(&notification(&unsigned), NOW)
                    .await
            ),
            "unsigned {version:?}"
        );
    }
}

#[tokio::test]
async fn a_webhook_delivered_over_http_verifies() {
    let fake = FakeMyFatoorah::start().await;
    let gateway = gateway(&fake);
    let checkout = gateway
        .create_checkout(&checkout_request("topup_000001", money("3", "KWD")))
        .await
        .expect("checkout");
    let id = invoice_id(&checkout.payment_ref);
    assert!(fake.mark_paid(id));
    for version in [WebhookVersion::V1, WebhookVersion::V2] {
        let status = fake
            .deliver_webhook(&fake.webhook_sink_url(), id, version, SECRET)
            .await
            .expect("delivered");
        assert_eq!(status, 200);
    }
    let received = fake.received_webhooks();
    assert_eq!(received.len(), 2);
    for webhook in &received {
        assert!(webhook.header("myfatoorah-signature").is_some());
        let verified = gateway
            .verify_notification(&notification(webhook), NOW)
            .await
            .expect("verifies after the trip");
        assert_eq!(
            verified.payment_ref.as_deref(),
            Some(checkout.payment_ref.as_str())
        );
    }
}

#[test]
fn the_fake_signs_like_the_fixtures() {
    let examples = examples();
    for vector in examples["source_vectors_v1"].as_array().expect("list") {
        let data = vector["body"]["Data"].as_object().expect("Data");
        let string = fake_mf::v1_signing_string(data).expect("flat");
        assert_eq!(string, str_of(vector, "signing_string"));
        assert_eq!(
            fake_mf::sign(str_of(vector, "secret"), &string),
            str_of(vector, "expected_signature")
        );
    }
    let v2 = fixture("webhook_v2_payment_status_changed.json");
    let string = fake_mf::v2_signing_string(v2["Data"].as_object().expect("Data")).expect("flat");
    assert_eq!(
        fake_mf::sign(SECRET, &string),
        "c+rTI8/6pMWYrglboAwcjU1TBhP8teF7UycJl98xmkw="
    );
}
