//! Configuration: environment variables, and an optional TOML file for the wallet's unit,
//! top-up rules, packs and the reconciliation worker. Amounts in the file are strings or
//! integers (`"25.50"`, `5`), never floats.

use std::collections::HashMap;
use std::path::Path;

use billing_core::Decimal;
use billing_core::money::{Currency, parse_decimal};
use billing_core::notices::RetryPolicy;
use billing_core::pricing::Rate;
use billing_core::service::PackInput;
use billing_core::topup::{BonusTier, TopUpPolicy};
use billing_http::auth::AuthSettings;
use billing_http::dashboard::DashboardSettings;
use billing_http::metrics::MetricsSettings;
use serde::Deserialize;

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Toml { path: String, message: String },
}

/// A decimal written as a TOML string or integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDecimal(pub Decimal);

impl<'de> Deserialize<'de> for ConfigDecimal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ConfigDecimal, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Text(String),
            Float(f64),
        }
        match Raw::deserialize(d)? {
            Raw::Int(i) => Ok(ConfigDecimal(Decimal::from(i))),
            Raw::Text(s) => parse_decimal(&s)
                .map(ConfigDecimal)
                .map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}"))),
            Raw::Float(f) => Err(serde::de::Error::custom(format!(
                "{f} is a float: write amounts as strings (\"{f}\") so that no digit is lost"
            ))),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    default_gateway: Option<String>,
    sandbox_enabled: Option<bool>,
    stripe: Option<StripeFile>,
    myfatoorah: Option<MyFatoorahFile>,
    #[serde(default)]
    wallet: WalletFile,
    #[serde(default)]
    topup: Option<TopUpFile>,
    packs: Option<Vec<PackFile>>,
    #[serde(default)]
    rates: Vec<RateFile>,
    #[serde(default)]
    reconcile: ReconcileFile,
}

/// `[[rates]]`: a model's prices per million tokens, seeded when the model has none.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateFile {
    model: String,
    input_per_million: ConfigDecimal,
    output_per_million: ConfigDecimal,
}

/// `[stripe]`: the same settings as the `BILLING_STRIPE_*` variables, which win.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StripeFile {
    secret_key: Option<String>,
    webhook_secrets: Option<Vec<String>>,
    api_base: Option<String>,
}

