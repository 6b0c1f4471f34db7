//! [`StripeGateway`]: the port's implementation over async-stripe.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use billing_core::autotopup::SavedMethod;
use billing_core::ids::TopUpId;
use billing_core::money::{Currency, Money};
use billing_core::ports::{
    Checkout, CheckoutRequest, GatewayError, Notification, PaymentGateway, PaymentStatus,
    VerifiedNotification,
};
use billing_core::time::Timestamp;
use billing_core::topup::TopUp;
use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeRequest};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionCustomerCreation, CreateCheckoutSessionLineItems,
    CreateCheckoutSessionLineItemsPriceData, CreateCheckoutSessionPaymentIntentData,
    CreateCheckoutSessionPaymentIntentDataSetupFutureUsage, ProductData, RetrieveCheckoutSession,
};
use stripe_checkout::{
    CheckoutSession, CheckoutSessionMode, CheckoutSessionPaymentStatus, CheckoutSessionStatus,
};
use stripe_core::payment_intent::{
    CreatePaymentIntent, CreatePaymentIntentOffSession, RetrievePaymentIntent,
};
use stripe_core::{PaymentIntent, PaymentIntentSetupFutureUsage, PaymentIntentStatus};

use crate::config::{StripeConfig, StripeConfigError};
use crate::error::gateway_error;
use crate::event::parse_event;
use crate::signature::{SIGNATURE_HEADER, verify_signature};

/// The gateway's name in `/webhooks/{name}`, in configuration and on top-ups.
pub const GATEWAY_NAME: &str = "stripe";
/// Limit on each HTTP attempt to Stripe (connection, answer and body).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The line item's name when the request has none (Stripe requires one).
const DESCRIPTION_DEFAULT: &str = "Credit top-up";
/// Stripe's limit on a product name, in characters.
const PRODUCT_NAME_LENGTH_MAX: usize = 250;
/// Longest Stripe object id accepted in a request path.
const OBJECT_ID_LENGTH_MAX: usize = 255;

/// A customer's payment method saved by a Checkout with `save_payment_method`, usable for
/// off-session charges ([`StripeGateway::charge_off_session`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedPaymentMethod {
    /// The Stripe customer (`cus_…`) the method is attached to.
    pub customer: String,
    /// The payment method (`pm_…`).
    pub payment_method: String,
}

/// The Stripe Checkout adapter of [`PaymentGateway`].
pub struct StripeGateway {
    client: Client,
    webhook_secrets: Vec<String>,
    /// Without a trailing slash.
    public_url: String,
}

impl fmt::Debug for StripeGateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeGateway")
            .field("public_url", &self.public_url)
            .field("webhook_secrets", &self.webhook_secrets.len())
            .finish_non_exhaustive()
    }
}

fn invalid(reason: impl Into<String>) -> GatewayError {
    GatewayError::InvalidRequest(reason.into())
}

fn idempotent(key: String) -> Result<RequestStrategy, GatewayError> {
    IdempotencyKey::new(&key)
        .map(RequestStrategy::Idempotent)
        .map_err(|e| invalid(format!("idempotency key {key:?}: {e}")))
}

/// Stripe's lower-case currency code for `money`.
fn stripe_currency(money: &Money) -> stripe_types::Currency {
    let Ok(currency) = money
        .currency()
        .code()
        .to_ascii_lowercase()
        .parse::<stripe_types::Currency>();
    currency
}

/// An id that is safe to put in a request path (`cs_…`, `pi_…`).
fn checked_object_id<'a>(id: &'a str, prefix: &str) -> Result<&'a str, GatewayError> {
    let well_formed = id.starts_with(prefix)
        && id.len() <= OBJECT_ID_LENGTH_MAX
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if well_formed {
        Ok(id)
    } else {
        Err(invalid(format!("{id:?} is not a Stripe {prefix}… id")))
    }
}

