//! Integration tests: the adapter against the local fake Stripe over real HTTP
//! (`billing_testkit::fake_stripe`). Nothing here reaches the internet.

mod checkout;
mod end_to_end;
mod off_session;
mod status;
mod webhook;

use billing_core::Decimal;
use billing_core::ids::{AccountId, TopUpId};
use billing_core::money::{Credits, Currency, Money};
use billing_core::ports::{Checkout, CheckoutRequest};
use billing_core::time::Timestamp;
use billing_core::topup::{TopUp, TopUpStatus};
use billing_stripe::{StripeConfig, StripeGateway};
use billing_testkit::fake_stripe::FakeStripe;

pub const SECRET_KEY: &str = "sk_test_fake_0123456789";
pub const WEBHOOK_SECRET: &str = "whsec_test_primary";
pub const OLD_WEBHOOK_SECRET: &str = "whsec_test_rolled_out";
pub const PUBLIC_URL: &str = "https://billing.example.test";

pub struct Harness {
    pub fake: FakeStripe,
    pub gateway: StripeGateway,
}

pub fn config(api_base: &str, webhook_secrets: &[&str]) -> StripeConfig {
    StripeConfig {
        secret_key: SECRET_KEY.to_owned(),
        webhook_secrets: webhook_secrets.iter().map(|s| (*s).to_owned()).collect(),
        api_base: api_base.to_owned(),
        public_url: PUBLIC_URL.to_owned(),
    }
}

/// A fake Stripe and a gateway pointed at it, accepting [`WEBHOOK_SECRET`].
pub async fn harness() -> Harness {
    let fake = FakeStripe::start(SECRET_KEY)
        .await
        .expect("fake stripe starts");
    let gateway =
        StripeGateway::new(config(fake.base_url(), &[WEBHOOK_SECRET])).expect("valid config");
    Harness { fake, gateway }
}

pub fn money(amount: &str, currency: &str) -> Money {
    Money::new(
        Decimal::from_str_exact(amount).expect("test decimal"),
        Currency::from_code(currency).expect("known currency"),
    )
    .expect("valid money")
}

pub fn checkout_request(
    topup_id: &str,
    price: Money,
    save_payment_method: bool,
) -> CheckoutRequest {
    CheckoutRequest {
        topup_id: TopUpId::new(topup_id),
        account_id: AccountId::new("acct_000001"),
        price,
        description: "Pro Pack".to_owned(),
        customer_email: "ada@example.com".to_owned(),
        save_payment_method,
    }
}

/// The pending top-up the core would hold after `create_checkout` answered `checkout`.
pub fn pending_topup(request: &CheckoutRequest, checkout: &Checkout) -> TopUp {
    let now = Timestamp::from_secs(1_768_473_000);
    TopUp {
        id: request.topup_id.clone(),
        account_id: request.account_id.clone(),
        pack_id: None,
        pack_name: None,
        price: request.price,
        credits: Credits::from_units(25_000_000_000),
        bonus: Credits::ZERO,
        status: TopUpStatus::Pending,
        gateway: "stripe".to_owned(),
        payment_ref: Some(checkout.payment_ref.clone()),
        checkout_url: Some(checkout.checkout_url.clone()),
        failure_reason: None,
        created_at: now,
        updated_at: now,
    }
}

/// A checkout created through the adapter, and its top-up.
pub async fn created(
    h: &Harness,
    topup_id: &str,
    price: Money,
    save: bool,
) -> (CheckoutRequest, Checkout, TopUp) {
    use billing_core::ports::PaymentGateway;
    let request = checkout_request(topup_id, price, save);
    let checkout = h
        .gateway
        .create_checkout(&request)
        .await
        .expect("checkout created");
    let topup = pending_topup(&request, &checkout);
    (request, checkout, topup)
}

pub fn unix_now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs(),
    )
    .expect("fits")
}