/// `[myfatoorah]`: the same settings as the `BILLING_MYFATOORAH_*` variables, which win.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MyFatoorahFile {
    token: Option<String>,
    webhook_secret: Option<String>,
    api_base: Option<String>,
    currency: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WalletFile {
    unit: Option<String>,
    display_scale: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopUpFile {
    currency: Option<String>,
    minimum: Option<ConfigDecimal>,
    contact_sales_from: Option<ConfigDecimal>,
    credits_per_unit: Option<ConfigDecimal>,
    bonus_tiers: Option<Vec<TierFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TierFile {
    from: ConfigDecimal,
    percent: ConfigDecimal,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackFile {
    id: String,
    name: String,
    price: ConfigDecimal,
    currency: Option<String>,
    credits: ConfigDecimal,
    #[serde(default)]
    popular: bool,
    #[serde(default = "yes")]
    active: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReconcileFile {
    after_secs: Option<i64>,
    interval_secs: Option<u64>,
}

/// A pack the configuration seeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedPack {
    pub id: String,
    pub input: PackInput,
}

/// Stripe, when `BILLING_STRIPE_SECRET_KEY` is set.
#[derive(Clone)]
pub struct StripeSettings {
    pub secret_key: String,
    /// Several during a secret roll (`BILLING_STRIPE_WEBHOOK_SECRET`, comma-separated).
    pub webhook_secrets: Vec<String>,
    pub api_base: Option<String>,
}

impl std::fmt::Debug for StripeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeSettings")
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

/// MyFatoorah, when `BILLING_MYFATOORAH_TOKEN` is set.
#[derive(Clone)]
pub struct MyFatoorahSettings {
    pub token: String,
    pub webhook_secret: String,
    pub api_base: Option<String>,
    pub currency: Currency,
}

impl std::fmt::Debug for MyFatoorahSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MyFatoorahSettings")
            .field("api_base", &self.api_base)
            .field("currency", &self.currency)
            .finish_non_exhaustive()
    }
}

/// Everything the server needs to start. Its `Debug` leaves out the secrets.
#[derive(Clone)]
pub struct Config {
    pub listen: String,
    pub database_url: String,
    /// Base URL for the links handed out (checkout pages, return URLs); no trailing `/`.
    /// `None`: the address the server is bound to.
    pub public_url: Option<String>,
    pub admin_key: Option<String>,
    pub default_gateway: String,
    /// The sandbox "pays" without money: it is enabled only when it is the default gateway
    /// or `BILLING_SANDBOX_ENABLED=true`.
    pub sandbox_enabled: bool,
    pub sandbox_secret: Option<String>,
    pub stripe: Option<StripeSettings>,
    pub myfatoorah: Option<MyFatoorahSettings>,
    /// Where the sandbox delivers its notifications; this server's own address by default.
    pub sandbox_webhook_url: Option<String>,
    pub wallet_unit: String,
    pub display_scale: u32,
    pub policy: TopUpPolicy,
    /// Seeded at start when no pack with the id exists; admins manage them afterwards.
    pub packs: Vec<SeedPack>,
    /// Seeded at start when the model has no rate; admins manage them afterwards.
    pub rates: Vec<Rate>,
    pub reconcile_after_secs: i64,
    pub reconcile_interval_secs: u64,
    /// How often expired holds are written down (`BILLING_HOLD_EXPIRY_INTERVAL_SECS`).
    pub hold_expiry_interval_secs: u64,
    /// HTTP worker threads (`BILLING_WORKERS`) and the client connections they hold open
    /// at once (`BILLING_HTTP_MAX_CONNECTIONS`).
    pub serving: billing_http::Serving,
    pub max_connections: u32,
    /// How long a request waits for a database connection before it answers `503`
    /// (`BILLING_DB_ACQUIRE_TIMEOUT_MS`, 5,000).
    pub db_acquire_timeout_ms: u64,
    /// Group commit of postings: writer threads, batch size and wait, queue bound.
    pub batch: billing_store::BatchOptions,
    /// Failed authentications a client address may make a minute, and whether the client
    /// address comes from `X-Forwarded-For`.
    pub auth: AuthSettings,
    /// Email and events, and the outbox worker that delivers them.
    pub notify: NotifySettings,
    /// The customer dashboard: session lifetime (`BILLING_DASHBOARD_SESSION_HOURS`, 12),
    /// the contact-sales address (`BILLING_SALES_EMAIL`); cookies are `Secure` when
    /// `BILLING_PUBLIC_URL` is `https://`.
    pub dashboard: DashboardSettings,
    /// `/metrics`: `BILLING_METRICS_TOKEN` (a bearer token, at least 16 characters) and
    /// `BILLING_METRICS_LISTEN` (a second address serving it). Neither: `/metrics` is off.
    pub metrics: MetricsSettings,
}

/// Where notices go and how failed deliveries are retried.
#[derive(Clone)]
pub struct NotifySettings {
    /// `BILLING_SMTP_URL` (`smtp://user:pass@host:port`, `smtps://…`); none: emails are
    /// logged.
    pub smtp_url: Option<String>,
    /// `BILLING_EMAIL_FROM`, required with SMTP.
    pub email_from: Option<String>,
    /// `BILLING_EVENTS_URL` and `BILLING_EVENTS_SECRET` (both or neither).
    pub events_url: Option<String>,
    pub events_secret: Option<String>,
    /// `BILLING_OUTBOX_RETRY_BASE_SECS` (10) and `BILLING_OUTBOX_RETRY_HOURS` (24).
    pub retry: RetryPolicy,
    /// How often the outbox is polled, in milliseconds (`BILLING_OUTBOX_INTERVAL_MS`, 1000).
    pub interval_ms: u64,
    /// Consecutive failed auto top-up charges that turn it off
    /// (`BILLING_AUTO_TOPUP_FAILURES_MAX`, 3).
    pub auto_topup_failures_max: u32,
}

impl std::fmt::Debug for NotifySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifySettings")
            .field("smtp_url", &self.smtp_url.as_deref().map(redact_url))
            .field("email_from", &self.email_from)
            .field("events_url", &self.events_url.as_deref().map(redact_url))
            .field(
                "events_secret",
                &self.events_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("retry", &self.retry)
            .field("interval_ms", &self.interval_ms)
            .field("auto_topup_failures_max", &self.auto_topup_failures_max)
            .finish()
    }
}

