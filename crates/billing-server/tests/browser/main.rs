//! The customer dashboard in a real browser: headless Chromium driven through WebDriver
//! (Debian's `chromium` and `chromium-driver`) against the real server on a fresh SQLite
//! file. Screenshots of every page, at desktop and phone widths, go to
//! `target/screenshots/`.
//!
//! Without Chromium or its driver the suite prints SKIPPED, unless `BILLING_REQUIRE_BROWSER`
//! is set (CI sets it): then it fails.

#[allow(dead_code)]
#[path = "../it/helpers.rs"]
mod helpers;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use helpers::{ADMIN_KEY, Backend, spawn};
use reqwest::StatusCode;
use serde_json::json;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Chromium's driver and a WebDriver session, or `None` (announced) when not installed.
async fn browser() -> Option<(Driver, Client)> {
    if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
        assert!(
            std::env::var("BILLING_REQUIRE_BROWSER").is_err(),
            "BILLING_REQUIRE_BROWSER is set but {CHROMIUM} or {CHROMEDRIVER} is missing \
             (apt-get install chromium chromium-driver)"
        );
        let _ = writeln!(
            std::io::stderr().lock(),
            "SKIPPED: the browser suite did not run: install chromium and chromium-driver"
        );
        return None;
    }
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver(child);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": CHROMIUM,
            "args": ["--headless", "--no-sandbox", "--disable-gpu",
                     "--disable-background-networking", "--disable-dev-shm-usage",
                     "--window-size=1280,900"],
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return Some((driver, client)),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("chromedriver did not answer on {url}");
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

/// Saves the current page at desktop and phone widths.
async fn shoot(c: &Client, name: &str) {
    for (width, height, suffix) in [(1280, 900, "desktop"), (390, 844, "phone")] {
        c.set_window_size(width, height).await.expect("resize");
        let png = c.screenshot().await.expect("screenshot");
        std::fs::write(screenshots().join(format!("{name}-{suffix}.png")), png)
            .expect("write screenshot");
    }
    c.set_window_size(1280, 900).await.expect("resize");
}

async fn text(c: &Client, css: &str) -> String {
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .expect("text")
}