/// What Stripe says was collected, as money of ours. Stripe saying "paid" with an amount or a
/// currency we cannot represent is an error, never a guess.
fn collected(
    what: &str,
    amount: Option<i64>,
    currency: Option<&stripe_types::Currency>,
) -> Result<Money, GatewayError> {
    let (Some(amount), Some(currency)) = (amount, currency) else {
        return Err(invalid(format!(
            "{what} is paid but has no amount or currency"
        )));
    };
    let currency = Currency::from_code(&currency.to_string())
        .map_err(|e| invalid(format!("{what} is paid in {currency}: {e}")))?;
    Money::from_minor_units(amount, currency).map_err(|e| {
        invalid(format!(
            "{what} is paid {amount} {currency} minor units: {e}"
        ))
    })
}

/// Why a PaymentIntent will not be paid, or `None` when it may still be.
///
/// `canceled` is final. `requires_payment_method` is final for us only together with a
/// `last_payment_error` (an attempt failed, e.g. an async debit bounced); without one the
/// outcome is not certain and the answer is `None`.
fn intent_failure(intent: &PaymentIntent) -> Option<String> {
    match intent.status {
        PaymentIntentStatus::Canceled => Some("payment canceled".to_owned()),
        PaymentIntentStatus::RequiresPaymentMethod => intent.last_payment_error.as_ref().map(|e| {
            // The code first (`authentication_required`, `card_declined`): what callers match.
            let code = e
                .decline_code
                .clone()
                .or_else(|| e.code.as_ref().map(|c| c.as_str().to_owned()))
                .unwrap_or_else(|| e.type_.as_str().to_owned());
            match &e.message {
                Some(message) => format!("payment failed: {code}: {message}"),
                None => format!("payment failed: {code}"),
            }
        }),
        _ => None,
    }
}

