//! The sandbox payment gateway: the whole top-up flow locally, with no outside account.
//!
//! `create_checkout` answers a page served by this service (`/sandbox/checkout/{ref}`) that
//! shows what is being bought with two buttons, pay and decline. Posting that form records
//! the outcome and delivers a signed notification to `/webhooks/sandbox`, over HTTP, exactly
//! as a real gateway would; the normal webhook path then verifies it and asks the sandbox
//! for the payment's status before crediting.
//!
//! A checkout created with `save_payment_method` offers, beside pay and decline, to pay and
//! save a card that declines later: auto top-up's failure path runs locally. Off-session
//! charges of a saved card (`charge_saved`) are paid at once (or declined), counted, and
//! notified like checkouts; `GET /sandbox/charges` answers the counts.
//!
//! Signature: `Sandbox-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "t.body")>`,
//! 300 s tolerance (Stripe's scheme). Payment states live in this process's memory: the
//! sandbox is for development and tests, and a restart forgets pending sandbox payments
//! (their top-ups stay pending).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use actix_web::{HttpResponse, get, post, web};
use async_trait::async_trait;
use billing_core::autotopup::SavedMethod;
use billing_core::ids::TopUpId;
use billing_core::money::Money;
use billing_core::ports::{
    Checkout, CheckoutRequest, GatewayError, Notification, PaymentGateway, PaymentStatus,
    VerifiedNotification,
};
use billing_core::time::Timestamp;
use billing_core::topup::TopUp;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::AppState;
use crate::page::{escape, page};

/// Seconds a signature stays valid either side of now.
pub const SIGNATURE_TOLERANCE_SECS: i64 = 300;
/// Payments the sandbox remembers at most.
const PAYMENTS_MAX: usize = 100_000;
/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "sandbox-signature";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pending,
    Paid,
    Declined,
}

#[derive(Debug, Clone)]
struct Payment {
    topup_id: TopUpId,
    price: Money,
    description: String,
    outcome: Outcome,
    /// The customer agreed to save the card.
    save: bool,
    /// The card saved with the payment: `Some(true)` declines later.
    saved_declines: Option<bool>,
}

/// A saved sandbox card that declines every off-session charge.
const DECLINING_CARD: &str = "sbx_pm_declines_";
const GOOD_CARD: &str = "sbx_pm_";

/// The notification the sandbox delivers.
#[derive(Debug, Serialize, Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    payment_ref: String,
    topup_id: String,
    created: i64,
}

/// The sandbox gateway.
pub struct SandboxGateway {
    secret: Vec<u8>,
    public_url: String,
    webhook_target: OnceLock<String>,
    payments: Mutex<HashMap<String, Payment>>,
    client: reqwest::Client,
    /// Off-session charges made and declined.
    charges: Mutex<(u64, u64)>,
}

