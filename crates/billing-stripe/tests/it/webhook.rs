//! `verify_notification`: the signature first, then what the event is about.

use billing_core::ids::TopUpId;
use billing_core::ports::{GatewayError, Notification, PaymentGateway, VerifiedNotification};
use billing_core::time::Timestamp;
use billing_stripe::StripeGateway;
use billing_testkit::fake_stripe::{SignedEvent, sign_event, stripe_signature};
use serde_json::json;

use crate::{OLD_WEBHOOK_SECRET, WEBHOOK_SECRET, config, created, harness, money};

const NOW: i64 = 1_768_473_000;

fn now() -> Timestamp {
    Timestamp::from_secs(NOW)
}

fn notification(event: &SignedEvent) -> Notification {
    Notification {
        headers: event.headers(),
        body: event.body.clone(),
    }
}

fn with_signature(body: &[u8], signature: &str) -> Notification {
    Notification {
        headers: vec![("stripe-signature".to_owned(), signature.to_owned())],
        body: body.to_vec(),
    }
}

fn is_bad_signature(result: &Result<VerifiedNotification, GatewayError>) -> bool {
    matches!(result, Err(GatewayError::BadSignature(_)))
}

#[tokio::test]
async fn the_four_checkout_events_name_the_session_and_the_topup() {
    let h = harness().await;
    let (_, checkout, _) = created(&h, "topup_evt", money("25.00", "USD"), false).await;
    h.fake.complete_paid(&checkout.payment_ref);
    for event_type in [
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
        "checkout.session.expired",
    ] {
        let event = h
            .fake
            .event(event_type, &checkout.payment_ref, WEBHOOK_SECRET, NOW);
        let verified = h
            .gateway
            .verify_notification(&notification(&event), now())
            .await;
        assert_eq!(
            verified,
            Ok(VerifiedNotification {
                event_id: event.id.clone(),
                topup_id: Some(TopUpId::new("topup_evt")),
                payment_ref: Some(checkout.payment_ref.clone()),
            }),
            "{event_type}"
        );
    }
}

#[tokio::test]
async fn other_event_types_are_about_nothing() {
    let h = harness().await;
    let (_, checkout, _) = created(&h, "topup_other", money("25.00", "USD"), false).await;
    let fixture_object: serde_json::Value =
        serde_json::from_str(include_str!("../../../../fixtures/stripe/event.json"))
            .expect("fixture");
    for event in [
        sign_event(
            "plan.created",
            fixture_object["data"]["object"].clone(),
            &[WEBHOOK_SECRET],
            NOW,
        ),
        sign_event(
            "payment_intent.created",
            json!({ "id": "pi_123", "object": "payment_intent", "metadata": { "topup_id": "topup_other" } }),
            &[WEBHOOK_SECRET],
            NOW,
        ),
        h.fake.event(
            "checkout.session.async_payment_expired_maybe",
            &checkout.payment_ref,
            WEBHOOK_SECRET,
            NOW,
        ),
    ] {
        let verified = h
            .gateway
            .verify_notification(&notification(&event), now())
            .await;
        assert_eq!(
            verified,
            Ok(VerifiedNotification {
                event_id: event.id.clone(),
                topup_id: None,
                payment_ref: None,
            })
        );
    }
    // An off-session charge's outcome names its PaymentIntent and top-up (auto top-up).
    for kind in ["payment_intent.succeeded", "payment_intent.payment_failed"] {
        let event = sign_event(
            kind,
            json!({ "id": "pi_123", "object": "payment_intent", "metadata": { "topup_id": "topup_auto_txn_1" } }),
            &[WEBHOOK_SECRET],
            NOW,
        );
        let verified = h
            .gateway
            .verify_notification(&notification(&event), now())
            .await
            .expect("verified");
        assert_eq!(verified.payment_ref.as_deref(), Some("pi_123"));
        assert_eq!(
            verified.topup_id.map(|t| t.to_string()).as_deref(),
            Some("topup_auto_txn_1")
        );
    }
}

#[tokio::test]
async fn the_topup_id_falls_back_to_metadata() {
    let h = harness().await;
    let (_, checkout, _) = created(&h, "topup_meta", money("25.00", "USD"), false).await;
    h.fake.patch_session(&checkout.payment_ref, |s| {
        s["client_reference_id"] = json!(null)
    });
    let event = h.fake.event(
        "checkout.session.completed",
        &checkout.payment_ref,
        WEBHOOK_SECRET,
        NOW,
    );
    let verified = h
        .gateway
        .verify_notification(&notification(&event), now())
        .await
        .expect("verified");
    assert_eq!(verified.topup_id, Some(TopUpId::new("topup_meta")));
}

