//! The composition root: builds the adapters from the configuration, builds the service,
//! starts the HTTP server and the reconciliation worker. No business logic lives here.

pub mod config;
mod statement;
pub mod system;
mod workers;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::web;
use billing_core::ids::{AccountId, PackId};
use billing_core::ports::{
    ApiKeyStore, EventSink, KeyScope, Notifier, PackStore, PaymentGateway, RateStore, Store,
    StoreError,
};
use billing_core::service::{Billing, Gateways, ManagePackError, OutboxDelivery};
use billing_http::auth::{AuthGuard, IssuedKey, issue_key, key_record};
use billing_http::drain::Drain;
use billing_http::metrics::MetricsEndpoint;
use billing_http::sandbox::SandboxGateway;
use billing_http::{AppState, WalletUnit};
use billing_myfatoorah::{MyFatoorahConfig, MyFatoorahGateway};
use billing_notify::{HttpEventSink, LogNotifier, NoEvents, SmtpNotifier};
use billing_store::{DieselStore, StoreOptions};
use billing_stripe::{StripeConfig, StripeGateway};

pub use config::{Config, ConfigError, NotifySettings};
pub use statement::{StatementRequest, write_statement};
use system::{RandomIds, SystemClock};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("database: {0}")]
    Database(#[from] billing_store::ConnectError),
    #[error("storage: {0}")]
    Store(#[from] billing_core::ports::StoreError),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// The service's pieces, built from the configuration (used by the server and by the admin
/// commands, which need no HTTP).
pub struct Parts {
    pub billing: Billing,
    pub store: Arc<DieselStore>,
    pub sandbox: Arc<SandboxGateway>,
    pub ids: Arc<RandomIds>,
}

/// The line `billing-server` prints on stdout once it listens: this prefix, then its base
/// URL. Scripts and tests that start the binary wait for it.
pub const LISTENING_LINE: &str = "billing service listening on ";

/// The base URL in a line of `billing-server`'s stdout, if it is [`LISTENING_LINE`].
pub fn listening_base(line: &str) -> Option<String> {
    line.strip_prefix(LISTENING_LINE)
        .map(|u| u.trim().to_owned())
}

/// Opens the database (running migrations), builds the gateways and the service, and seeds
/// the configured packs that do not exist yet.
pub async fn build(config: &Config, public_url: &str) -> Result<Parts, StartError> {
    let url = config.database_url.clone();
    let options = StoreOptions {
        max_connections: config.max_connections,
        batch: config.batch.clone(),
        acquire_timeout: std::time::Duration::from_millis(config.db_acquire_timeout_ms),
    };
    let store = tokio::task::spawn_blocking(move || DieselStore::connect(&url, &options))
        .await
        .map_err(|e| StartError::Invalid(format!("database task failed: {e}")))??;
    let store = Arc::new(store);
    let secret = match &config.sandbox_secret {
        Some(s) => s.as_bytes().to_vec(),
        None => {
            let mut random = [0u8; 32];
            rand::fill(&mut random);
            random.to_vec()
        }
    };
    let sandbox = Arc::new(SandboxGateway::new(public_url, secret));
    let mut gateways: Vec<Arc<dyn PaymentGateway>> = Vec::new();
    if config.sandbox_enabled {
        tracing::warn!(
            "the sandbox gateway is enabled: anyone can pay with it without money; \
             set BILLING_DEFAULT_GATEWAY to a real gateway in production"
        );
        gateways.push(sandbox.clone());
    }
    if let Some(stripe) = &config.stripe {
        let mut settings = StripeConfig::new(
            stripe.secret_key.clone(),
            stripe.webhook_secrets.clone(),
            public_url,
        );
        if let Some(base) = &stripe.api_base {
            settings.api_base = base.clone();
        }
        let gateway = StripeGateway::new(settings)
            .map_err(|e| StartError::Invalid(format!("Stripe: {e}")))?;
        gateways.push(Arc::new(gateway));
    }
    if let Some(mf) = &config.myfatoorah {
        let mut settings = MyFatoorahConfig::new(
            mf.token.clone(),
            mf.webhook_secret.clone(),
            mf.currency,
            public_url,
        );
        if let Some(base) = &mf.api_base {
            settings.api_base = base.clone();
        }
        let gateway = MyFatoorahGateway::new(settings)
            .map_err(|e| StartError::Invalid(format!("MyFatoorah: {e}")))?;
        gateways.push(Arc::new(gateway));
    }
    let gateways = Gateways::new(gateways, &config.default_gateway).ok_or_else(|| {
        StartError::Invalid(format!(
            "BILLING_DEFAULT_GATEWAY={:?} is not an enabled gateway (sandbox, or stripe/myfatoorah with their keys set)",
            config.default_gateway
        ))
    })?;
    let ids = Arc::new(RandomIds);
    let billing = Billing::new(
        store.clone() as Arc<dyn Store>,
        gateways,
        Arc::new(SystemClock),
        ids.clone(),
        config.policy.clone(),
    )
    .with_auto_topup_failures_max(config.notify.auto_topup_failures_max);
    for seed in &config.packs {
        if store.pack(&PackId::new(seed.id.clone())).await?.is_some() {
            continue;
        }
        match billing.create_pack(Some(&seed.id), &seed.input).await {
            Ok(_) | Err(ManagePackError::Exists) => {}
            Err(e) => {
                return Err(StartError::Invalid(format!("pack {}: {e}", seed.id)));
            }
        }
    }
    for seed in &config.rates {
        if store.rate(&seed.model).await?.is_none() {
            store.upsert_rate(seed, billing.now()).await?;
        }
    }
    Ok(Parts {
        billing,
        store,
        sandbox,
        ids,
    })
}

/// Makes sure an admin key exists: `BILLING_ADMIN_KEY` if set, else on an empty database a
/// new key, returned so that it is shown once.
pub async fn ensure_admin_key(
    parts: &Parts,
    configured: Option<&str>,
) -> Result<Option<String>, StartError> {
    let now = parts.billing.now();
    if let Some(secret) = configured {
        let record = key_record(secret, KeyScope::Admin, None, parts.ids.as_ref(), now);
        if parts.store.key_by_hash(&record.hash).await?.is_none() {
            match parts.store.insert_key(&record).await {
                // Another process starting at the same time inserted it first.
                Err(StoreError::Duplicate(_))
                    if parts.store.key_by_hash(&record.hash).await?.is_some() => {}
                other => other?,
            }
        }
        return Ok(None);
    }
    if parts.store.has_admin_key().await? {
        return Ok(None);
    }
    let issued = issue_key(KeyScope::Admin, None, parts.ids.as_ref(), now);
    parts.store.insert_key(&issued.record).await?;
    Ok(Some(issued.secret))
}

/// Issues a key from the command line.
pub async fn issue_key_for(
    parts: &Parts,
    scope: KeyScope,
    account: Option<&str>,
) -> Result<IssuedKey, StartError> {
    let account = match account {
        Some(id) => Some(
            parts
                .billing
                .account(&AccountId::new(id))
                .await?
                .ok_or_else(|| StartError::Invalid(format!("no account {id}")))?
                .id,
        ),
        None if scope == KeyScope::Customer => {
            return Err(StartError::Invalid("a customer key needs --account".into()));
        }
        None => None,
    };
    let issued = issue_key(scope, account, parts.ids.as_ref(), parts.billing.now());
    parts.store.insert_key(&issued.record).await?;
    Ok(issued)
}

/// A running service.
pub struct Running {
    pub server: Server,
    /// `http://host:port` as bound.
    pub base_url: String,
    /// `http://host:port/metrics` on `BILLING_METRICS_LISTEN`, as bound.
    pub metrics_url: Option<String>,
    /// An admin key created at this start (empty database, no `BILLING_ADMIN_KEY`).
    pub new_admin_key: Option<String>,
    pub billing: Billing,
    /// Its ledger writers are closed once the server has stopped.
    store: Arc<DieselStore>,
    reconciler: tokio::task::JoinHandle<()>,
    expirer: tokio::task::JoinHandle<()>,
    outbox: tokio::task::JoinHandle<()>,
    drain: Arc<Drain>,
}

impl Running {
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Runs until the server is stopped through its [`handle`](Self::handle), then stops
    /// the workers and closes the ledger writers (each commits what is queued and closes its
    /// connection, so that none is still closing one when the process exits). Installs no
    /// signal handler (embedders and tests keep theirs).
    pub async fn wait(self) -> std::io::Result<()> {
        let result = self.server.await;
        // Aborted and awaited, so that none of them is still posting when the writers close.
        for task in [self.reconciler, self.expirer, self.outbox] {
            task.abort();
            let _ = task.await;
        }
        let store = self.store;
        if tokio::task::spawn_blocking(move || store.close_ledger())
            .await
            .is_err()
        {
            tracing::warn!("closing the ledger writers failed");
        }
        result
    }

    /// [`wait`](Self::wait), and on SIGTERM or SIGINT drains first: new requests answer
    /// `503 shutting_down`, `/readyz` answers `draining`, and the server stops once every
    /// accepted request is answered (at most [`DRAIN_TIMEOUT`]). What `billing-server` runs.
    /// The signals are listened for from this call on (call it before announcing the
    /// process); the drain happens while the returned future runs.
    pub fn serve_until_shutdown(self) -> impl Future<Output = std::io::Result<()>> {
        let mut signals = ShutdownSignals::install();
        async move {
            let (handle, drain) = (self.server.handle(), self.drain.clone());
            let on_signal = tokio::spawn(async move {
                signals.recv().await;
                drain.start();
                tracing::info!(
                    in_flight = drain.in_flight(),
                    "shutting down: refusing new requests, answering those in flight"
                );
                let drained = tokio::select! {
                    drained = drain.idle(DRAIN_TIMEOUT) => Some(drained),
                    () = signals.recv() => None,
                };
                match drained {
                    Some(true) => tracing::info!("every accepted request answered; stopping"),
                    Some(false) => tracing::warn!(
                        in_flight = drain.in_flight(),
                        "requests still in flight after the drain timeout; stopping anyway"
                    ),
                    None => {
                        tracing::warn!("a second signal: stopping without waiting");
                        handle.stop(false).await;
                        return;
                    }
                }
                handle.stop(true).await;
            });
            let result = self.wait().await;
            on_signal.abort();
            result
        }
    }
}

/// The longest a shutdown waits for requests in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// SIGTERM (an orchestrator's stop) and SIGINT (Ctrl-C), listened for from the moment
/// this is made (before the process says it listens: a stop right after start drains too).
struct ShutdownSignals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    fn install() -> ShutdownSignals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for {name}: it will not drain");
                    None
                }
            };
            ShutdownSignals {
                term: listen(SignalKind::terminate(), "SIGTERM"),
                interrupt: listen(SignalKind::interrupt(), "SIGINT"),
            }
        }
        #[cfg(not(unix))]
        ShutdownSignals {}
    }

    /// The next SIGTERM or SIGINT.
    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = next(&mut self.term) => {}
                () = next(&mut self.interrupt) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Starts the service: binds, builds, seeds, starts the HTTP server and the reconciliation
