//! Statements: `GET /v1/wallet/transactions` with `Accept: text/csv` and
//! `billing-server statement`. Each is parsed as RFC 4180 (CRLF records, quoted fields) and
//! compared with the JSON ledger to the last digit.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, Backend, dec, ledger_sum, rand_suffix, spawn};

/// An RFC 4180 reader: every record ends with CRLF, a quoted field may hold commas, CRLF
/// and doubled quotes, and nothing else may follow a closing quote.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    field.push('"');
                    chars.next();
                } else {
                    quoted = false;
                    assert!(
                        matches!(chars.peek(), Some(',' | '\r')),
                        "a closing quote ends its field"
                    );
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' => {
                assert!(field.is_empty(), "a quote opens a field or is doubled");
                quoted = true;
            }
            ',' => row.push(std::mem::take(&mut field)),
            '\r' => {
                assert_eq!(chars.next(), Some('\n'), "records end with CRLF");
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            '\n' => panic!("a bare LF outside quotes"),
            c => field.push(c),
        }
    }
    assert!(
        !quoted && field.is_empty() && row.is_empty(),
        "the last record ends with CRLF"
    );
    rows
}

const HEADER: [&str; 11] = [
    "id",
    "created_at",
    "type",
    "amount",
    "balance_after",
    "currency",
    "description",
    "reference",
    "model",
    "input_tokens",
    "output_tokens",
];

async fn csv(
    app: &crate::helpers::TestApp,
    key: &str,
    query: &str,
    accept: &str,
) -> (StatusCode, String, String) {
    let response = app
        .client
        .get(app.url(&format!("/v1/wallet/transactions{query}")))
        .bearer_auth(key)
        .header("Accept", accept)
        .send()
        .await
        .expect("answered");
    let status = response.status();
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, kind, response.text().await.expect("body"))
}