impl NotifySettings {
    fn from_env(env: &HashMap<String, String>) -> Result<NotifySettings, ConfigError> {
        let get = |name: &str| env.get(name).filter(|v| !v.is_empty()).cloned();
        let smtp_url = get("BILLING_SMTP_URL");
        let email_from = get("BILLING_EMAIL_FROM");
        if smtp_url.is_some() && email_from.is_none() {
            return Err(ConfigError::Invalid(
                "BILLING_SMTP_URL needs BILLING_EMAIL_FROM (the sender's address)".into(),
            ));
        }
        if let Some(url) = &smtp_url
            && !(url.starts_with("smtp://") || url.starts_with("smtps://"))
        {
            return Err(ConfigError::Invalid(
                "BILLING_SMTP_URL must start with smtp:// or smtps://".into(),
            ));
        }
        let events_url = get("BILLING_EVENTS_URL");
        let events_secret = get("BILLING_EVENTS_SECRET");
        match (&events_url, &events_secret) {
            (Some(url), Some(_)) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(ConfigError::Invalid(
                        "BILLING_EVENTS_URL must be an http:// or https:// URL".into(),
                    ));
                }
            }
            (None, None) => {}
            _ => {
                return Err(ConfigError::Invalid(
                    "BILLING_EVENTS_URL and BILLING_EVENTS_SECRET go together".into(),
                ));
            }
        }
        let defaults = RetryPolicy::default();
        let base_secs: u64 =
            env_parse(env, "BILLING_OUTBOX_RETRY_BASE_SECS")?.unwrap_or(defaults.base_secs);
        let hours: u64 = env_parse(env, "BILLING_OUTBOX_RETRY_HOURS")?.unwrap_or(24);
        if base_secs == 0 || hours == 0 || hours > 24 * 365 {
            return Err(ConfigError::Invalid(
                "BILLING_OUTBOX_RETRY_BASE_SECS must be at least 1 and BILLING_OUTBOX_RETRY_HOURS between 1 and 8760".into(),
            ));
        }
        Ok(NotifySettings {
            smtp_url,
            email_from,
            events_url,
            events_secret,
            retry: RetryPolicy {
                base_secs,
                max_delay_secs: defaults.max_delay_secs.max(base_secs),
                window_secs: hours * 3_600,
            },
            interval_ms: env_parse(env, "BILLING_OUTBOX_INTERVAL_MS")?
                .unwrap_or(1_000)
                .max(10),
            auto_topup_failures_max: match env_parse(env, "BILLING_AUTO_TOPUP_FAILURES_MAX")? {
                None => billing_core::autotopup::AUTO_TOPUP_FAILURES_MAX,
                Some(0) => {
                    return Err(ConfigError::Invalid(
                        "BILLING_AUTO_TOPUP_FAILURES_MAX must be at least 1".into(),
                    ));
                }
                Some(n) => n,
            },
        })
    }
}

/// The packs of the credit-packs seed document, priced in USD; credits are in the wallet's
/// unit, so a USD wallet gets 5, 25 and 70 USD of credit.
fn default_packs(currency: &str, credits_per_dollar: Decimal) -> Vec<SeedPack> {
    let pack = |id: &str, name: &str, price: i64, credits: i64, popular| SeedPack {
        id: id.to_owned(),
        input: PackInput {
            name: name.to_owned(),
            price: Decimal::from(price),
            currency: currency.to_owned(),
            credits: Decimal::from(credits) * credits_per_dollar,
            popular,
            active: true,
        },
    };
    vec![
        pack("pack_starter", "Starter Pack", 5, 5, false),
        pack("pack_pro", "Pro Pack", 20, 25, true),
        pack("pack_business", "Business Pack", 50, 70, false),
    ]
}

/// `scheme://user:password@host/db` without its credentials.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &redact_url(&self.database_url))
            .field("public_url", &self.public_url)
            .field("admin_key", &self.admin_key.as_ref().map(|_| "<redacted>"))
            .field("default_gateway", &self.default_gateway)
            .field("sandbox_enabled", &self.sandbox_enabled)
            .field("stripe", &self.stripe)
            .field("myfatoorah", &self.myfatoorah)
            .field("wallet_unit", &self.wallet_unit)
            .field("policy", &self.policy)
            .field("reconcile_after_secs", &self.reconcile_after_secs)
            .field("auth", &self.auth)
            .field("notify", &self.notify)
            .field("metrics_listen", &self.metrics.listen)
            .finish_non_exhaustive()
    }
}