/// worker.
/// How far behind the newest ledger entry this machine's clock may be at start.
pub const CLOCK_BEHIND_MAX_SECS: i64 = 300;

/// Refuses to serve with a clock far behind the newest ledger entry: its entries would be
/// dated before ones already written, months and hold expiries would be judged in the past.
async fn check_clock(parts: &Parts) -> Result<(), StartError> {
    let now = parts.billing.now();
    if let Some(newest) = parts.store.newest_entry_at().await?
        && newest.as_secs() - now.as_secs() > CLOCK_BEHIND_MAX_SECS
    {
        return Err(StartError::Invalid(format!(
            "this machine's clock ({}) is {} s behind the newest ledger entry ({}); fix the \
             clock (NTP) before starting: entries would be dated before ones already written",
            now.to_rfc3339(),
            newest.as_secs() - now.as_secs(),
            newest.to_rfc3339()
        )));
    }
    Ok(())
}

pub async fn start(config: Config) -> Result<Running, StartError> {
    let listener = TcpListener::bind(&config.listen).map_err(|source| StartError::Listen {
        address: config.listen.clone(),
        source,
    })?;
    let address = listener.local_addr().map_err(|source| StartError::Listen {
        address: config.listen.clone(),
        source,
    })?;
    let base_url = format!("http://{address}");
    let metrics_listener = match &config.metrics.listen {
        Some(listen) => Some(
            TcpListener::bind(listen).map_err(|source| StartError::Listen {
                address: listen.clone(),
                source,
            })?,
        ),
        None => None,
    };
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| base_url.clone());
    let parts = build(&config, &public_url).await?;
    check_clock(&parts).await?;
    parts
        .sandbox
        .set_webhook_target(config.sandbox_webhook_url.as_deref().unwrap_or(&base_url));
    let new_admin_key = ensure_admin_key(&parts, config.admin_key.as_deref()).await?;
    let drain = Arc::new(Drain::default());
    let state = web::Data::new(AppState {
        billing: parts.billing.clone(),
        unit: WalletUnit {
            code: config.wallet_unit.clone(),
            display_scale: config.display_scale,
        },
        ids: parts.ids.clone(),
        sandbox: config.sandbox_enabled.then(|| parts.sandbox.clone()),
        auth: AuthGuard::new(config.auth.clone()),
        dashboard: config.dashboard.clone(),
        drain: drain.clone(),
        metrics: metrics_endpoint(&config, &parts, metrics_listener.as_ref()),
    });
    let metrics_address = state.metrics.listen_address;
    let server = billing_http::serve(state, listener, metrics_listener, config.serving).map_err(
        |source| StartError::Listen {
            address: config.listen.clone(),
            source,
        },
    )?;
    let delivery = OutboxDelivery::new(
        parts.billing.clone(),
        notifier(&config.notify)?,
        event_sink(&config.notify)?,
        config.notify.retry,
        Some(public_url.clone()),
    );
    let outbox = tokio::spawn(workers::deliver_outbox_forever(
        delivery,
        Duration::from_millis(config.notify.interval_ms),
    ));
    let reconciler = tokio::spawn(workers::reconcile_forever(
        parts.billing.clone(),
        config.reconcile_after_secs,
        config.reconcile_interval_secs,
    ));
    let expirer = tokio::spawn(workers::expire_holds_forever(
        parts.billing.clone(),
        config.hold_expiry_interval_secs,
    ));
    tracing::info!(
        listen = %address,
        public_url,
        database = parts.store.backend(),
        gateway = config.default_gateway,
        gateways = ?parts.billing.gateways().names().collect::<Vec<_>>(),
        metrics = ?metrics_address,
        "billing service started"
    );
    Ok(Running {
        server,
        base_url,
        metrics_url: metrics_address.map(|a| format!("http://{a}/metrics")),
        new_admin_key,
        billing: parts.billing,
        store: parts.store,
        reconciler,
        expirer,
        outbox,
        drain,
    })
}