impl SandboxGateway {
    /// `public_url` is where customers reach this service (for the checkout page);
    /// `secret` signs notifications.
    pub fn new(public_url: &str, secret: Vec<u8>) -> SandboxGateway {
        SandboxGateway {
            secret,
            public_url: public_url.trim_end_matches('/').to_owned(),
            webhook_target: OnceLock::new(),
            payments: Mutex::new(HashMap::new()),
            charges: Mutex::new((0, 0)),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Where notifications are delivered: this service's own address as bound (e.g.
    /// `http://127.0.0.1:8080`). Falls back to the public URL when never set.
    pub fn set_webhook_target(&self, base_url: &str) {
        let _ = self.webhook_target.set(format!(
            "{}/webhooks/sandbox",
            base_url.trim_end_matches('/')
        ));
    }

    fn webhook_url(&self) -> String {
        self.webhook_target
            .get()
            .cloned()
            .unwrap_or_else(|| format!("{}/webhooks/sandbox", self.public_url))
    }

    /// The `Sandbox-Signature` value for `body` signed at `timestamp` (also used by tests to
    /// forge notifications with a wrong or stale signature).
    pub fn signature(&self, body: &[u8], timestamp: i64) -> String {
        format!(
            "t={timestamp},v1={}",
            hex::encode(self.mac(body, timestamp))
        )
    }

    fn mac(&self, body: &[u8], timestamp: i64) -> Vec<u8> {
        match Hmac::<Sha256>::new_from_slice(&self.secret) {
            Ok(mut mac) => {
                mac.update(timestamp.to_string().as_bytes());
                mac.update(b".");
                mac.update(body);
                mac.finalize().into_bytes().to_vec()
            }
            // HMAC takes keys of any length; this arm is unreachable.
            Err(_) => Vec::new(),
        }
    }

    fn verify(&self, header: &str, body: &[u8], now: Timestamp) -> Result<(), GatewayError> {
        let bad = |m: &str| GatewayError::BadSignature(m.to_owned());
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
                Some(("v1", v)) => signatures.push(v.to_owned()),
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or_else(|| bad("no timestamp"))?;
        if (now.as_secs() - timestamp).abs() > SIGNATURE_TOLERANCE_SECS {
            return Err(bad("timestamp outside the tolerance"));
        }
        let valid = signatures.iter().any(|candidate| {
            let Ok(candidate) = hex::decode(candidate) else {
                return false;
            };
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.secret) else {
                return false;
            };
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            mac.verify_slice(&candidate).is_ok()
        });
        if !valid {
            return Err(bad("no valid signature"));
        }
        Ok(())
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, Payment>>, GatewayError> {
        self.payments
            .lock()
            .map_err(|_| GatewayError::Transient("sandbox state poisoned".into()))
    }

    /// Off-session charges made and declined so far.
    pub fn charges(&self) -> (u64, u64) {
        self.charges.lock().map(|c| *c).unwrap_or((0, 0))
    }

    /// Records the customer's choice and delivers the signed notification. Returns whether
    /// the webhook endpoint accepted it. `declining_card`: save a card that declines later.
    async fn decide(
        &self,
        payment_ref: &str,
        paid: bool,
        declining_card: bool,
        now: Timestamp,
    ) -> Result<bool, GatewayError> {
        {
            let mut payments = self.lock()?;
            let payment = payments
                .get_mut(payment_ref)
                .ok_or_else(|| GatewayError::InvalidRequest("unknown payment".into()))?;
            if payment.outcome == Outcome::Pending {
                payment.outcome = if paid {
                    Outcome::Paid
                } else {
                    Outcome::Declined
                };
                if paid && payment.save {
                    payment.saved_declines = Some(declining_card);
                }
            }
        }
        self.notify(payment_ref, paid, now).await
    }

    /// Delivers the signed notification of a payment's outcome.
    async fn notify(
        &self,
        payment_ref: &str,
        paid: bool,
        now: Timestamp,
    ) -> Result<bool, GatewayError> {
        let topup_id = self
            .lock()?
            .get(payment_ref)
            .map(|p| p.topup_id.clone())
            .ok_or_else(|| GatewayError::InvalidRequest("unknown payment".into()))?;
        let event = Event {
            id: format!(
                "evt_sbx_{payment_ref}_{}",
                if paid { "paid" } else { "declined" }
            ),
            kind: if paid {
                "payment.succeeded".into()
            } else {
                "payment.failed".into()
            },
            payment_ref: payment_ref.to_owned(),
            topup_id: topup_id.to_string(),
            created: now.as_secs(),
        };
        let body = serde_json::to_vec(&event)
            .map_err(|e| GatewayError::Transient(format!("encode notification: {e}")))?;
        let response = self
            .client
            .post(self.webhook_url())
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, self.signature(&body, now.as_secs()))
            .body(body)
            .send()
            .await;
        match response {
            Ok(r) if r.status().is_success() => Ok(true),
            Ok(r) => {
                tracing::warn!(status = r.status().as_u16(), "sandbox notification refused");
                Ok(false)
            }
            Err(e) => {
                tracing::warn!(error = %e, "sandbox notification not delivered");
                Ok(false)
            }
        }
    }
}

#[async_trait]
impl PaymentGateway for SandboxGateway {
    fn name(&self) -> &str {
        "sandbox"
    }

    async fn create_checkout(&self, request: &CheckoutRequest) -> Result<Checkout, GatewayError> {
        let payment_ref = format!("sbx_{}", request.topup_id);
        let mut payments = self.lock()?;
        if payments.len() >= PAYMENTS_MAX && !payments.contains_key(&payment_ref) {
            return Err(GatewayError::Transient(
                "the sandbox holds too many payments; restart it".into(),
            ));
        }
        payments
            .entry(payment_ref.clone())
            .or_insert_with(|| Payment {
                topup_id: request.topup_id.clone(),
                price: request.price,
                description: request.description.clone(),
                outcome: Outcome::Pending,
                save: request.save_payment_method,
                saved_declines: None,
            });
        Ok(Checkout {
            checkout_url: format!("{}/sandbox/checkout/{payment_ref}", self.public_url),
            payment_ref,
        })
    }