impl StripeGateway {
    /// Builds the gateway. Install a rustls crypto provider first if the process links more
    /// than one (async-stripe builds its TLS configuration here).
    pub fn new(config: StripeConfig) -> Result<StripeGateway, StripeConfigError> {
        config.validate()?;
        let api_base = format!("{}/", config.api_base.trim_end_matches('/'));
        let client = ClientBuilder::new(config.secret_key)
            .url(api_base)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| StripeConfigError(e.to_string()))?;
        Ok(StripeGateway {
            client,
            webhook_secrets: config.webhook_secrets,
            public_url: config.public_url.trim_end_matches('/').to_owned(),
        })
    }

    fn return_url(&self, topup_id: &TopUpId, cancelled: bool) -> String {
        let mut url =
            billing_core::ports::checkout_return_url(&self.public_url, GATEWAY_NAME, topup_id);
        if cancelled {
            url.push_str("&cancelled=1");
        }
        url
    }

    /// The Checkout Session creation this adapter sends for `request`.
    fn checkout_session_request(&self, request: &CheckoutRequest) -> CreateCheckoutSession {
        let topup_id = request.topup_id.as_str();
        let name: String = match request.description.trim() {
            "" => DESCRIPTION_DEFAULT.to_owned(),
            description => description.chars().take(PRODUCT_NAME_LENGTH_MAX).collect(),
        };
        let mut price_data =
            CreateCheckoutSessionLineItemsPriceData::new(stripe_currency(&request.price));
        price_data.unit_amount = Some(request.price.minor_units());
        price_data.product_data = Some(ProductData::new(name));
        let mut item = CreateCheckoutSessionLineItems::new();
        item.price_data = Some(price_data);
        item.quantity = Some(1);

        let metadata = HashMap::from([("topup_id".to_owned(), topup_id.to_owned())]);
        // The PaymentIntent carries the top-up id too, for the Stripe dashboard.
        let mut intent_data = CreateCheckoutSessionPaymentIntentData::new();
        intent_data.metadata = Some(metadata.clone());

        let mut create = CreateCheckoutSession::new()
            .mode(CheckoutSessionMode::Payment)
            .line_items(vec![item])
            .client_reference_id(topup_id)
            .metadata(metadata)
            .success_url(self.return_url(&request.topup_id, false))
            .cancel_url(self.return_url(&request.topup_id, true));
        if !request.customer_email.trim().is_empty() {
            create = create.customer_email(request.customer_email.trim());
        }
        if request.save_payment_method {
            create = create.customer_creation(CreateCheckoutSessionCustomerCreation::Always);
            intent_data.setup_future_usage =
                Some(CreateCheckoutSessionPaymentIntentDataSetupFutureUsage::OffSession);
        }
        create.payment_intent_data(intent_data)
    }

    async fn retrieve_session(&self, id: &str) -> Result<CheckoutSession, GatewayError> {
        let id = checked_object_id(id, "cs_")?;
        RetrieveCheckoutSession::new(id)
            .send(&self.client)
            .await
            .map_err(gateway_error)
    }

    async fn retrieve_intent(&self, id: &str) -> Result<PaymentIntent, GatewayError> {
        let id = checked_object_id(id, "pi_")?;
        RetrievePaymentIntent::new(id)
            .send(&self.client)
            .await
            .map_err(gateway_error)
    }

    /// The status of a Checkout Session, as Stripe reports it now.
    async fn session_status(&self, topup: &TopUp, id: &str) -> Result<PaymentStatus, GatewayError> {
        let session = self.retrieve_session(id).await?;
        let owner = session.client_reference_id.as_deref();
        if let Some(reference) = owner.filter(|r| *r != topup.id.as_str()) {
            return Err(invalid(format!(
                "session {id} belongs to top-up {reference}, not {}",
                topup.id
            )));
        }
        let what = format!("session {id}");
        let Some(status) = &session.status else {
            return Ok(PaymentStatus::Pending);
        };
        Ok(match (status, &session.payment_status) {
            (CheckoutSessionStatus::Complete, CheckoutSessionPaymentStatus::Paid) => {
                PaymentStatus::Paid {
                    amount: collected(&what, session.amount_total, session.currency.as_ref())?,
                }
            }
            // A priced session completed without collecting anything (a 100 % discount): no
            // money came in and none will; it must not credit.
            (CheckoutSessionStatus::Complete, CheckoutSessionPaymentStatus::NoPaymentRequired) => {
                tracing::warn!(
                    session = %id,
                    topup = %topup.id,
                    "stripe session completed without payment"
                );
                PaymentStatus::Failed {
                    reason: "completed without payment".to_owned(),
                }
            }
            // Submitted with a delayed method (bank debit…): the PaymentIntent tells whether it
            // already failed.
            (CheckoutSessionStatus::Complete, CheckoutSessionPaymentStatus::Unpaid) => {
                match &session.payment_intent {
                    Some(intent) => {
                        let intent = self.retrieve_intent(intent.id().as_str()).await?;
                        match intent_failure(&intent) {
                            Some(reason) => PaymentStatus::Failed { reason },
                            None => PaymentStatus::Pending,
                        }
                    }
                    None => PaymentStatus::Pending,
                }
            }
            (CheckoutSessionStatus::Expired, _) => PaymentStatus::Failed {
                reason: "expired".to_owned(),
            },
            (CheckoutSessionStatus::Open, _) => PaymentStatus::Pending,
            (other, payment) => {
                tracing::warn!(
                    session = %id,
                    status = other.as_str(),
                    payment_status = payment.as_str(),
                    "stripe session in an unknown state"
                );
                PaymentStatus::Pending
            }
        })
    }

    /// The status of a PaymentIntent charged directly ([`StripeGateway::charge_off_session`]).
    async fn intent_status(&self, topup: &TopUp, id: &str) -> Result<PaymentStatus, GatewayError> {
        let intent = self.retrieve_intent(id).await?;
        let owner = intent.metadata.get("topup_id");
        if let Some(reference) = owner.filter(|r| r.as_str() != topup.id.as_str()) {
            return Err(invalid(format!(
                "payment intent {id} belongs to top-up {reference}, not {}",
                topup.id
            )));
        }
        if intent.status == PaymentIntentStatus::Succeeded {
            let what = format!("payment intent {id}");
            return Ok(PaymentStatus::Paid {
                amount: collected(&what, Some(intent.amount_received), Some(&intent.currency))?,
            });
        }
        // An off-session charge has no customer present to authenticate or confirm it:
        // waiting would leave the auto top-up pending forever.
        if matches!(
            intent.status,
            PaymentIntentStatus::RequiresAction | PaymentIntentStatus::RequiresConfirmation
        ) {
            return Ok(PaymentStatus::Failed {
                reason: "authentication_required".to_owned(),
            });
        }
        Ok(match intent_failure(&intent) {
            Some(reason) => PaymentStatus::Failed { reason },
            None => PaymentStatus::Pending,
        })
    }

    /// The payment method a completed, paid Checkout Session saved for off-session use: the
    /// session's customer and its PaymentIntent's payment method, when the PaymentIntent was
    /// set up for `off_session` future usage. `None` when the session saved nothing usable.
    pub async fn saved_payment_method(
        &self,
        session_id: &str,
    ) -> Result<Option<SavedPaymentMethod>, GatewayError> {
        let session = self.retrieve_session(session_id).await?;
        let paid = session.status == Some(CheckoutSessionStatus::Complete)
            && session.payment_status == CheckoutSessionPaymentStatus::Paid;
        let (true, Some(customer), Some(intent)) =
            (paid, &session.customer, &session.payment_intent)
        else {
            return Ok(None);
        };
        let intent = self.retrieve_intent(intent.id().as_str()).await?;
        if intent.setup_future_usage != Some(PaymentIntentSetupFutureUsage::OffSession) {
            return Ok(None);
        }
        Ok(intent
            .payment_method
            .as_ref()
            .map(|method| SavedPaymentMethod {
                customer: customer.id().as_str().to_owned(),
                payment_method: method.id().as_str().to_owned(),
            }))
    }

    /// Charges a saved payment method without the customer present: a PaymentIntent with
    /// `off_session=true, confirm=true` and `metadata[topup_id]`, under the idempotency key
    /// `offsession-{topup_id}`. Returns the PaymentIntent id, to store as the top-up's payment
    /// reference: [`PaymentGateway::payment_status`] accepts `pi_…` references.
    ///
    /// A decline, or a charge that needs the customer to authenticate, is
    /// [`GatewayError::Declined`].
    pub async fn charge_off_session(
        &self,
        saved: &SavedPaymentMethod,
        amount: Money,
        topup_id: &TopUpId,
    ) -> Result<String, GatewayError> {
        if amount.is_zero() {
            return Err(invalid("an off-session charge must be positive"));
        }
        let create = CreatePaymentIntent::new(amount.minor_units(), stripe_currency(&amount))
            .customer(saved.customer.clone())
            .payment_method(saved.payment_method.clone())
            .off_session(CreatePaymentIntentOffSession::Bool(true))
            .confirm(true)
            .metadata(HashMap::from([(
                "topup_id".to_owned(),
                topup_id.as_str().to_owned(),
            )]));
        let intent = create
            .customize()
            .request_strategy(idempotent(format!("offsession-{topup_id}"))?)
            .send(&self.client)
            .await
            .map_err(gateway_error)?;
        tracing::info!(
            topup = %topup_id,
            payment_intent = %intent.id.as_str(),
            status = intent.status.as_str(),
            "stripe off-session charge created"
        );
        Ok(intent.id.as_str().to_owned())
    }
}