/// `/metrics`: the recorder (when the settings turn it on), the metrics listener's address,
/// and the pool gauges read at each scrape.
fn metrics_endpoint(
    config: &Config,
    parts: &Parts,
    metrics_listener: Option<&TcpListener>,
) -> MetricsEndpoint {
    let on = config.metrics.token.is_some() || config.metrics.listen.is_some();
    let store = parts.store.clone();
    MetricsEndpoint {
        handle: if on {
            billing_http::metrics::recorder()
        } else {
            None
        },
        settings: config.metrics.clone(),
        listen_address: metrics_listener.and_then(|l| l.local_addr().ok()),
        refresh: Some(Arc::new(move || {
            let pool = store.pool_state();
            for (state, value) in [
                ("in_use", pool.in_use),
                ("idle", pool.idle),
                ("max", pool.max),
            ] {
                metrics::gauge!("billing_db_pool_connections", "state" => state)
                    .set(f64::from(value));
            }
        })),
    }
}

/// Email over SMTP when `BILLING_SMTP_URL` is set, else to the log.
fn notifier(settings: &NotifySettings) -> Result<Arc<dyn Notifier>, StartError> {
    match (&settings.smtp_url, &settings.email_from) {
        (Some(url), Some(from)) => SmtpNotifier::new(url, from)
            .map(|n| Arc::new(n) as Arc<dyn Notifier>)
            .map_err(|e| StartError::Invalid(e.to_string())),
        _ => {
            tracing::info!("no BILLING_SMTP_URL: customer emails are written to the log");
            Ok(Arc::new(LogNotifier))
        }
    }
}

/// Signed events when `BILLING_EVENTS_URL` is set, else none.
fn event_sink(settings: &NotifySettings) -> Result<Arc<dyn EventSink>, StartError> {
    match (&settings.events_url, &settings.events_secret) {
        (Some(url), Some(secret)) => HttpEventSink::new(url, secret)
            .map(|s| Arc::new(s) as Arc<dyn EventSink>)
            .map_err(StartError::Invalid),
        _ => Ok(Arc::new(NoEvents)),
    }
}