fn env_parse<T: std::str::FromStr>(
    env: &HashMap<String, String>,
    name: &str,
) -> Result<Option<T>, ConfigError> {
    match env.get(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse::<T>()
            .map(Some)
            .map_err(|_| ConfigError::Invalid(format!("{name}={v:?} is not valid"))),
    }
}

impl Config {
    /// Reads the configuration from `env` (the process environment in production) and the
    /// TOML file `BILLING_CONFIG` names, if any.
    pub fn from_env(env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let file = match env.get("BILLING_CONFIG").filter(|p| !p.is_empty()) {
            Some(path) => read_file(Path::new(path))?,
            None => FileConfig::default(),
        };
        let get = |name: &str| env.get(name).filter(|v| !v.is_empty()).cloned();
        let listen = get("BILLING_LISTEN").unwrap_or_else(|| "127.0.0.1:8080".to_owned());
        let database_url =
            get("BILLING_DATABASE_URL").unwrap_or_else(|| "./data/billing.db".to_owned());
        let public_url = get("BILLING_PUBLIC_URL").map(|u| u.trim_end_matches('/').to_owned());
        if let Some(url) = &public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::Invalid(format!(
                "BILLING_PUBLIC_URL must start with http:// or https://, got {url:?}"
            )));
        }
        let admin_key = get("BILLING_ADMIN_KEY");
        if let Some(key) = &admin_key
            && (key.len() < 32 || key.len() > 200 || !key.chars().all(|c| c.is_ascii_graphic()))
        {
            return Err(ConfigError::Invalid(
                "BILLING_ADMIN_KEY must be 32 to 200 printable ASCII characters".into(),
            ));
        }
        let wallet_unit = file
            .wallet
            .unit
            .clone()
            .unwrap_or_else(|| "USD".to_owned())
            .to_ascii_uppercase();
        let unit_currency = Currency::from_code(&wallet_unit).ok();
        let display_scale = file
            .wallet
            .display_scale
            .or(unit_currency.map(|c| c.exponent()))
            .unwrap_or(0);
        let policy = policy(file.topup.as_ref())?;
        let rates = file
            .rates
            .iter()
            .map(|r| {
                Rate::new(&r.model, r.input_per_million.0, r.output_per_million.0)
                    .map_err(|e| ConfigError::Invalid(format!("[[rates]] {}: {e}", r.model)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let packs = match &file.packs {
            Some(packs) => packs
                .iter()
                .map(|p| SeedPack {
                    id: p.id.clone(),
                    input: PackInput {
                        name: p.name.clone(),
                        price: p.price.0,
                        currency: p
                            .currency
                            .clone()
                            .unwrap_or_else(|| policy.currency.code().to_owned()),
                        credits: p.credits.0,
                        popular: p.popular,
                        active: p.active,
                    },
                })
                .collect(),
            None => default_packs(policy.currency.code(), policy.credits_per_unit),
        };
        let reconcile_after_secs = env_parse(env, "BILLING_RECONCILE_AFTER_SECS")?
            .or(file.reconcile.after_secs)
            .unwrap_or(300);
        let reconcile_interval_secs = env_parse(env, "BILLING_RECONCILE_INTERVAL_SECS")?
            .or(file.reconcile.interval_secs)
            .unwrap_or(60);
        if reconcile_after_secs < 0 || reconcile_interval_secs == 0 {
            return Err(ConfigError::Invalid(
                "reconciliation age must be ≥ 0 and its interval > 0 seconds".into(),
            ));
        }
        let stripe_file = file.stripe.as_ref();
        let stripe = get("BILLING_STRIPE_SECRET_KEY")
            .or_else(|| stripe_file.and_then(|f| f.secret_key.clone()))
            .map(|secret_key| StripeSettings {
                secret_key,
                webhook_secrets: get("BILLING_STRIPE_WEBHOOK_SECRET")
                    .map(|s| {
                        s.split(',')
                            .map(|p| p.trim().to_owned())
                            .collect::<Vec<_>>()
                    })
                    .or_else(|| stripe_file.and_then(|f| f.webhook_secrets.clone()))
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|p| !p.is_empty())
                    .collect(),
                api_base: get("BILLING_STRIPE_API_BASE")
                    .or_else(|| stripe_file.and_then(|f| f.api_base.clone())),
            });
        let mf_file = file.myfatoorah.as_ref();
        let myfatoorah = match get("BILLING_MYFATOORAH_TOKEN")
            .or_else(|| mf_file.and_then(|f| f.token.clone()))
        {
            None => None,
            Some(token) => {
                let code = get("BILLING_MYFATOORAH_CURRENCY")
                    .or_else(|| mf_file.and_then(|f| f.currency.clone()));
                let currency = match code {
                    Some(code) => Currency::from_code(&code).map_err(|e| {
                        ConfigError::Invalid(format!("BILLING_MYFATOORAH_CURRENCY: {e}"))
                    })?,
                    None => policy.currency,
                };
                if currency != policy.currency {
                    return Err(ConfigError::Invalid(format!(
                        "BILLING_MYFATOORAH_CURRENCY is {currency} but top-ups are priced in {}: \
                         set [topup] currency = \"{currency}\" in the configuration file",
                        policy.currency
                    )));
                }
                Some(MyFatoorahSettings {
                    token,
                    webhook_secret: get("BILLING_MYFATOORAH_WEBHOOK_SECRET")
                        .or_else(|| mf_file.and_then(|f| f.webhook_secret.clone()))
                        .unwrap_or_default(),
                    api_base: get("BILLING_MYFATOORAH_API_BASE")
                        .or_else(|| mf_file.and_then(|f| f.api_base.clone())),
                    currency,
                })
            }
        };
        let default_gateway = default_gateway(
            get("BILLING_DEFAULT_GATEWAY").or(file.default_gateway.clone()),
            stripe.is_some(),
            myfatoorah.is_some(),
        )?;
        let sandbox_enabled = default_gateway == "sandbox"
            || env_parse::<bool>(env, "BILLING_SANDBOX_ENABLED")?
                .or(file.sandbox_enabled)
                .unwrap_or(false);
        let secure_cookies = public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"));
        Ok(Config {
            listen,
            database_url,
            public_url,
            admin_key,
            default_gateway,
            sandbox_enabled,
            stripe,
            myfatoorah,
            dashboard: DashboardSettings {
                session_ttl: match env_parse::<u64>(env, "BILLING_DASHBOARD_SESSION_HOURS")? {
                    None => DashboardSettings::default().session_ttl,
                    Some(hours @ 1..=720) => std::time::Duration::from_secs(hours * 3600),
                    Some(other) => {
                        return Err(ConfigError::Invalid(format!(
                            "BILLING_DASHBOARD_SESSION_HOURS must be 1 to 720, got {other}"
                        )));
                    }
                },
                secure_cookies,
                sales_email: get("BILLING_SALES_EMAIL")
                    .unwrap_or_else(|| DashboardSettings::default().sales_email),
            },
            sandbox_secret: get("BILLING_SANDBOX_SECRET"),
            sandbox_webhook_url: get("BILLING_SANDBOX_WEBHOOK_URL"),
            wallet_unit,
            display_scale,
            policy,
            packs,
            rates,
            reconcile_after_secs,
            reconcile_interval_secs,
            hold_expiry_interval_secs: env_parse(env, "BILLING_HOLD_EXPIRY_INTERVAL_SECS")?
                .unwrap_or(5),
            serving: billing_http::Serving {
                workers: match env_parse(env, "BILLING_WORKERS")? {
                    None => 0,
                    Some(n) if n <= billing_http::Serving::MAX_WORKERS => n,
                    Some(_) => {
                        return Err(ConfigError::Invalid(format!(
                            "BILLING_WORKERS must be between 0 and {}",
                            billing_http::Serving::MAX_WORKERS
                        )));
                    }
                },
                max_connections: match env_parse(env, "BILLING_HTTP_MAX_CONNECTIONS")? {
                    None => billing_http::Serving::default().max_connections,
                    Some(n) if (1..=1_000_000).contains(&n) => n,
                    Some(_) => {
                        return Err(ConfigError::Invalid(
                            "BILLING_HTTP_MAX_CONNECTIONS must be between 1 and 1000000".into(),
                        ));
                    }
                },
            },
            max_connections: env_parse(env, "BILLING_DB_MAX_CONNECTIONS")?.unwrap_or(16),
            db_acquire_timeout_ms: match env_parse(env, "BILLING_DB_ACQUIRE_TIMEOUT_MS")? {
                None => 5_000,
                Some(ms) if (100..=300_000).contains(&ms) => ms,
                Some(_) => {
                    return Err(ConfigError::Invalid(
                        "BILLING_DB_ACQUIRE_TIMEOUT_MS must be between 100 and 300000".into(),
                    ));
                }
            },
            batch: batch_options(env)?,
            auth: AuthSettings {
                failures_per_minute: match env_parse(env, "BILLING_AUTH_FAILURES_PER_MINUTE")? {
                    None => AuthSettings::default().failures_per_minute,
                    Some(0) => {
                        return Err(ConfigError::Invalid(
                            "BILLING_AUTH_FAILURES_PER_MINUTE must be at least 1".into(),
                        ));
                    }
                    Some(n) => n,
                },
                trust_forwarded_for: env_parse(env, "BILLING_TRUST_FORWARDED_FOR")?
                    .unwrap_or(false),
                key_cache_ttl: match env_parse::<u64>(env, "BILLING_KEY_CACHE_MS")? {
                    None => AuthSettings::default().key_cache_ttl,
                    Some(ms) if ms > 10_000 => {
                        return Err(ConfigError::Invalid(
                            "BILLING_KEY_CACHE_MS must be at most 10000 (revoked keys must stop working soon)".into(),
                        ));
                    }
                    Some(ms) => std::time::Duration::from_millis(ms),
                },
            },
            notify: NotifySettings::from_env(env)?,
            metrics: MetricsSettings {
                token: match get("BILLING_METRICS_TOKEN") {
                    Some(t) if t.len() < 16 || !t.chars().all(|c| c.is_ascii_graphic()) => {
                        return Err(ConfigError::Invalid(
                            "BILLING_METRICS_TOKEN must be at least 16 printable ASCII characters"
                                .into(),
                        ));
                    }
                    token => token,
                },
                listen: get("BILLING_METRICS_LISTEN"),
            },
        })
    }
}

/// `BILLING_LEDGER_*`: how postings are grouped into transactions.
fn batch_options(
    env: &HashMap<String, String>,
) -> Result<billing_store::BatchOptions, ConfigError> {
    let defaults = billing_store::BatchOptions::default();
    let within = |name: &str, value: Option<u64>, default: u64, max: u64| match value {
        None => Ok(default),
        Some(v) if (1..=max).contains(&v) => Ok(v),
        Some(_) => Err(ConfigError::Invalid(format!(
            "{name} must be between 1 and {max}"
        ))),
    };
    let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    let wait_us: u64 = env_parse(env, "BILLING_LEDGER_BATCH_WAIT_US")?
        .unwrap_or(u64::try_from(defaults.batch_wait.as_micros()).unwrap_or(0));
    if wait_us > 100_000 {
        return Err(ConfigError::Invalid(
            "BILLING_LEDGER_BATCH_WAIT_US must be at most 100000".into(),
        ));
    }
    Ok(billing_store::BatchOptions {
        shards: size(within(
            "BILLING_LEDGER_SHARDS",
            env_parse(env, "BILLING_LEDGER_SHARDS")?,
            defaults.shards as u64,
            64,
        )?),
        batch_max: size(within(
            "BILLING_LEDGER_BATCH_MAX",
            env_parse(env, "BILLING_LEDGER_BATCH_MAX")?,
            defaults.batch_max as u64,
            4096,
        )?),
        batch_wait: std::time::Duration::from_micros(wait_us),
        queue_max: size(within(
            "BILLING_LEDGER_QUEUE_MAX",
            env_parse(env, "BILLING_LEDGER_QUEUE_MAX")?,
            defaults.queue_max as u64,
            1_000_000,
        )?),
    })
}

/// The default gateway: the configured one, else the only real gateway configured, else the
/// sandbox. Never the sandbox by omission when real money can be taken: with both Stripe and
/// MyFatoorah configured and no default named, the configuration is refused.
fn default_gateway(
    configured: Option<String>,
    stripe: bool,
    myfatoorah: bool,
) -> Result<String, ConfigError> {
    if let Some(name) = configured {
        return Ok(name);
    }
    match (stripe, myfatoorah) {
        (false, false) => Ok("sandbox".into()),
        (true, false) => Ok("stripe".into()),
        (false, true) => Ok("myfatoorah".into()),
        (true, true) => Err(ConfigError::Invalid(
            "Stripe and MyFatoorah are both configured: set BILLING_DEFAULT_GATEWAY".into(),
        )),
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Toml {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn policy(file: Option<&TopUpFile>) -> Result<TopUpPolicy, ConfigError> {
    let mut policy = TopUpPolicy::default();
    let Some(file) = file else { return Ok(policy) };
    if let Some(code) = &file.currency {
        policy.currency =
            Currency::from_code(code).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    }
    if let Some(minimum) = file.minimum {
        policy.minimum = minimum.0;
    }
    if let Some(sales) = file.contact_sales_from {
        policy.contact_sales_from = sales.0;
    }
    if let Some(rate) = file.credits_per_unit {
        policy.credits_per_unit = rate.0;
    }
    if let Some(tiers) = &file.bonus_tiers {
        policy.bonus_tiers = tiers
            .iter()
            .map(|t| BonusTier {
                from: t.from.0,
                percent: t.percent.0,
            })
            .collect();
    }
    let positive = |d: Decimal| d > Decimal::ZERO;
    if !positive(policy.minimum)
        || !positive(policy.credits_per_unit)
        || policy.contact_sales_from <= policy.minimum
        || policy
            .bonus_tiers
            .iter()
            .any(|t| t.percent < Decimal::ZERO || t.percent > Decimal::ONE_HUNDRED)
    {
        return Err(ConfigError::Invalid(
            "[topup]: minimum and credits_per_unit must be positive, contact_sales_from above \
             the minimum, bonus percents between 0 and 100"
                .into(),
        ));
    }
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_need_nothing() {
        let config = Config::from_env(&env(&[])).expect("defaults");
        assert_eq!(config.listen, "127.0.0.1:8080");
        assert_eq!(config.database_url, "./data/billing.db");
        assert_eq!(config.default_gateway, "sandbox");
        assert_eq!(config.wallet_unit, "USD");
        assert_eq!(config.display_scale, 2);
        assert_eq!(config.packs.len(), 3);
        assert_eq!(config.policy, TopUpPolicy::default());
    }

    #[test]
    fn reads_a_toml_file() {
        let dir = std::env::temp_dir().join(format!("billing-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("billing.toml");
        std::fs::write(
            &path,
            r#"
[wallet]
unit = "credits"

[topup]
currency = "KWD"
minimum = "1.500"
contact_sales_from = 150
credits_per_unit = 1000
bonus_tiers = [{ from = "15", percent = 5 }]

[[packs]]
id = "pack_small"
name = "Small"
price = "1.500"
credits = 1500
"#,
        )
        .expect("write");
        let config = Config::from_env(&env(&[("BILLING_CONFIG", path.to_str().expect("utf-8"))]))
            .expect("config");
        assert_eq!(config.wallet_unit, "CREDITS");
        assert_eq!(config.display_scale, 0);
        assert_eq!(config.policy.currency.code(), "KWD");
        assert_eq!(config.policy.minimum, Decimal::new(15, 1));
        assert_eq!(config.packs[0].input.currency, "KWD");
        assert_eq!(config.packs[0].input.credits, Decimal::from(1500));

        std::fs::write(&path, "[topup]\nminimum = 5.5\n").expect("write");
        let err = Config::from_env(&env(&[("BILLING_CONFIG", path.to_str().expect("utf-8"))]))
            .expect_err("floats are refused");
        assert!(err.to_string().contains("float"), "{err}");
        std::fs::write(&path, "[wallet]\nunits = \"USD\"\n").expect("write");
        assert!(
            Config::from_env(&env(&[("BILLING_CONFIG", path.to_str().expect("utf-8"))])).is_err()
        );
    }

    #[test]
    fn gateways_from_the_file_and_the_environment() {
        let dir = std::env::temp_dir().join(format!("billing-config-gw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("billing.toml");
        std::fs::write(
            &path,
            r#"
default_gateway = "myfatoorah"

[stripe]
secret_key = "sk_file"
webhook_secrets = ["whsec_a", "whsec_b"]

[myfatoorah]
token = "mf_file"
webhook_secret = "mf_secret"
currency = "KWD"

[topup]
currency = "KWD"
minimum = "1"
contact_sales_from = "150"
"#,
        )
        .expect("write");
        let file = path.to_str().expect("utf-8");
        let config = Config::from_env(&env(&[("BILLING_CONFIG", file)])).expect("config");
        assert_eq!(config.default_gateway, "myfatoorah");
        assert!(
            !config.sandbox_enabled,
            "a real default gateway turns the sandbox off"
        );
        let stripe = config.stripe.expect("stripe");
        assert_eq!(stripe.secret_key, "sk_file");
        assert_eq!(stripe.webhook_secrets, ["whsec_a", "whsec_b"]);
        let mf = config.myfatoorah.expect("myfatoorah");
        assert_eq!((mf.token.as_str(), mf.currency.code()), ("mf_file", "KWD"));
        // The environment wins over the file.
        let config = Config::from_env(&env(&[
            ("BILLING_CONFIG", file),
            ("BILLING_STRIPE_WEBHOOK_SECRET", "whsec_env"),
            ("BILLING_DEFAULT_GATEWAY", "stripe"),
            ("BILLING_SANDBOX_ENABLED", "true"),
        ]))
        .expect("config");
        assert_eq!(config.default_gateway, "stripe");
        assert!(config.sandbox_enabled);
        assert_eq!(
            config.stripe.expect("stripe").webhook_secrets,
            ["whsec_env"]
        );
        // MyFatoorah's currency must be the top-up currency.
        let mismatch = Config::from_env(&env(&[
            ("BILLING_CONFIG", file),
            ("BILLING_MYFATOORAH_CURRENCY", "BHD"),
        ]));
        assert!(mismatch.is_err());
    }

    /// Configuring a real gateway without naming a default never leaves the sandbox (which
    /// pays without money) as the default.
    #[test]
    fn a_real_gateway_is_the_default_when_none_is_named() {
        let stripe = [
            ("BILLING_STRIPE_SECRET_KEY", "sk_x"),
            ("BILLING_STRIPE_WEBHOOK_SECRET", "whsec_x"),
        ];
        let config = Config::from_env(&env(&stripe)).expect("config");
        assert_eq!(config.default_gateway, "stripe");
        assert!(!config.sandbox_enabled);
        let config = Config::from_env(&env(&[("BILLING_MYFATOORAH_TOKEN", "t")])).expect("config");
        assert_eq!(config.default_gateway, "myfatoorah");
        assert!(!config.sandbox_enabled);
        let both = [stripe[0], stripe[1], ("BILLING_MYFATOORAH_TOKEN", "t")];
        assert!(Config::from_env(&env(&both)).is_err());
        let mut chosen = both.to_vec();
        chosen.push(("BILLING_DEFAULT_GATEWAY", "myfatoorah"));
        let config = Config::from_env(&env(&chosen)).expect("config");
        assert_eq!(config.default_gateway, "myfatoorah");
        assert!(!config.sandbox_enabled);
    }

    #[test]
    fn debug_output_leaves_out_secrets() {
        let config = Config::from_env(&env(&[
            (
                "BILLING_DATABASE_URL",
                "postgres://billing:hunter2@db.internal/billing",
            ),
            (
                "BILLING_ADMIN_KEY",
                "bk_admin_secret_0123456789abcdef0123456789",
            ),
            ("BILLING_SANDBOX_SECRET", "sandbox-secret-value"),
            ("BILLING_STRIPE_SECRET_KEY", "sk_live_secret"),
            ("BILLING_STRIPE_WEBHOOK_SECRET", "whsec_secret"),
        ]))
        .expect("config");
        let shown = format!("{config:?}");
        for secret in [
            "hunter2",
            "bk_admin_secret",
            "sandbox-secret",
            "sk_live",
            "whsec_",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("postgres://***@db.internal/billing"),
            "{shown}"
        );
    }

    #[test]
    fn refuses_bad_values() {
        for pairs in [
            vec![("BILLING_ADMIN_KEY", "short")],
            vec![("BILLING_PUBLIC_URL", "example.com")],
            vec![("BILLING_WORKERS", "many")],
            vec![("BILLING_WORKERS", "513")],
            vec![("BILLING_RECONCILE_INTERVAL_SECS", "0")],
            vec![("BILLING_HTTP_MAX_CONNECTIONS", "0")],
            vec![("BILLING_HTTP_MAX_CONNECTIONS", "1000001")],
            vec![("BILLING_HTTP_MAX_CONNECTIONS", "lots")],
        ] {
            assert!(Config::from_env(&env(&pairs)).is_err(), "{pairs:?}");
        }
    }

    #[test]
    fn http_connections_are_bounded_by_default_and_configurable() {
        let default = Config::from_env(&env(&[])).expect("config");
        assert_eq!(default.serving.max_connections, 10_000);
        assert_eq!(default.serving.workers, 0);
        let set = Config::from_env(&env(&[
            ("BILLING_HTTP_MAX_CONNECTIONS", "500"),
            ("BILLING_WORKERS", "3"),
        ]))
        .expect("config");
        assert_eq!(
            set.serving,
            billing_http::Serving {
                workers: 3,
                max_connections: 500
            }
        );
    }
}
