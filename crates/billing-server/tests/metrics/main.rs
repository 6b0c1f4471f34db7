//! `GET /metrics`: scraped over HTTP and parsed as Prometheus text (version 0.0.4). The
//! recorder is the process's: this test binary holds one test, which runs its servers one
//! after the other, so that the growth between two scrapes is exactly what it did.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::{Method, StatusCode};
use serde_json::json;

#[allow(dead_code)]
#[path = "../it/helpers.rs"]
mod helpers;

use helpers::{Backend, TestApp, spawn};

const TOKEN: &str = "metrics-token-0123456789";

/// One sample: its labels and value.
type Samples = Vec<(String, BTreeMap<String, String>, f64)>;

/// Parses the text format: `# HELP`/`# TYPE` lines (types returned by name), then
/// `name{label="value",…} number` samples; anything else fails the test.
fn parse(text: &str) -> (BTreeMap<String, String>, Samples) {
    let (mut types, mut samples) = (BTreeMap::new(), Vec::new());
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");
        let (series, value) = line.rsplit_once(' ').expect("a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("a number: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let mut labels = BTreeMap::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                    labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                }
                (name.to_owned(), labels)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{name}"
        );
        samples.push((name, labels, value));
    }
    (types, samples)
}

/// The value of `name` whose labels include every one of `want` (summed over the rest).
fn value(samples: &Samples, name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.get(*k).is_some_and(|l| l == v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

async fn scrape(app: &TestApp, url: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut request = app.client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("scrape");
    (response.status(), response.text().await.expect("body"))
}

/// One test: the servers run one after the other (see the module's comment).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_are_scraped_parsed_and_exact() {
    metrics_count_what_happened(Backend::Sqlite).await;
    metrics_count_what_happened(Backend::Postgres).await;
    metrics_listener_alone_keeps_the_main_port_closed(Backend::Sqlite).await;
}

async fn metrics_count_what_happened(backend: Backend) {
    let Some(app) = spawn(
        backend,
        "metrics",
        &[
            ("BILLING_METRICS_TOKEN", TOKEN),
            ("BILLING_METRICS_LISTEN", "127.0.0.1:0"),
        ],
    )
    .await
    else {
        return;
    };
    let main = app.url("/metrics");
    let side = app.metrics_url.clone().expect("a metrics listener");
    // The token is needed on both listeners.
    assert_eq!(scrape(&app, &main, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(scrape(&app, &side, None).await.0, StatusCode::UNAUTHORIZED);
    let ada = app.customer("ada").await;
    // More wrong tokens, on either spelling of the path (`/%6Detrics` is `/metrics` once
    // decoded, as the router sees it), than failed authentications allowed a minute (20):
    // the metrics token is no API key, so they throttle nobody.
    let encoded = app.url("/%6Detrics");
    for n in 0..45 {
        let path = if n % 2 == 0 { &main } else { &encoded };
        let wrong = scrape(&app, path, Some("metrics-token-wrong-wrong")).await;
        assert_eq!(wrong.0, StatusCode::UNAUTHORIZED, "{path}");
    }
    let scheme = app
        .client
        .get(&main)
        .header("Authorization", format!("bearer {TOKEN}"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(
        scheme.status(),
        StatusCode::OK,
        "the scheme is case-insensitive"
    );
    assert_eq!(
        app.get("/v1/wallet/balance", &ada.key).await.0,
        StatusCode::OK
    );
    // The metrics listener serves nothing else.
    let side_base = side.trim_end_matches("/metrics").to_owned();
    let api = app
        .client
        .get(format!("{side_base}/v1/wallet/balance"))
        .bearer_auth(&ada.key)
        .send()
        .await
        .expect("answered");
    assert_eq!(api.status(), StatusCode::NOT_FOUND);

    let (status, before) = scrape(&app, &main, Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{before}");
    let (_, before) = parse(&before);

    let platform = app.platform_key(&ada.account_id).await;
    app.grant(&ada.account_id, "10").await;
    for _ in 0..3 {
        let status = app.usage(&platform, &ada.account_id, "0.25").await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let topup = app.top_up(&ada, json!({"pack_id": "pack_pro"})).await;
    app.press(topup["checkout_url"].as_str().expect("url"), "paid")
        .await;
    let (forged, _) = app.sandbox_event(&topup, "not-the-secret", helpers::now_secs());
    let (status, _) = app.deliver(forged, "t=1,v1=00").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app.get("/no/such/route", &platform).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Any method name a client makes up is one label value, `other`.
    for name in ["FOO", "BAR123"] {
        let method = Method::from_bytes(name.as_bytes()).expect("method");
        let response = app
            .client
            .request(method, app.url("/v1/wallet/balance"))
            .send()
            .await
            .expect("answered");
        assert!(response.status().is_client_error(), "{name}");
    }

    let response = app
        .client
        .get(&side)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), StatusCode::OK);
    let kind = response.headers()["content-type"]
        .to_str()
        .expect("type")
        .to_owned();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    let (types, after) = parse(&response.text().await.expect("body"));
    let grew =
        |name: &str, want: &[(&str, &str)]| value(&after, name, want) - value(&before, name, want);

    for (name, kind) in [
        ("billing_http_requests_total", "counter"),
        ("billing_http_request_duration_seconds", "histogram"),
        ("billing_ledger_entries_total", "counter"),
        ("billing_ledger_amount_units_total", "counter"),
        ("billing_topups_total", "counter"),
        ("billing_webhooks_total", "counter"),
        ("billing_webhook_verification_failures_total", "counter"),
        ("billing_reconciliation_runs_total", "counter"),
        ("billing_outbox_depth", "gauge"),
        ("billing_outbox_oldest_age_seconds", "gauge"),
        ("billing_db_pool_connections", "gauge"),
        ("billing_db_pool_wait_seconds", "histogram"),
        ("billing_ledger_batch_postings", "histogram"),
        ("billing_ledger_batch_seconds", "histogram"),
        ("billing_ledger_posting_phase_seconds", "histogram"),
    ] {
        assert_eq!(types.get(name).map(String::as_str), Some(kind), "{name}");
    }
    let usage = [
        ("method", "POST"),
        ("route", "/v1/usage"),
        ("status", "201"),
    ];
    assert_eq!(grew("billing_http_requests_total", &usage), 3.0);
    let unmatched = [("route", "unmatched"), ("status", "404")];
    assert_eq!(grew("billing_http_requests_total", &unmatched), 1.0);
    assert_eq!(
        grew("billing_http_requests_total", &[("method", "other")]),
        2.0
    );
    let methods: BTreeSet<&str> = after
        .iter()
        .filter(|(n, _, _)| n == "billing_http_requests_total")
        .filter_map(|(_, labels, _)| labels.get("method").map(String::as_str))
        .collect();
    let known = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
    ];
    assert!(methods.iter().all(|m| known.contains(m)), "{methods:?}");
    let timed = [("method", "POST"), ("route", "/v1/usage"), ("le", "+Inf")];
    assert_eq!(
        grew("billing_http_request_duration_seconds_bucket", &timed),
        3.0
    );
    assert_eq!(
        grew("billing_http_request_duration_seconds_count", &timed[..2]),
        3.0
    );
    let debits = [("type", "usage"), ("direction", "debit")];
    assert_eq!(grew("billing_ledger_entries_total", &debits), 3.0);
    assert_eq!(
        grew("billing_ledger_amount_units_total", &debits),
        750_000_000.0
    );
    let granted = [("type", "bonus"), ("direction", "credit")];
    assert_eq!(grew("billing_ledger_amount_units_total", &granted), 10e9);
    let paid = [("type", "topup"), ("direction", "credit")];
    assert_eq!(
        grew("billing_ledger_amount_units_total", &paid),
        25e9,
        "pack_pro: 25 credits"
    );
    for status in ["created", "completed"] {
        let topups = [("gateway", "sandbox"), ("status", status)];
        assert_eq!(grew("billing_topups_total", &topups), 1.0, "{status}");
    }
    let sandbox = [("gateway", "sandbox")];
    assert_eq!(
        grew("billing_webhook_verification_failures_total", &sandbox),
        1.0
    );
    for (outcome, count) in [("completed", 1.0), ("refused", 1.0)] {
        let webhooks = [("gateway", "sandbox"), ("outcome", outcome)];
        assert_eq!(
            grew("billing_webhooks_total", &webhooks),
            count,
            "{outcome}"
        );
    }
    // The reconciliation worker's first round runs at start.
    let rounds = value(
        &after,
        "billing_reconciliation_runs_total",
        &[("outcome", "ok")],
    );
    assert!(rounds >= 1.0);
    // BILLING_DB_MAX_CONNECTIONS=8, and the ledger writers' own connections on top.
    let max = value(&after, "billing_db_pool_connections", &[("state", "max")]);
    assert!((8.0..=16.0).contains(&max), "{max}");
    assert!(
        value(
            &after,
            "billing_db_pool_connections",
            &[("state", "in_use")]
        ) <= max
    );
    assert!(grew("billing_db_pool_wait_seconds_count", &[]) >= 1.0);
    // The grant and the three debits, each alone in its ledger-writer transaction.
    assert_eq!(grew("billing_ledger_batch_postings_count", &[]), 4.0);
    assert_eq!(grew("billing_ledger_batch_postings_sum", &[]), 4.0);
    assert_eq!(grew("billing_ledger_batch_seconds_count", &[]), 4.0);
    assert!(grew("billing_ledger_batch_seconds_sum", &[]) > 0.0);
    // Every posting transaction that committed timed its four phases: the writers' four
    // batches (the top-up's settle is not a posting transaction, and is not timed).
    let phases = ["read", "decide", "write", "commit"];
    let counts: Vec<f64> = phases
        .iter()
        .map(|p| {
            grew(
                "billing_ledger_posting_phase_seconds_count",
                &[("phase", p)],
            )
        })
        .collect();
    assert_eq!(counts[0], 4.0, "{counts:?}");
    assert!(counts.iter().all(|c| *c == counts[0]), "{counts:?}");
    for phase in phases {
        let spent = grew(
            "billing_ledger_posting_phase_seconds_sum",
            &[("phase", phase)],
        );
        assert!(spent > 0.0, "{phase}: {spent}");
        // Its buckets start at 10 µs, under the 1 ms of the other `_seconds` series.
        let finest = [("phase", phase), ("le", "0.00001")];
        assert!(
            after.iter().any(
                |(n, labels, _)| n == "billing_ledger_posting_phase_seconds_bucket"
                    && finest
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            ),
            "{phase}: no 10 µs bucket"
        );
    }
    // SQLite's checkpointer times the writer lock it held, a round after those writes
    // (within 100 ms).
    let held = "billing_sqlite_checkpoint_lock_seconds_count";
    if matches!(backend, Backend::Sqlite) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (kinds, now) = parse(&scrape(&app, &main, Some(TOKEN)).await.1);
            if value(&now, held, &[]) > value(&after, held, &[]) {
                assert_eq!(
                    kinds
                        .get("billing_sqlite_checkpoint_lock_seconds")
                        .map(String::as_str),
                    Some("histogram")
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpointer round was timed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    for gauge in ["billing_outbox_depth", "billing_outbox_oldest_age_seconds"] {
        assert!(
            after.iter().any(|(n, _, _)| n == gauge),
            "{gauge} has a sample"
        );
    }
}

/// Without a token, `/metrics` answers only on its own listener; with neither, nowhere.
async fn metrics_listener_alone_keeps_the_main_port_closed(backend: Backend) {
    let Some(app) = spawn(
        backend,
        "metrics_listen",
        &[("BILLING_METRICS_LISTEN", "127.0.0.1:0")],
    )
    .await
    else {
        return;
    };
    let side = app.metrics_url.clone().expect("a metrics listener");
    let (status, text) = scrape(&app, &side, None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(
        text.contains("# TYPE billing_db_pool_connections gauge"),
        "{text}"
    );
    let (status, body) = scrape(&app, &app.url("/metrics"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("\"code\""), "a JSON error: {body}");
    drop(app);
    let Some(closed) = spawn(backend, "metrics_off", &[]).await else {
        return;
    };
    let (status, _) = scrape(&closed, &closed.url("/metrics"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
