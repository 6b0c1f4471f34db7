//! An in-process sandbox gateway, for programs that embed `billing-core` and for their
//! tests: a checkout is paid with one call ([`InstantSandbox::pay`]), which answers the
//! notification the gateway would send. No HTTP and no money; `billing-http`'s sandbox is
//! the one with a checkout page.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use billing_core::ids::TopUpId;
use billing_core::money::Money;
use billing_core::ports::{
    Checkout, CheckoutRequest, GatewayError, Notification, PaymentGateway, PaymentStatus,
    VerifiedNotification,
};
use billing_core::time::Timestamp;
use billing_core::topup::TopUp;

/// The header that carries the sandbox's token (its stand-in for a signature).
pub const TOKEN_HEADER: &str = "x-instant-sandbox-token";

/// A payment the sandbox knows: its top-up, its price, and whether it was paid.
#[derive(Debug, Clone)]
struct Payment {
    topup_id: TopUpId,
    price: Money,
    paid: bool,
}

/// A payment gateway named `sandbox` that pays when told to.
///
/// ```
/// use billing_core::ports::PaymentGateway;
/// use billing_testkit::InstantSandbox;
///
/// let sandbox = InstantSandbox::new("a-token-only-this-sandbox-knows");
/// assert_eq!(sandbox.name(), "sandbox");
/// ```
#[derive(Debug)]
pub struct InstantSandbox {
    token: String,
    /// By payment reference.
    payments: Mutex<HashMap<String, Payment>>,
}

impl InstantSandbox {
    /// A sandbox whose notifications carry `token`; a notification without it is refused
    /// as a bad signature.
    pub fn new(token: &str) -> InstantSandbox {
        InstantSandbox {
            token: token.to_owned(),
            payments: Mutex::new(HashMap::new()),
        }
    }

    /// Pays the checkout of `topup_id` and answers the notification the gateway sends about
    /// it (give it to `Billing::handle_notification("sandbox", …)`); `None` when no
    /// checkout was created for that top-up.
    pub fn pay(&self, topup_id: &TopUpId) -> Option<Notification> {
        let mut payments = self.payments.lock().ok()?;
        let (payment_ref, payment) = payments.iter_mut().find(|(_, p)| &p.topup_id == topup_id)?;
        payment.paid = true;
        Some(Notification {
            headers: vec![(TOKEN_HEADER.to_owned(), self.token.clone())],
            body: format!("evt_{payment_ref}\n{topup_id}\n{payment_ref}").into_bytes(),
        })
    }
}

#[async_trait]
impl PaymentGateway for InstantSandbox {
    fn name(&self) -> &str {
        "sandbox"
    }

    async fn create_checkout(&self, request: &CheckoutRequest) -> Result<Checkout, GatewayError> {
        let payment_ref = format!("isbx_{}", request.topup_id);
        let mut payments = self
            .payments
            .lock()
            .map_err(|_| GatewayError::Transient("sandbox state poisoned".into()))?;
        // Idempotent per top-up: a retry finds the same payment.
        payments.entry(payment_ref.clone()).or_insert(Payment {
            topup_id: request.topup_id.clone(),
            price: request.price,
            paid: false,
        });
        Ok(Checkout {
            checkout_url: format!("sandbox://pay/{payment_ref}"),
            payment_ref,
        })
    }

    async fn verify_notification(
        &self,
        notification: &Notification,
        _now: Timestamp,
    ) -> Result<VerifiedNotification, GatewayError> {
        if notification.header(TOKEN_HEADER) != Some(self.token.as_str()) {
            return Err(GatewayError::BadSignature("no sandbox token".into()));
        }
        let body = String::from_utf8_lossy(&notification.body);
        let mut lines = body.lines();
        match (lines.next(), lines.next(), lines.next()) {
            (Some(event), Some(topup), Some(payment_ref)) => Ok(VerifiedNotification {
                event_id: event.to_owned(),
                topup_id: Some(TopUpId::new(topup.to_owned())),
                payment_ref: Some(payment_ref.to_owned()),
            }),
            _ => Err(GatewayError::Malformed("not a sandbox notification".into())),
        }
    }

    async fn payment_status(&self, topup: &TopUp) -> Result<PaymentStatus, GatewayError> {
        let payments = self
            .payments
            .lock()
            .map_err(|_| GatewayError::Transient("sandbox state poisoned".into()))?;
        let payment = topup.payment_ref.as_ref().and_then(|r| payments.get(r));
        Ok(match payment {
            Some(p) if p.paid => PaymentStatus::Paid { amount: p.price },
            _ => PaymentStatus::Pending,
        })
    }
}