#[async_trait]
impl PaymentGateway for StripeGateway {
    fn name(&self) -> &str {
        GATEWAY_NAME
    }

    /// A Checkout Session in `payment` mode, created under the idempotency key
    /// `checkout-{topup_id}` (Stripe answers a retry within 24 hours with the same session).
    async fn create_checkout(&self, request: &CheckoutRequest) -> Result<Checkout, GatewayError> {
        if request.price.is_zero() {
            return Err(invalid("a checkout must charge a positive amount"));
        }
        let session = self
            .checkout_session_request(request)
            .customize()
            .request_strategy(idempotent(format!("checkout-{}", request.topup_id))?)
            .send(&self.client)
            .await
            .map_err(gateway_error)?;
        let id = session.id.as_str().to_owned();
        let url = session
            .url
            .ok_or_else(|| invalid(format!("session {id} has no checkout url")))?;
        tracing::info!(topup = %request.topup_id, session = %id, "stripe checkout session created");
        Ok(Checkout {
            payment_ref: id,
            checkout_url: url,
        })
    }

    /// Checks the `Stripe-Signature` header first ([`verify_signature`]), then reads the event.
    /// `checkout.session.{completed, async_payment_succeeded, async_payment_failed, expired}`
    /// name the session (`payment_ref`) and the top-up (`client_reference_id`, else
    /// `metadata.topup_id`); any other event type is answered with `topup_id: None,
    /// payment_ref: None`, which the core acknowledges and ignores.
    async fn verify_notification(
        &self,
        notification: &Notification,
        now: Timestamp,
    ) -> Result<VerifiedNotification, GatewayError> {
        verify_signature(
            notification.header(SIGNATURE_HEADER),
            &notification.body,
            &self.webhook_secrets,
            now,
        )?;
        parse_event(&notification.body)
    }

