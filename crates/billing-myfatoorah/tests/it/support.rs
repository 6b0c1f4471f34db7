//! Builders shared by the tests.

use std::path::PathBuf;
use std::time::Duration;

use billing_core::Decimal;
use billing_core::ids::{AccountId, TopUpId};
use billing_core::money::{Credits, Currency, Money};
use billing_core::ports::{CheckoutRequest, Notification};
use billing_core::time::Timestamp;
use billing_core::topup::{TopUp, TopUpStatus};
use billing_myfatoorah::{MyFatoorahConfig, MyFatoorahGateway};
use billing_testkit::fake_myfatoorah::{FAKE_TOKEN, FakeMyFatoorah, FakeWebhook};
use serde_json::Value;

/// The webhook secret of the adapter under test (and of the fixtures' computed vectors).
pub const SECRET: &str = "test-webhook-secret";
/// Public URL of the service under test.
pub const PUBLIC_URL: &str = "https://billing.example.test";

pub fn currency(code: &str) -> Currency {
    Currency::from_code(code).expect("known currency")
}

pub fn money(amount: &str, code: &str) -> Money {
    Money::new(
        Decimal::from_str_exact(amount).expect("decimal"),
        currency(code),
    )
    .expect("money")
}

pub fn config(api_base: &str, code: &str) -> MyFatoorahConfig {
    let mut config = MyFatoorahConfig::new(FAKE_TOKEN, SECRET, currency(code), PUBLIC_URL);
    config.api_base = api_base.to_owned();
    config.timeout = Duration::from_secs(5);
    config
}

/// The adapter pointed at the fake, in KWD.
pub fn gateway(fake: &FakeMyFatoorah) -> MyFatoorahGateway {
    MyFatoorahGateway::new(config(&fake.base_url(), "KWD")).expect("valid configuration")
}

pub fn checkout_request(topup_id: &str, price: Money) -> CheckoutRequest {
    CheckoutRequest {
        topup_id: TopUpId::new(topup_id),
        account_id: AccountId::new("acct_000001"),
        price,
        description: "Credit top-up".to_owned(),
        customer_email: "customer@example.test".to_owned(),
        save_payment_method: false,
    }
}

/// A pending top-up whose checkout is the invoice `payment_ref`.
pub fn topup(id: &str, payment_ref: Option<&str>, price: Money) -> TopUp {
    let now = Timestamp::from_secs(1_768_473_000);
    TopUp {
        id: TopUpId::new(id),
        account_id: AccountId::new("acct_000001"),
        pack_id: None,
        pack_name: None,
        price,
        credits: Credits::new(price.amount()).expect("credits"),
        bonus: Credits::ZERO,
        status: TopUpStatus::Pending,
        gateway: "myfatoorah".to_owned(),
        payment_ref: payment_ref.map(str::to_owned),
        checkout_url: None,
        failure_reason: None,
        created_at: now,
        updated_at: now,
    }
}

/// A notification as the HTTP shell would hand it to the core.
pub fn notification(webhook: &FakeWebhook) -> Notification {
    Notification {
        headers: webhook
            .headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .collect(),
        body: webhook.body.clone(),
    }
}

/// A notification from raw parts.
pub fn raw_notification(headers: &[(&str, &str)], body: &[u8]) -> Notification {
    Notification {
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), (*v).to_owned()))
            .collect(),
        body: body.to_vec(),
    }
}

/// `fixtures/myfatoorah/` of the repository (MyFatoorah's documented payloads and signature
/// vectors; see `fixtures/myfatoorah/README.md`).
pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/myfatoorah")
        .join(name)
}

pub fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = fixture_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading fixture {}: {e}", path.display()))
}

pub fn fixture(name: &str) -> Value {
    serde_json::from_slice(&fixture_bytes(name)).expect("fixtures are valid JSON")
}

/// The invoice id a checkout answered, as the fake's key.
pub fn invoice_id(payment_ref: &str) -> u64 {
    payment_ref.parse().expect("invoice ids are numbers")
}