    async fn verify_notification(
        &self,
        notification: &Notification,
        now: Timestamp,
    ) -> Result<VerifiedNotification, GatewayError> {
        let header = notification
            .header(SIGNATURE_HEADER)
            .ok_or_else(|| GatewayError::BadSignature("missing Sandbox-Signature".into()))?;
        self.verify(header, &notification.body, now)?;
        let event: Event = serde_json::from_slice(&notification.body)
            .map_err(|e| GatewayError::Malformed(e.to_string()))?;
        Ok(VerifiedNotification {
            event_id: event.id,
            topup_id: Some(TopUpId::new(event.topup_id)),
            payment_ref: Some(event.payment_ref),
        })
    }

    fn saves_payment_methods(&self) -> bool {
        true
    }

    async fn saved_method(&self, topup: &TopUp) -> Result<Option<SavedMethod>, GatewayError> {
        let Some(reference) = &topup.payment_ref else {
            return Ok(None);
        };
        let payments = self.lock()?;
        Ok(payments
            .get(reference)
            .filter(|p| p.topup_id == topup.id && p.outcome == Outcome::Paid)
            .and_then(|p| p.saved_declines)
            .map(|declines| SavedMethod {
                gateway: "sandbox".to_owned(),
                reference: format!(
                    "{}{}",
                    if declines { DECLINING_CARD } else { GOOD_CARD },
                    topup.id
                ),
                brand: Some("visa".to_owned()),
                last4: Some(if declines { "0341" } else { "4242" }.to_owned()),
                saved_at: topup.updated_at,
            }))
    }

    /// Pays at once, or declines with a declining card; idempotent per top-up (one charge
    /// per top-up id however often it is asked). The notification follows shortly after.
    async fn charge_saved(
        &self,
        method: &SavedMethod,
        topup: &TopUp,
    ) -> Result<String, GatewayError> {
        let counts = |paid: bool| {
            if let Ok(mut c) = self.charges.lock() {
                if paid {
                    c.0 += 1;
                } else {
                    c.1 += 1;
                }
            }
        };
        if method.reference.starts_with(DECLINING_CARD) {
            counts(false);
            return Err(GatewayError::Declined("card_declined".into()));
        }
        if !method.reference.starts_with(GOOD_CARD) {
            return Err(GatewayError::InvalidRequest("not a sandbox card".into()));
        }
        let payment_ref = format!("sbx_{}", topup.id);
        let new = {
            let mut payments = self.lock()?;
            let new = !payments.contains_key(&payment_ref);
            payments
                .entry(payment_ref.clone())
                .or_insert_with(|| Payment {
                    topup_id: topup.id.clone(),
                    price: topup.price,
                    description: "Auto top-up".to_owned(),
                    outcome: Outcome::Paid,
                    save: false,
                    saved_declines: None,
                });
            new
        };
        if new {
            counts(true);
        }
        Ok(payment_ref)
    }