    /// Retrieves the top-up's Checkout Session (`cs_…`) or off-session PaymentIntent (`pi_…`)
    /// from Stripe. `Paid` only for a complete session with `payment_status = paid` (or a
    /// succeeded PaymentIntent), with the amount and currency Stripe reports; `Failed` for an
    /// expired session, a canceled PaymentIntent or a failed attempt; `Pending` otherwise.
    async fn payment_status(&self, topup: &TopUp) -> Result<PaymentStatus, GatewayError> {
        let Some(reference) = topup.payment_ref.as_deref() else {
            return Err(invalid(format!(
                "top-up {} has no Stripe payment reference",
                topup.id
            )));
        };
        if reference.starts_with("pi_") {
            self.intent_status(topup, reference).await
        } else {
            self.session_status(topup, reference).await
        }
    }

    fn saves_payment_methods(&self) -> bool {
        true
    }

    /// The customer and payment method a paid Checkout Session saved for off-session use
    /// ([`StripeGateway::saved_payment_method`]), as `cus_…/pm_…`.
    async fn saved_method(&self, topup: &TopUp) -> Result<Option<SavedMethod>, GatewayError> {
        let Some(session) = topup
            .payment_ref
            .as_deref()
            .filter(|r| r.starts_with("cs_"))
        else {
            return Ok(None);
        };
        Ok(self
            .saved_payment_method(session)
            .await?
            .map(|saved| SavedMethod {
                gateway: GATEWAY_NAME.to_owned(),
                reference: format!("{}/{}", saved.customer, saved.payment_method),
                brand: None,
                last4: None,
                saved_at: topup.updated_at,
            }))
    }

    /// An off-session, confirmed PaymentIntent ([`StripeGateway::charge_off_session`],
    /// idempotent per top-up).
    async fn charge_saved(
        &self,
        method: &SavedMethod,
        topup: &TopUp,
    ) -> Result<String, GatewayError> {
        let Some((customer, payment_method)) = method.reference.split_once('/') else {
            return Err(invalid("not a saved Stripe payment method"));
        };
        let saved = SavedPaymentMethod {
            customer: customer.to_owned(),
            payment_method: payment_method.to_owned(),
        };
        self.charge_off_session(&saved, topup.price, &topup.id)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_ids_must_be_path_safe() {
        assert!(checked_object_id("cs_test_abc123", "cs_").is_ok());
        for bad in ["", "pi_abc", "cs_../x", "cs_a?b", "cs_a/b"] {
            assert!(checked_object_id(bad, "cs_").is_err(), "{bad}");
        }
    }
}