pub async fn statements_are_the_ledger_as_csv(backend: Backend) {
    let Some(app) = spawn(backend, "statements", &[]).await else {
        return;
    };
    let ada = app.customer("ada").await;
    let bob = app.customer("bob").await;
    let platform = app.platform_key(&ada.account_id).await;
    app.grant(&ada.account_id, "100").await;
    app.grant(&bob.account_id, "5").await;
    // The debits in a later second than the grants (times are shown to the second).
    let granted = crate::helpers::now_secs();
    while crate::helpers::now_secs() == granted {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for amount in ["0.1", "1.05", "0.000000001", "2.5"] {
        assert_eq!(
            app.usage(&platform, &ada.account_id, amount).await,
            StatusCode::CREATED
        );
    }
    // Text a spreadsheet would run, with a comma and quotes (control characters are refused
    // when a description is written).
    let tricky = "=HYPERLINK(\"x\"), \"quoted\"";
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/usage",
            Some(&platform),
            Some(json!({"account_id": ada.account_id, "amount": "0.25", "description": tricky})),
            &[("Idempotency-Key", &format!("tricky-{}", rand_suffix()))],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (status, kind, text) = csv(&app, &ada.key, "", "text/csv").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(kind.starts_with("text/csv"), "{kind}");
    let rows = parse_csv(&text);
    assert_eq!(rows[0], HEADER);
    let mut json: Vec<Value> = app.all_transactions(&ada).await;
    json.reverse();
    assert_eq!(rows.len() - 1, json.len(), "one row a transaction");
    for (row, t) in rows[1..].iter().zip(&json) {
        assert_eq!(row.len(), HEADER.len());
        assert_eq!(row[0], t["id"].as_str().expect("id"), "oldest first");
        assert_eq!(row[1], t["created_at"].as_str().expect("created_at"));
        assert_eq!(row[2], t["type"].as_str().expect("type"));
        assert_eq!(dec(&row[3]), dec(&t["amount"].to_string()), "exact amount");
        assert_eq!(dec(&row[4]), dec(&t["balance_after"].to_string()));
        assert_eq!(row[5], "USD");
    }
    let amounts: Vec<&str> = rows[1..].iter().map(|r| r[3].as_str()).collect();
    assert!(amounts.contains(&"-0.000000001"), "{amounts:?}");
    let last = rows.last().expect("rows");
    assert_eq!(last[6], format!("'{tricky}"), "a formula is defused");
    let total = rows[1..]
        .iter()
        .map(|r| dec(&r[3]))
        .sum::<billing_core::Decimal>();
    assert_eq!(total, ledger_sum(&json));
    assert_eq!(dec(&last[4]), dec(&app.balance(&ada).await));
    // Bob's statement holds only Bob's grant.
    let (_, _, theirs) = csv(&app, &bob.key, "", "text/csv").await;
    assert_eq!(parse_csv(&theirs).len(), 2);

    // A period, and a type; JSON takes the period too.
    let today = &json[0]["created_at"].as_str().expect("created_at")[..10];
    let debits_from = json[1]["created_at"]
        .as_str()
        .expect("created_at")
        .to_owned();
    let (status, _, text) = csv(&app, &ada.key, &format!("?from={today}"), "text/csv").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(parse_csv(&text).len(), json.len() + 1);
    let (_, _, text) = csv(&app, &ada.key, &format!("?to={today}"), "text/csv").await;
    assert_eq!(parse_csv(&text).len(), 1, "only the header before today");
    let (_, _, text) = csv(&app, &ada.key, &format!("?from={debits_from}"), "text/csv").await;
    let debits = parse_csv(&text);
    assert_eq!(
        debits.len(),
        6,
        "the five debits, not the grant before them"
    );
    assert_eq!(debits[1][0], json[1]["id"].as_str().expect("id"));
    let (_, _, text) = csv(&app, &ada.key, &format!("?to={debits_from}"), "text/csv").await;
    let grant = parse_csv(&text);
    assert_eq!(grant.len(), 2, "the grant alone");
    assert_eq!(grant[1][0], json[0]["id"].as_str().expect("id"));
    let (_, _, text) = csv(
        &app,
        &ada.key,
        "?type=usage",
        "application/json;q=0.5, text/csv",
    )
    .await;
    assert_eq!(parse_csv(&text).len(), 6, "five debits");
    let (status, body) = app
        .get(&format!("/v1/wallet/transactions?to={today}"), &ada.key)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["transactions"], json!([]));
    // JSON stays the default, and wins where it is preferred.
    let (_, kind, _) = csv(&app, &ada.key, "", "text/csv;q=0.4, application/json").await;
    assert!(kind.starts_with("application/json"), "{kind}");

    // Bad periods and CSV with paging are refused with a code.
    for (query, accept, status, code) in [
        ("?from=yesterday", "text/csv", 400, "invalid_request"),
        ("?to=2026-02-30", "application/json", 400, "invalid_request"),
        ("?from=", "application/json", 400, "invalid_request"),
        (
            "?from=2026-12-02&to=2026-12-01",
            "text/csv",
            422,
            "invalid_period",
        ),
        (
            "?from=2026-12-01&to=2026-12-01",
            "application/json",
            422,
            "invalid_period",
        ),
        ("?limit=5", "text/csv", 400, "invalid_request"),
        ("?type=gift", "text/csv", 400, "invalid_request"),
    ] {
        let (got, _, text) = csv(&app, &ada.key, query, accept).await;
        assert_eq!(got.as_u16(), status, "{query} {accept}: {text}");
        let body: Value = serde_json::from_str(&text).expect("a JSON error");
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    // A statement is a customer's: admin and platform keys name no wallet here.
    let (status, _, _) = csv(&app, ADMIN_KEY, "", "text/csv").await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // `billing-server statement` writes the same document.
    let url = app.database.clone().expect("database");
    let dir = std::env::temp_dir().join(format!("statement-{}", rand_suffix()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("ada.csv");
    let file_arg = file.to_str().expect("utf-8");
    let done = tokio::task::spawn_blocking({
        let (url, account, file_arg) = (url.clone(), ada.account_id.clone(), file_arg.to_owned());
        move || statement_cli(&url, &["--account", &account, "--output", &file_arg])
    })
    .await
    .expect("task");
    let said = String::from_utf8_lossy(&done.stderr).into_owned();
    assert!(done.status.success(), "{said}");
    assert_eq!(
        std::fs::read_to_string(&file).expect("written"),
        text_of(&app, &ada.key).await
    );
    assert!(
        said.contains(&format!("{} transaction(s)", json.len()))
            && said.contains("opening balance 0.00 USD")
            && said.contains(&format!("closing balance {} USD", app.balance(&ada).await)),
        "{said}"
    );
    // From the debits on: the opening balance is the grant's.
    let from = tokio::task::spawn_blocking({
        let (url, account, from) = (url.clone(), ada.account_id.clone(), debits_from.clone());
        move || statement_cli(&url, &["--account", &account, "--from", &from])
    })
    .await
    .expect("task");
    let said = String::from_utf8_lossy(&from.stderr).into_owned();
    assert!(from.status.success(), "{said}");
    assert_eq!(parse_csv(&String::from_utf8_lossy(&from.stdout)).len(), 6);
    assert!(
        said.contains("5 transaction(s)")
            && said.contains("opening balance 100.00 USD")
            && said.contains(&format!("closing balance {} USD", app.balance(&ada).await)),
        "{said}"
    );
    // A database that does not exist is an error, never a new empty one.
    let missing = dir.join("missing.db").to_str().expect("utf-8").to_owned();
    let refused = tokio::task::spawn_blocking({
        let missing = missing.clone();
        let (url, account, file_arg) = (url.clone(), ada.account_id.clone(), file_arg.to_owned());
        move || {
            [
                statement_cli(&url, &["--account", &account, "--output", &file_arg]),
                statement_cli(&url, &["--account", "acct_nobody"]),
                statement_cli(&missing, &["--account", &account]),
                statement_cli(&url, &["--account", &account, "--from", "2026-13-01"]),
            ]
        }
    })
    .await
    .expect("task");
    for output in refused {
        assert!(!output.status.success());
        assert!(output.stdout.is_empty(), "nothing written");
    }
    assert!(
        !std::path::Path::new(&missing).exists(),
        "no database created"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

async fn text_of(app: &crate::helpers::TestApp, key: &str) -> String {
    csv(app, key, "", "text/csv").await.2
}

/// `billing-server statement` with `args` on the database `url`.
fn statement_cli(url: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_billing-server"))
        .arg("statement")
        .args(args)
        .env("BILLING_DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("billing-server statement")
}