async fn click(c: &Client, css: &str) {
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

async fn fill(c: &Client, css: &str, value: &str) {
    let field = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    field.clear().await.expect("clear");
    field.send_keys(value).await.expect("type");
}

async fn title(c: &Client) -> String {
    c.title().await.expect("title")
}

/// Waits until `probe` holds (the page refreshes itself, a script updates it).
async fn until(c: &Client, what: &str, probe: impl Fn(String) -> bool, css: &str) -> String {
    for _ in 0..100 {
        if let Ok(element) = c.find(Locator::Css(css)).await
            && let Ok(t) = element.text().await
            && probe(t.clone())
        {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{what}: {css} never matched; page: {}",
        c.source().await.unwrap_or_default()
    );
}

/// Waits until the page's title starts with `prefix`.
async fn titled(c: &Client, prefix: &str) {
    for _ in 0..100 {
        if title(c).await.starts_with(prefix) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the title never became {prefix:?}: {}", title(c).await);
}

/// Waits until the browser is on a page whose path starts with `prefix`.
async fn at(c: &Client, prefix: &str) {
    for _ in 0..100 {
        if c.current_url()
            .await
            .is_ok_and(|u| u.path().starts_with(prefix))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = c
        .current_url()
        .await
        .map(|u| u.to_string())
        .unwrap_or_default();
    panic!(
        "never reached {prefix}: at {url}; page: {}",
        c.source().await.unwrap_or_default()
    );
}

/// Pays at the sandbox checkout the browser is on and comes back through the shop link.
async fn pay(c: &Client, screenshot: Option<&str>) {
    at(c, "/sandbox/checkout/").await;
    if let Some(name) = screenshot {
        shoot(c, name).await;
    }
    click(c, "button[value=\"paid\"]").await;
    click(c, "a[href^=\"/checkout/return/sandbox\"]").await;
}

async fn session_cookie(c: &Client) -> String {
    c.get_named_cookie("billing_session")
        .await
        .expect("the session cookie")
        .value()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_customer_uses_the_dashboard_in_a_real_browser() {
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let app = spawn(Backend::Sqlite, "browser", &[])
        .await
        .expect("server");
    let ada = app.customer("ada").await;
    let bob = app.customer("bob").await;
    let base = app.base.clone();

    // Signed out, the dashboard sends the visitor to sign in.
    c.goto(&format!("{base}/dashboard")).await.expect("open");
    assert_eq!(
        c.current_url().await.expect("url").path(),
        "/dashboard/sign-in"
    );
    assert!(title(&c).await.starts_with("Sign in"));
    shoot(&c, "01-sign-in").await;
    fill(&c, "#api_key", "bk_customer_not_a_key").await;
    click(&c, "button[type=submit]").await;
    assert!(text(&c, "[role=alert]").await.contains("does not work"));
    shoot(&c, "02-sign-in-error").await;
    fill(&c, "#api_key", &ada.key).await;
    click(&c, "button[type=submit]").await;
    at(&c, "/dashboard/billing").await;
    assert!(title(&c).await.starts_with("Billing"));
    assert_eq!(text(&c, "#balance").await, "0.00 USD");
    // The popular pack is marked in words, not only by colour.
    assert!(text(&c, ".pack.popular").await.contains("Most popular"));
    shoot(&c, "03-billing").await;

    // Buy the Pro pack ($20 → 25 credits) through the sandbox checkout.
    click(&c, "button[aria-label=\"Top up with Pro Pack\"]").await;
    pay(&c, Some("04-sandbox-checkout")).await;
    at(&c, "/dashboard/top-ups/top").await;
    until(&c, "pack top-up completes", |t| t == "Completed", "#status").await;
    assert_eq!(text(&c, "#new-balance").await, "25.00");
    shoot(&c, "05-top-up-completed").await;

    // A custom $50: the script previews +5% and 52.50 as it is typed.
    c.goto(&format!("{base}/dashboard/billing"))
        .await
        .expect("billing");
    assert_eq!(text(&c, "#balance").await, "25.00 USD");
    fill(&c, "#amount", "50").await;
    until(
        &c,
        "preview",
        |t| t.contains("52.50") && t.contains("+5%"),
        "#preview",
    )
    .await;
    shoot(&c, "06-billing-preview").await;
    click(&c, "#save-card").await;
    click(&c, "#custom-top-up").await;
    pay(&c, None).await;
    until(
        &c,
        "custom top-up completes",
        |t| t == "Completed",
        "#status",
    )
    .await;
    assert_eq!(text(&c, "#new-balance").await, "77.50");

    // Without the script the Preview button does the same; at the threshold, contact sales.
    c.goto(&format!("{base}/dashboard/billing?amount=500"))
        .await
        .expect("billing");
    let preview = text(&c, "#preview").await;
    assert!(preview.contains("sales"), "{preview}");
    assert!(
        c.find(Locator::Css("#custom-top-up[disabled]"))
            .await
            .is_ok()
    );

    // Both transactions of the custom top-up, the pack's, and paging through usage.
    let platform = app.platform_key(&ada.account_id).await;
    for _ in 0..30 {
        assert!(
            app.usage(&platform, &ada.account_id, "0.10")
                .await
                .is_success()
        );
    }
    c.goto(&format!("{base}/dashboard/transactions"))
        .await
        .expect("transactions");
    let rows = c.find_all(Locator::Css("tbody tr")).await.expect("rows");
    assert_eq!(rows.len(), 25);
    assert!(text(&c, "tbody tr").await.contains("-0.10"));
    shoot(&c, "07-transactions").await;
    click(&c, "a[rel=next]").await;
    let older = c.find_all(Locator::Css("tbody tr")).await.expect("rows");
    assert_eq!(
        older.len(),
        8,
        "30 usage + top-up + bonus + pack = 33 in all"
    );
    let page = c.source().await.expect("html");
    assert!(
        page.contains("+52.50") || page.contains("+2.50"),
        "the bonus entry is listed"
    );
    assert!(page.contains("+50.00") && page.contains("+25.00"));
    c.goto(&format!("{base}/dashboard/transactions?type=bonus"))
        .await
        .expect("filter");
    let bonus = c.find_all(Locator::Css("tbody tr")).await.expect("rows");
    assert_eq!(bonus.len(), 1);
    assert!(text(&c, "tbody tr").await.contains("+2.50"));
    c.back().await.expect("back");
    assert_eq!(
        c.find_all(Locator::Css("tbody tr"))
            .await
            .expect("rows")
            .len(),
        8
    );

    // The CSV download, with this session's cookie.
    let cookie = session_cookie(&c).await;
    let csv = app
        .client
        .get(app.url("/dashboard/transactions.csv"))
        .header("Cookie", format!("billing_session={cookie}"))
        .send()
        .await
        .expect("csv");
    assert_eq!(csv.status(), StatusCode::OK);
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/csv")
    );
    let body = csv.text().await.expect("body");
    let lines: Vec<&str> = body.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 34, "a header and 33 transactions");
    assert!(lines[0].starts_with("id,created_at,type,amount,balance_after"));
    assert!(
        lines[33].contains(",usage,-0.10,"),
        "oldest first: {}",
        lines[33]
    );

    // The top-up history with its status filter.
    c.goto(&format!("{base}/dashboard/top-ups"))
        .await
        .expect("top-ups");
    assert_eq!(
        c.find_all(Locator::Css("tbody tr"))
            .await
            .expect("rows")
            .len(),
        2
    );
    assert!(text(&c, "tbody").await.contains("Completed"));
    shoot(&c, "08-top-ups").await;
    c.goto(&format!("{base}/dashboard/top-ups?status=failed"))
        .await
        .expect("filter");
    assert!(
        c.find_all(Locator::Css("tbody tr"))
            .await
            .expect("rows")
            .is_empty()
    );

    // Settings: a validation error beside its field, then a saved limit.
    c.goto(&format!("{base}/dashboard/settings"))
        .await
        .expect("settings");
    shoot(&c, "09-settings").await;
    click(&c, "form[action$=\"spending-limit\"] input[name=enabled]").await;
    fill(&c, "#spending-limit-monthly_limit", "-5").await;
    click(&c, "form[action$=\"spending-limit\"] button[type=submit]").await;
    let error = text(&c, "#spending-limit-monthly_limit-error").await;
    assert!(error.contains("monthly_limit"), "{error}");
    shoot(&c, "10-settings-error").await;
    fill(&c, "#spending-limit-monthly_limit", "100").await;
    click(&c, "form[action$=\"spending-limit\"] button[type=submit]").await;
    assert_eq!(text(&c, "[role=status]").await, "Spending limit saved.");
    let (status, limit) = app.get("/v1/wallet/spending-limit", &ada.key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(limit["spending_limit"]["enabled"], true, "{limit}");
    assert_eq!(
        limit["spending_limit"]["monthly_limit"].to_string(),
        "100.00",
        "{limit}"
    );

    // A forged and a missing CSRF token are refused, and change nothing.
    for script in [
        "document.querySelector('form[action$=\"low-balance-alert\"] input[name=csrf]').value = 'forged'",
        "document.querySelector('form[action$=\"low-balance-alert\"] input[name=csrf]').remove()",
    ] {
        c.goto(&format!("{base}/dashboard/settings"))
            .await
            .expect("settings");
        click(
            &c,
            "form[action$=\"low-balance-alert\"] input[name=enabled]",
        )
        .await;
        fill(&c, "#low-balance-alert-threshold", "10").await;
        c.execute(script, vec![]).await.expect("script");
        click(
            &c,
            "form[action$=\"low-balance-alert\"] button[type=submit]",
        )
        .await;
        titled(&c, "Not allowed").await;
    }
    let (_, alert) = app.get("/v1/wallet/low-balance-alert", &ada.key).await;
    assert_eq!(alert["low_balance_alert"]["enabled"], false, "{alert}");

    // The card saved at the $50 checkout, and its removal.
    c.goto(&format!("{base}/dashboard/settings"))
        .await
        .expect("settings");
    assert!(text(&c, "#method").await.contains("via sandbox"));
    click(&c, "form[action$=\"payment-method/delete\"] button").await;
    until(
        &c,
        "removal",
        |t| t.starts_with("Payment method removed"),
        "[role=status]",
    )
    .await;
    assert!(text(&c, "#method").await.starts_with("None saved"));
    let (status, _) = app.get("/v1/wallet/payment-method", &ada.key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Another account's top-up answers 404, as a page.
    let theirs = app.top_up(&bob, json!({"pack_id": "pack_pro"})).await;
    let theirs = theirs["id"].as_str().expect("id");
    c.goto(&format!("{base}/dashboard/top-ups/{theirs}"))
        .await
        .expect("theirs");
    assert!(title(&c).await.starts_with("Page not found"));
    shoot(&c, "11-not-found").await;
    let direct = app
        .client
        .get(app.url(&format!("/dashboard/top-ups/{theirs}")))
        .header("Cookie", format!("billing_session={cookie}"))
        .send()
        .await
        .expect("theirs");
    assert_eq!(direct.status(), StatusCode::NOT_FOUND);

    // Sign out: the browser is sent to sign in, and the old cookie is refused everywhere.
    c.goto(&format!("{base}/dashboard/billing"))
        .await
        .expect("billing");
    click(&c, "form[action=\"/dashboard/sign-out\"] button").await;
    at(&c, "/dashboard/sign-in").await;
    c.goto(&format!("{base}/dashboard/transactions"))
        .await
        .expect("after");
    assert_eq!(
        c.current_url().await.expect("url").path(),
        "/dashboard/sign-in"
    );
    let replay = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(app.url("/dashboard/billing"))
        .header("Cookie", format!("billing_session={cookie}"))
        .send()
        .await
        .expect("replay");
    assert_eq!(replay.status(), StatusCode::SEE_OTHER);
    assert_eq!(replay.headers()["location"], "/dashboard/sign-in");

    // A platform or admin key cannot sign in to a customer's dashboard.
    fill(&c, "#api_key", ADMIN_KEY).await;
    click(&c, "button[type=submit]").await;
    assert!(
        text(&c, "[role=alert]")
            .await
            .contains("not a customer key")
    );
    c.close().await.expect("close");
}