#[tokio::test]
async fn any_configured_secret_verifies_during_a_roll() {
    let h = harness().await;
    let (_, checkout, _) = created(&h, "topup_roll", money("25.00", "USD"), false).await;
    let gateway = StripeGateway::new(config(
        h.fake.base_url(),
        &[OLD_WEBHOOK_SECRET, WEBHOOK_SECRET],
    ))
    .expect("valid config");
    for secret in [OLD_WEBHOOK_SECRET, WEBHOOK_SECRET] {
        let event = h.fake.event(
            "checkout.session.completed",
            &checkout.payment_ref,
            secret,
            NOW,
        );
        assert!(
            gateway
                .verify_notification(&notification(&event), now())
                .await
                .is_ok(),
            "{secret}"
        );
    }
    let unknown = h.fake.event(
        "checkout.session.completed",
        &checkout.payment_ref,
        "whsec_someone_else",
        NOW,
    );
    assert!(is_bad_signature(
        &gateway
            .verify_notification(&notification(&unknown), now())
            .await
    ));
}

#[tokio::test]
async fn one_matching_v1_among_several_is_enough() {
    let h = harness().await;
    let (_, checkout, _) = created(&h, "topup_multi", money("25.00", "USD"), false).await;
    let object = h.fake.session(&checkout.payment_ref).expect("session");
    let event = sign_event(
        "checkout.session.completed",
        object,
        &["whsec_old_one", WEBHOOK_SECRET, "whsec_other"],
        NOW,
    );
    assert_eq!(event.signature.matches("v1=").count(), 3);
    assert!(
        h.gateway
            .verify_notification(&notification(&event), now())
            .await
            .is_ok()
    );
    // v0 and unknown schemes, and a garbled v1, are skipped.
    let header = format!(
        "t={NOW},v0=00ff,v1=nothex,{}",
        stripe_signature(&[WEBHOOK_SECRET], NOW, &event.body)
            .split_once(',')
            .expect("t and v1")
            .1
    );
    assert!(
        h.gateway
            .verify_notification(&with_signature(&event.body, &header), now())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn wrong_secret_tampered_body_and_missing_header_are_refused() {
    let h = harness().await;
    let (_, checkout, _) = created(&h, "topup_bad", money("25.00", "USD"), false).await;
    let good = h.fake.event(
        "checkout.session.completed",
        &checkout.payment_ref,
        WEBHOOK_SECRET,
        NOW,
    );

    let wrong = h.fake.event(
        "checkout.session.completed",
        &checkout.payment_ref,
        "whsec_wrong",
        NOW,
    );
    assert!(is_bad_signature(
        &h.gateway
            .verify_notification(&notification(&wrong), now())
            .await
    ));

    let tampered = good.clone().tampered();
    assert_ne!(tampered.body, good.body);
    assert!(is_bad_signature(
        &h.gateway
            .verify_notification(&notification(&tampered), now())
            .await
    ));

    let unsigned = Notification {
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        body: good.body.clone(),
    };
    assert!(is_bad_signature(
        &h.gateway.verify_notification(&unsigned, now()).await
    ));

    for garbled in ["", "t=abc,v1=00", "v1=00", "t=1768473000", "nonsense"] {
        assert!(
            is_bad_signature(
                &h.gateway
                    .verify_notification(&with_signature(&good.body, garbled), now())
                    .await
            ),
            "{garbled:?}"
        );
    }

    // A signature made for another timestamp does not verify under this one.
    let moved = good
        .signature
        .replacen(&format!("t={NOW}"), &format!("t={}", NOW + 1), 1);
    assert!(is_bad_signature(
        &h.gateway
            .verify_notification(&with_signature(&good.body, &moved), now())
            .await
    ));
}

#[tokio::test]
async fn the_window_is_300_seconds_of_the_cores_clock_either_way() {
    let h = harness().await;
    let (_, checkout, _) = created(&h, "topup_time", money("25.00", "USD"), false).await;
    for (offset, accepted) in [
        (0, true),
        (-300, true),
        (300, true),
        (-301, false),
        (301, false),
        (-86_400, false),
    ] {
        let event = h.fake.event(
            "checkout.session.completed",
            &checkout.payment_ref,
            WEBHOOK_SECRET,
            NOW + offset,
        );
        let result = h
            .gateway
            .verify_notification(&notification(&event), now())
            .await;
        assert_eq!(
            result.is_ok(),
            accepted,
            "timestamp now{offset:+}: {result:?}"
        );
        if !accepted {
            assert!(is_bad_signature(&result));
        }
    }
}

#[tokio::test]
async fn the_signature_is_checked_before_the_body_is_read() {
    let h = harness().await;
    let body = b"this is not json";
    let unsigned = with_signature(body, &stripe_signature(&["whsec_wrong"], NOW, body));
    assert!(is_bad_signature(
        &h.gateway.verify_notification(&unsigned, now()).await
    ));
    let signed = with_signature(body, &stripe_signature(&[WEBHOOK_SECRET], NOW, body));
    assert!(matches!(
        h.gateway.verify_notification(&signed, now()).await,
        Err(GatewayError::Malformed(_))
    ));
}

/// serde_json's `arbitrary_precision` (on workspace-wide) changes how numbers are held; an
/// event with numbers no f64 holds still reads.
#[tokio::test]
async fn events_parse_with_arbitrary_precision_numbers() {
    let h = harness().await;
    let (_, checkout, _) = created(&h, "topup_bignum", money("25.00", "USD"), false).await;
    let mut object = h.fake.session(&checkout.payment_ref).expect("session");
    object["amount_total"] = serde_json::from_str("123456789012345678901234567890").expect("big");
    object["currency_conversion"] = json!({ "fx_rate": 1.000000000000000000001 });
    let event = sign_event("checkout.session.completed", object, &[WEBHOOK_SECRET], NOW);
    assert!(String::from_utf8_lossy(&event.body).contains("123456789012345678901234567890"));
    let verified = h
        .gateway
        .verify_notification(&notification(&event), now())
        .await
        .expect("verified");
    assert_eq!(
        verified.payment_ref.as_deref(),
        Some(checkout.payment_ref.as_str())
    );
}

/// A webhook endpoint shaped like the HTTP shell's: headers in lower case and the raw body
/// handed to `verify_notification` with the clock's time.
mod over_http {
    use std::sync::Arc;

    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    use billing_core::ports::{Notification, PaymentGateway};
    use billing_core::time::Timestamp;
    use billing_stripe::StripeGateway;
    use billing_testkit::fake_stripe::deliver;

    use crate::{WEBHOOK_SECRET, config, created, harness, money, unix_now};

    async fn receive(
        request: HttpRequest,
        body: web::Bytes,
        gateway: web::Data<StripeGateway>,
    ) -> HttpResponse {
        let notification = Notification {
            headers: request
                .headers()
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        v.to_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect(),
            body: body.to_vec(),
        };
        let now = Timestamp::from_secs(unix_now());
        match gateway.verify_notification(&notification, now).await {
            Ok(verified) => HttpResponse::Ok().body(verified.event_id),
            Err(e) => HttpResponse::BadRequest().body(e.to_string()),
        }
    }

    async fn endpoint(gateway: StripeGateway) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!(
            "http://{}/webhooks/stripe",
            listener.local_addr().expect("addr")
        );
        let gateway = web::Data::from(Arc::new(gateway));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(gateway.clone())
                .route("/webhooks/stripe", web::post().to(receive))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        tokio::spawn(server);
        url
    }

    #[tokio::test]
    async fn delivered_events_verify_and_tampered_or_stale_ones_do_not() {
        let h = harness().await;
        let (_, checkout, _) = created(&h, "topup_http", money("25.00", "USD"), false).await;
        h.fake.complete_paid(&checkout.payment_ref);
        let receiver =
            StripeGateway::new(config(h.fake.base_url(), &[WEBHOOK_SECRET])).expect("valid config");
        let url = endpoint(receiver).await;

        let delivered = h
            .fake
            .deliver_event(
                &url,
                "checkout.session.completed",
                &checkout.payment_ref,
                WEBHOOK_SECRET,
                unix_now(),
            )
            .await
            .expect("delivered");
        assert_eq!(delivered.status, 200, "{}", delivered.body);
        assert!(delivered.body.starts_with("evt_"), "{}", delivered.body);

        let event = h.fake.event(
            "checkout.session.completed",
            &checkout.payment_ref,
            WEBHOOK_SECRET,
            unix_now(),
        );
        let tampered = deliver(&url, &event.tampered()).await.expect("delivered");
        assert_eq!(tampered.status, 400);
        assert!(tampered.body.contains("signature"), "{}", tampered.body);

        let stale = h
            .fake
            .deliver_event(
                &url,
                "checkout.session.completed",
                &checkout.payment_ref,
                WEBHOOK_SECRET,
                unix_now() - 301,
            )
            .await
            .expect("delivered");
        assert_eq!(stale.status, 400);
    }
}