    async fn payment_status(&self, topup: &TopUp) -> Result<PaymentStatus, GatewayError> {
        let Some(reference) = &topup.payment_ref else {
            return Ok(PaymentStatus::Pending);
        };
        let payments = self.lock()?;
        Ok(match payments.get(reference) {
            Some(p) if p.topup_id == topup.id => match p.outcome {
                Outcome::Paid => PaymentStatus::Paid { amount: p.price },
                Outcome::Declined => PaymentStatus::Failed {
                    reason: "declined in the sandbox".into(),
                },
                Outcome::Pending => PaymentStatus::Pending,
            },
            _ => PaymentStatus::Pending,
        })
    }
}

fn sandbox(state: &AppState) -> Option<&SandboxGateway> {
    state.sandbox.as_deref()
}

/// The sandbox's checkout page: what is being bought, pay or decline.
#[get("/sandbox/checkout/{payment_ref}")]
pub async fn checkout_page(state: web::Data<AppState>, path: web::Path<String>) -> HttpResponse {
    let Some(gateway) = sandbox(&state) else {
        return page(
            404,
            "Not found",
            "<p>The sandbox gateway is not enabled.</p>",
        );
    };
    let payment_ref = path.into_inner();
    let payment = gateway
        .lock()
        .ok()
        .and_then(|p| p.get(&payment_ref).cloned());
    let Some(payment) = payment else {
        return page(404, "Unknown payment", "<p>No such sandbox payment.</p>");
    };
    let save_choice = if payment.save && payment.outcome == Outcome::Pending {
        "<button class=\"pay\" name=\"outcome\" value=\"paid_card_declines_later\" type=\"submit\">Pay and save a card that declines later</button>"
    } else {
        ""
    };
    let state_line = match payment.outcome {
        Outcome::Pending => String::new(),
        Outcome::Paid => "<p><strong>Already paid.</strong></p>".to_owned(),
        Outcome::Declined => "<p><strong>Already declined.</strong></p>".to_owned(),
    };
    page(
        200,
        "Sandbox checkout",
        &format!(
            "<p class=\"muted\">Test payment: no money moves.</p>\
             <p><strong>{description}</strong></p><p id=\"amount\">{amount} {currency}</p>{state_line}\
             <form method=\"post\">\
             <button class=\"pay\" name=\"outcome\" value=\"paid\" type=\"submit\">Pay {amount} {currency}</button>\
             <button class=\"decline\" name=\"outcome\" value=\"failed\" type=\"submit\">Decline</button>{save_choice}\
             </form><p class=\"muted\">Top-up <code>{topup}</code></p>",
            description = escape(&payment.description),
            amount = payment.price.amount(),
            currency = payment.price.currency(),
            topup = escape(payment.topup_id.as_str()),
        ),
    )
}

#[derive(Debug, Deserialize)]
pub struct DecideForm {
    outcome: String,
}

/// The customer's choice on the sandbox checkout page.
#[post("/sandbox/checkout/{payment_ref}")]
pub async fn checkout_decide(
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<DecideForm>,
) -> HttpResponse {
    let Some(gateway) = sandbox(&state) else {
        return page(
            404,
            "Not found",
            "<p>The sandbox gateway is not enabled.</p>",
        );
    };
    let (paid, declining_card) = match form.outcome.as_str() {
        "paid" => (true, false),
        "paid_card_declines_later" => (true, true),
        "failed" => (false, false),
        _ => return page(400, "Bad request", "<p>outcome must be paid or failed.</p>"),
    };
    let payment_ref = path.into_inner();
    let topup_id = match gateway
        .lock()
        .ok()
        .and_then(|p| p.get(&payment_ref).cloned())
    {
        Some(p) => p.topup_id,
        None => return page(404, "Unknown payment", "<p>No such sandbox payment.</p>"),
    };
    let delivered = match gateway
        .decide(&payment_ref, paid, declining_card, state.billing.now())
        .await
    {
        Ok(delivered) => delivered,
        Err(e) => {
            return page(
                400,
                "Payment not recorded",
                &format!("<p>{}</p>", escape(&e.to_string())),
            );
        }
    };
    let (title, text) = if paid {
        ("Payment succeeded", "The sandbox charged the payment.")
    } else {
        ("Payment declined", "The sandbox declined the payment.")
    };
    let delivery = if delivered {
        "The gateway notification was delivered and processed."
    } else {
        "The gateway notification could not be delivered; reconciliation will settle the top-up."
    };
    page(
        200,
        title,
        &format!(
            "<p>{text}</p><p>{delivery}</p>\
             <p><a href=\"/checkout/return/sandbox?topup={topup}\">Back to the shop</a></p>",
            topup = escape(topup_id.as_str()),
        ),
    )
}

/// Off-session charges the sandbox made and declined: `{"paid": n, "declined": n}`.
#[get("/sandbox/charges")]
pub async fn charges(state: web::Data<AppState>) -> HttpResponse {
    match sandbox(&state) {
        Some(gateway) => {
            let (paid, declined) = gateway.charges();
            HttpResponse::Ok().json(serde_json::json!({"paid": paid, "declined": declined}))
        }
        None => page(
            404,
            "Not found",
            "<p>The sandbox gateway is not enabled.</p>",
        ),
    }
}
