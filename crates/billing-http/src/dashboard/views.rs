//! The dashboard's pages as askama templates (`templates/dashboard/`). Every value is
//! escaped by askama unless a template marks it `safe` (only HTML this crate built: the
//! preview box and the chart).

use askama::Template;

/// What the page frame needs: the tabs and the sign-out form, when signed in.
pub struct Nav {
    /// Which tab is current: `billing`, `transactions`, `top-ups` or `settings`.
    pub current: &'static str,
    pub account: String,
    pub csrf: String,
}

#[derive(Template)]
#[template(path = "dashboard/signin.html")]
pub struct SignInPage {
    pub title: &'static str,
    pub nav: Option<Nav>,
    pub refresh_seconds: Option<u32>,
    pub csrf: String,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "dashboard/error.html")]
pub struct ErrorPage {
    pub title: String,
    pub nav: Option<Nav>,
    pub refresh_seconds: Option<u32>,
    pub message: String,
}

/// A custom amount's price, credits and bonus.
pub struct QuoteView {
    pub price: String,
    pub credits: String,
    /// The bonus tier's percent, when one applies.
    pub percent: Option<String>,
    pub bonus: String,
    pub total: String,
}

#[derive(Template)]
#[template(path = "dashboard/preview.html")]
pub struct PreviewBox {
    pub quote: Option<QuoteView>,
    /// Why the amount cannot be bought, when it cannot.
    pub problem: Option<String>,
    pub contact_sales: bool,
    pub sales_email: String,
    /// The bonus tiers in words.
    pub tiers: String,
}

pub struct PackCard {
    pub id: String,
    pub name: String,
    pub price: String,
    pub credits: String,
    pub popular: bool,
}

#[derive(Template)]
#[template(path = "dashboard/billing.html")]
pub struct BillingPage {
    pub title: &'static str,
    pub nav: Option<Nav>,
    pub refresh_seconds: Option<u32>,
    pub csrf: String,
    pub notice: Option<String>,
    pub balance: String,
    pub available: String,
    pub unit: String,
    pub currency: String,
    pub packs: Vec<PackCard>,
    /// A fresh token per rendering: the top-up forms' idempotency (a form submitted twice
    /// starts one top-up).
    pub request_key: String,
    pub amount: String,
    pub problem: Option<String>,
    pub quote_ok: bool,
    /// The default gateway can save the card for auto top-up.
    pub can_save: bool,
    pub preview: String,
    pub minimum: String,
    pub contact_sales_from: String,
    pub tiers: String,
    pub chart: String,
}

#[derive(Template)]
#[template(path = "dashboard/topup.html")]
pub struct TopUpPageView {
    pub title: &'static str,
    pub nav: Option<Nav>,
    pub refresh_seconds: Option<u32>,
    pub id: String,
    pub status: String,
    pub status_label: &'static str,
    pub checkout_url: Option<String>,
    pub price: String,
    pub credits: String,
    pub bonus: String,
    pub has_bonus: bool,
    pub balance: String,
    pub failure_reason: Option<String>,
    pub created_at: String,
}

pub struct EntryRow {
    pub date: String,
    pub kind: String,
    pub description: String,
    pub amount: String,
    pub credit: bool,
    pub balance_after: String,
}

#[derive(Template)]
#[template(path = "dashboard/transactions.html")]
pub struct TransactionsPage {
    pub title: &'static str,
    pub nav: Option<Nav>,
    pub refresh_seconds: Option<u32>,
    pub kind: String,
    pub kinds: Vec<(&'static str, &'static str)>,
    pub rows: Vec<EntryRow>,
    pub not_first: bool,
    /// The cursor of the next (older) page.
    pub next: Option<String>,
}

pub struct TopUpRow {
    pub id: String,
    pub date: String,
    pub what: String,
    pub price: String,
    pub credits: String,
    pub bonus: String,
    pub status: String,
    pub status_label: &'static str,
}

#[derive(Template)]
#[template(path = "dashboard/topups.html")]
pub struct TopUpsPage {
    pub title: &'static str,
    pub nav: Option<Nav>,
    pub refresh_seconds: Option<u32>,
    pub status: String,
    pub statuses: Vec<(&'static str, &'static str)>,
    pub rows: Vec<TopUpRow>,
    pub page: u32,
    pub has_more: bool,
}

pub struct SettingField {
    pub name: &'static str,
    pub label: &'static str,
    pub value: String,
    pub hint: String,
    pub error: Option<String>,
    /// `(value, label)`: a select; empty: a text field.
    pub choices: Vec<(&'static str, &'static str)>,
}

pub struct SettingForm {
    /// The form's path segment: `spending-limit`, `low-balance-alert`, `auto-top-up`.
    pub id: &'static str,
    pub title: &'static str,
    pub help: &'static str,
    pub enabled: bool,
    pub fields: Vec<SettingField>,
    /// An error not tied to one field.
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "dashboard/settings.html")]
pub struct SettingsPage {
    pub title: &'static str,
    pub nav: Option<Nav>,
    pub refresh_seconds: Option<u32>,
    pub csrf: String,
    pub notice: Option<String>,
    pub forms: Vec<SettingForm>,
    /// The saved payment method, in words.
    pub method: Option<String>,
}
