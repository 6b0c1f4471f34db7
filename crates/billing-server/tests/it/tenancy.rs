//! Keys and tenancy: every route with every kind of key, against its own and a foreign
//! account; key management (issue, list, expire, revoke, last use); the limits on failed
//! authentications and per key; 405 on known paths.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, Backend, Customer, TestApp, eventually, spawn};

/// The kinds of key a request can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Admin,
    /// A platform key of no account.
    Service,
    /// A platform key issued under account A.
    Platform,
    /// A customer key of account A.
    Customer,
    Revoked,
    Malformed,
}

const KINDS: [Kind; 6] = [
    Kind::Admin,
    Kind::Service,
    Kind::Platform,
    Kind::Customer,
    Kind::Revoked,
    Kind::Malformed,
];

/// Who a route is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audience {
    /// A customer key; the route acts on the key's own account, or names one of its
    /// resources (`foreign`: one of account B's).
    Customer,
    /// Any valid key.
    AnyKey,
    /// Platform, service and admin keys; the body names the account.
    Usage,
    /// Admin keys only.
    Admin,
}

struct Route {
    method: Method,
    path: String,
    body: Option<Value>,
    audience: Audience,
    /// The request names account B (or one of B's resources) rather than A.
    foreign: bool,
    /// The status a permitted request answers.
    ok: u16,
}

fn expected(route: &Route, kind: Kind) -> u16 {
    match (kind, route.audience) {
        (Kind::Revoked | Kind::Malformed, _) => 401,
        (_, Audience::AnyKey) => route.ok,
        (Kind::Customer, Audience::Customer) if route.foreign => 404,
        (Kind::Customer, Audience::Customer) => route.ok,
        (_, Audience::Customer) => 403,
        (Kind::Customer, Audience::Usage) => 403,
        (Kind::Platform, Audience::Usage) if route.foreign => 404,
        (_, Audience::Usage) => route.ok,
        (Kind::Admin, Audience::Admin) => route.ok,
        (_, Audience::Admin) => 403,
    }
}

/// What a refused request must leave untouched: both wallets and their ledgers, top-ups,
/// keys (but not their last use, which any authenticated request may record), packs and
/// the accounts.
async fn snapshot(app: &TestApp, a: &Customer, b: &Customer) -> Value {
    let mut state = BTreeMap::new();
    for (name, customer) in [("a", a), ("b", b)] {
        let (_, account) = app
            .get(
                &format!("/v1/admin/accounts/{}", customer.account_id),
                ADMIN_KEY,
            )
            .await;
        state.insert(format!("{name}_account"), account);
        state.insert(
            format!("{name}_transactions"),
            Value::Array(app.all_transactions(customer).await),
        );
        let (_, history) = app.get("/api/billing/topup-history", &customer.key).await;
        state.insert(format!("{name}_topups"), history);
        for setting in ["low-balance-alert", "spending-limit", "auto-top-up"] {
            let (_, value) = app
                .get(
                    &format!("/v1/admin/accounts/{}/{setting}", customer.account_id),
                    ADMIN_KEY,
                )
                .await;
            state.insert(format!("{name}_{setting}"), value);
        }
    }
    let (_, keys) = app.get("/v1/admin/api-keys?limit=100", ADMIN_KEY).await;
    let keys: Vec<Value> = keys["api_keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| json!([k["id"], k["revoked_at"], k["scope"], k["account_id"]]))
        .collect();
    state.insert("keys".into(), Value::Array(keys));
    let (_, packs) = app.get("/v1/admin/packs", ADMIN_KEY).await;
    state.insert("packs".into(), packs);
    serde_json::to_value(state).expect("json")
}

/// The wallet settings and a `PUT` body for each (one that lets the matrix's debits pass).
fn settings() -> [(&'static str, Value); 3] {
    [
        (
            "auto-top-up",
            json!({"auto_topup": {"enabled": false, "threshold": null, "amount": null}}),
        ),
        (
            "low-balance-alert",
            json!({"low_balance_alert": {"enabled": true, "threshold": 1}}),
        ),
        (
            "spending-limit",
            json!({"spending_limit": {"enabled": false, "monthly_limit": null, "action": "block"}}),
        ),
    ]
}

async fn issue(app: &TestApp, path: &str, body: Value) -> Value {
    let (status, key) = app.post(path, ADMIN_KEY, body).await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    key
}

fn secret(key: &Value) -> String {
    key["key"].as_str().expect("key").to_owned()
}

async fn service_key(app: &TestApp) -> Value {
    issue(app, "/v1/admin/api-keys", json!({"scope": "platform"})).await
}

/// A usage debit on `account`, answering the transaction's id.
async fn debit(app: &TestApp, key: &str, account: &str, amount: &str, idem: &str) -> String {
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/usage",
            Some(key),
            Some(json!({"account_id": account, "amount": amount, "description": "x"})),
            &[("Idempotency-Key", idem)],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().expect("id").to_owned()
}

/// Every route, with every kind of key, against its own and a foreign account: the status
/// is the tenancy rule's, and a refused request writes nothing.
pub async fn tenancy_matrix(backend: Backend) {
    let Some(app) = spawn(
        backend,
        "tenancy_matrix",
        &[("BILLING_AUTH_FAILURES_PER_MINUTE", "100000")],
    )
    .await
    else {
        return;
    };
    let a = app.customer("ada").await;
    let b = app.customer("bob").await;
    app.grant(&a.account_id, "1000").await;
    app.grant(&b.account_id, "1000").await;
    let service = secret(&service_key(&app).await);
    let platform = app.platform_key(&a.account_id).await;
    let revoked = issue(
        &app,
        &format!("/v1/admin/accounts/{}/api-keys", a.account_id),
        json!({"scope": "customer"}),
    )
    .await;
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/admin/api-keys/{}", revoked["id"].as_str().expect("id")),
            Some(ADMIN_KEY),
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let revoked = secret(&revoked);
    let key_of = |kind: Kind| -> String {
        match kind {
            Kind::Admin => ADMIN_KEY.to_owned(),
            Kind::Service => service.clone(),
            Kind::Platform => platform.clone(),
            Kind::Customer => a.key.clone(),
            Kind::Revoked => revoked.clone(),
            Kind::Malformed => "bk_customer_not-a-key".to_owned(),
        }
    };
    // Resources of each account.
    let a_usage = debit(&app, &service, &a.account_id, "5", "seed-a").await;
    let b_usage = debit(&app, &service, &b.account_id, "5", "seed-b").await;
    let a_topup = app.top_up(&a, json!({"amount": 10})).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let b_topup = app.top_up(&b, json!({"amount": 10})).await["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let mut routes = Vec::new();
    let route = |method: Method, path: String, body: Option<Value>, audience, foreign, ok| Route {
        method,
        path,
        body,
        audience,
        foreign,
        ok,
    };
    use Audience::{Admin, AnyKey, Customer as Cust, Usage};
    routes.push(route(
        Method::GET,
        "/v1/wallet/balance".into(),
        None,
        Cust,
        false,
        200,
    ));
    routes.push(route(
        Method::POST,
        "/v1/wallet/top-up".into(),
        Some(json!({"amount": 10})),
        Cust,
        false,
        200,
    ));
    routes.push(route(
        Method::GET,
        "/v1/wallet/transactions".into(),
        None,
        Cust,
        false,
        200,
    ));
    routes.push(route(
        Method::GET,
        "/api/billing/topup-history".into(),
        None,
        Cust,
        false,
        200,
    ));
    routes.push(route(
        Method::GET,
        "/api/billing/topup-packs".into(),
        None,
        AnyKey,
        false,
        200,
    ));
    for (foreign, topup, usage) in [(false, &a_topup, &a_usage), (true, &b_topup, &b_usage)] {
        routes.push(route(
            Method::GET,
            format!("/v1/wallet/top-ups/{topup}"),
            None,
            Cust,
            foreign,
            200,
        ));
        routes.push(route(
            Method::GET,
            format!("/v1/wallet/transactions/{usage}"),
            None,
            Cust,
            foreign,
            200,
        ));
        routes.push(route(
            Method::GET,
            format!("/v1/wallet/transactions?starting_after={usage}"),
            None,
            Cust,
            foreign,
            200,
        ));
    }
    for (foreign, customer, usage) in [(false, &a, &a_usage), (true, &b, &b_usage)] {
        let id = &customer.account_id;
        routes.push(route(
            Method::POST,
            "/v1/usage".into(),
            Some(json!({"account_id": id, "amount": "0.01", "description": "matrix"})),
            Usage,
            foreign,
            201,
        ));
        routes.push(route(
            Method::GET,
            format!("/v1/admin/accounts/{id}"),
            None,
            Admin,
            foreign,
            200,
        ));
        routes.push(route(
            Method::POST,
            format!("/v1/admin/accounts/{id}/grants"),
            Some(json!({"amount": "1", "description": "matrix"})),
            Admin,
            foreign,
            201,
        ));
        routes.push(route(
            Method::POST,
            format!("/v1/admin/accounts/{id}/refunds"),
            Some(json!({"transaction_ids": [usage], "amount": "0.01"})),
            Admin,
            foreign,
            201,
        ));
        routes.push(route(
            Method::POST,
            format!("/v1/admin/accounts/{id}/api-keys"),
            Some(json!({"scope": "customer"})),
            Admin,
            foreign,
            201,
        ));
        routes.push(route(
            Method::GET,
            format!("/v1/admin/accounts/{id}/api-keys"),
            None,
            Admin,
            foreign,
            200,
        ));
        for (setting, body) in settings() {
            routes.push(route(
                Method::GET,
                format!("/v1/admin/accounts/{id}/{setting}"),
                None,
                Admin,
                foreign,
                200,
            ));
            routes.push(route(
                Method::PUT,
                format!("/v1/admin/accounts/{id}/{setting}"),
                Some(body),
                Admin,
                foreign,
                200,
            ));
        }
        for (method, ok) in [(Method::GET, 404), (Method::DELETE, 204)] {
            routes.push(route(
                method,
                format!("/v1/admin/accounts/{id}/payment-method"),
                None,
                Admin,
                foreign,
                ok,
            ));
        }
    }
    // No payment method is saved: a permitted GET answers 404 no_payment_method, a
    // DELETE 204 (idempotent).
    for (method, ok) in [(Method::GET, 404), (Method::DELETE, 204)] {
        routes.push(route(
            method,
            "/v1/wallet/payment-method".into(),
            None,
            Cust,
            false,
            ok,
        ));
    }
    for (setting, body) in settings() {
        routes.push(route(
            Method::GET,
            format!("/v1/wallet/{setting}"),
            None,
            Cust,
            false,
            200,
        ));
        routes.push(route(
            Method::PUT,
            format!("/v1/wallet/{setting}"),
            Some(body),
            Cust,
            false,
            200,
        ));
    }
    routes.push(route(
        Method::POST,
        "/v1/admin/accounts".into(),
        Some(json!({"name": "Eve", "email": "eve@example.com"})),
        Admin,
        false,
        201,
    ));
    routes.push(route(
        Method::POST,
        "/v1/admin/api-keys".into(),
        Some(json!({"scope": "platform"})),
        Admin,
        false,
        201,
    ));
    routes.push(route(
        Method::GET,
        "/v1/admin/api-keys".into(),
        None,
        Admin,
        false,
        200,
    ));
    routes.push(route(
        Method::GET,
        "/v1/admin/packs".into(),
        None,
        Admin,
        false,
        200,
    ));
    routes.push(route(
        Method::POST,
        "/v1/admin/packs".into(),
        Some(json!({"name": "Matrix", "price": "1.00", "currency": "USD", "credits": "1"})),
        Admin,
        false,
        201,
    ));
    routes.push(route(
        Method::PUT,
        "/v1/admin/packs/pack_starter".into(),
        Some(json!({"name": "Starter Pack", "price": "5.00", "currency": "USD", "credits": "5"})),
        Admin,
        false,
        200,
    ));

    let mut checked = 0;
    let mut before = snapshot(&app, &a, &b).await;
    for route in &routes {
        for kind in KINDS {
            let want = expected(route, kind);
            let idem = format!("matrix-{checked}");
            let mut request = app
                .client
                .request(route.method.clone(), app.url(&route.path))
                .header("Idempotency-Key", idem);
            request = match kind {
                Kind::Malformed => request.header("Authorization", "Bearer bk_customer_not-a-key"),
                _ => request.bearer_auth(key_of(kind)),
            };
            if let Some(body) = &route.body {
                request = request.json(body);
            }
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert_eq!(
                status, want,
                "{} {} with a {kind:?} key: {body}",
                route.method, route.path
            );
            if !(200..300).contains(&status) {
                assert!(body["error"]["code"].is_string(), "{body}");
                let after = snapshot(&app, &a, &b).await;
                assert_eq!(
                    after, before,
                    "{} {} with a {kind:?} key wrote something",
                    route.method, route.path
                );
            } else {
                before = snapshot(&app, &a, &b).await;
            }
            checked += 1;
        }
    }
    assert_eq!(checked, routes.len() * KINDS.len());

    // Revocation and deactivation, last: a platform key of A cannot revoke anything, and
    // B's balance never moved through A's platform key.
    let throwaway = service_key(&app).await;
    let path = format!(
        "/v1/admin/api-keys/{}",
        throwaway["id"].as_str().expect("id")
    );
    let before = snapshot(&app, &a, &b).await;
    for kind in [Kind::Service, Kind::Platform, Kind::Customer] {
        let (status, _) = app
            .call(Method::DELETE, &path, Some(&key_of(kind)), None, &[])
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{kind:?}");
    }
    assert_eq!(snapshot(&app, &a, &b).await, before);
    let (status, _) = app
        .call(Method::DELETE, &path, Some(ADMIN_KEY), None, &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .get("/api/billing/topup-packs", &secret(&throwaway))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// The hole this issue closes: A's platform key debiting B is a 404 and B's balance does
/// not move; a service key debits both.
pub async fn platform_keys_act_on_their_own_account(backend: Backend) {
    let Some(app) = spawn(backend, "platform_own_account", &[]).await else {
        return;
    };
    let a = app.customer("ada").await;
    let b = app.customer("bob").await;
    app.grant(&b.account_id, "10").await;
    app.grant(&a.account_id, "10").await;
    let platform_a = app.platform_key(&a.account_id).await;
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/usage",
            Some(&platform_a),
            Some(json!({"account_id": b.account_id, "amount": 1, "description": "theft"})),
            &[("Idempotency-Key", "steal-1")],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "account_not_found");
    // Not-yours and not-there look the same.
    let (status, nobody) = app
        .call(
            Method::POST,
            "/v1/usage",
            Some(&platform_a),
            Some(json!({"account_id": "acct_nobody", "amount": 1, "description": "x"})),
            &[("Idempotency-Key", "steal-2")],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(nobody, body);
    assert_eq!(app.balance(&b).await, "10.00");
    assert_eq!(app.all_transactions(&b).await.len(), 1);

    debit(&app, &platform_a, &a.account_id, "1", "own-1").await;
    assert_eq!(app.balance(&a).await, "9.00");
    let service = secret(&service_key(&app).await);
    debit(&app, &service, &a.account_id, "1", "svc-a").await;
    debit(&app, &service, &b.account_id, "1", "svc-b").await;
    assert_eq!(app.balance(&a).await, "8.00");
    assert_eq!(app.balance(&b).await, "9.00");
}

/// Issue, list (never the secret or hash), page, expire, revoke; `last_used_at` to the
/// minute.
pub async fn key_management(backend: Backend) {
    let Some(app) = spawn(backend, "key_management", &[]).await else {
        return;
    };
    let a = app.customer("ada").await;
    let b = app.customer("bob").await;
    let service = service_key(&app).await;
    assert_eq!(service["scope"], "platform");
    assert_eq!(service["account_id"], Value::Null);
    assert!(secret(&service).starts_with("bk_platform_"));
    assert_eq!(
        service
            .as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .len(),
        8,
        "{service}"
    );
    for (path, body) in [
        (
            "/v1/admin/api-keys".to_owned(),
            json!({"scope": "customer"}),
        ),
        ("/v1/admin/api-keys".to_owned(), json!({"scope": "admin"})),
        (
            "/v1/admin/api-keys".to_owned(),
            json!({"scope": "platform", "expires_at": "tomorrow"}),
        ),
        (
            "/v1/admin/api-keys".to_owned(),
            json!({"scope": "platform", "requests_per_minute_max": 0}),
        ),
        (
            format!("/v1/admin/accounts/{}/api-keys", a.account_id),
            json!({"scope": "admin"}),
        ),
    ] {
        let (status, refused) = app.post(&path, ADMIN_KEY, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {refused}");
    }
    let (status, past) = app
        .post(
            "/v1/admin/api-keys",
            ADMIN_KEY,
            json!({"scope": "platform", "expires_at": "2001-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{past}");
    assert_eq!(past["error"]["code"], "expires_at_in_past");
    // Whole numbers may be written 3.0, as JSON Schema reads them.
    let (status, whole) = app
        .post(
            "/v1/admin/api-keys",
            ADMIN_KEY,
            json!({"scope": "platform", "requests_per_minute_max": 3.0}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{whole}");
    assert_eq!(whole["requests_per_minute_max"], 3);
    let (status, missing) = app
        .post(
            "/v1/admin/accounts/acct_nobody/api-keys",
            ADMIN_KEY,
            json!({"scope": "customer"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["error"]["code"], "account_not_found");

    // A key that expires in two or three seconds works, then answers 401.
    let soon = {
        let at = std::time::SystemTime::now() + Duration::from_secs(3);
        let secs = at
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_secs();
        billing_core::time::Timestamp::from_secs(i64::try_from(secs).expect("secs")).to_rfc3339()
    };
    let expiring = issue(
        &app,
        &format!("/v1/admin/accounts/{}/api-keys", a.account_id),
        json!({"scope": "customer", "expires_at": soon}),
    )
    .await;
    assert_eq!(expiring["expires_at"], soon);
    let (status, _) = app.get("/v1/wallet/balance", &secret(&expiring)).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let (status, expired) = app.get("/v1/wallet/balance", &secret(&expiring)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{expired}");
    assert_eq!(expired["error"]["message"], "this API key expired");

    // Lists: never the secret or its hash; per account; newest first; pages.
    let (status, all) = app.get("/v1/admin/api-keys?limit=100", ADMIN_KEY).await;
    assert_eq!(status, StatusCode::OK);
    let all = all["api_keys"].as_array().expect("keys").clone();
    // The admin key, a's customer key and expiring key, b's key, two service keys.
    assert_eq!(all.len(), 6, "{all:?}");
    let text = serde_json::to_string(&all).expect("json");
    for hidden in [
        secret(&service),
        secret(&expiring),
        a.key.clone(),
        b.key.clone(),
    ] {
        assert!(!text.contains(&hidden[12..]), "a secret is listed");
    }
    assert!(!text.contains("hash"));
    let fields: Vec<&str> = all[0]
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut fields = fields;
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "account_id",
            "created_at",
            "expires_at",
            "id",
            "last_used_at",
            "prefix",
            "requests_per_minute_max",
            "revoked_at",
            "scope"
        ]
    );
    let (_, mine) = app
        .get(
            &format!("/v1/admin/accounts/{}/api-keys", a.account_id),
            ADMIN_KEY,
        )
        .await;
    let mine = mine["api_keys"].as_array().expect("keys").clone();
    assert_eq!(mine.len(), 2);
    assert!(
        mine.iter()
            .all(|k| k["account_id"] == a.account_id.as_str())
    );
    assert_eq!(mine[0]["id"], expiring["id"], "newest first");
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/admin/api-keys?limit=2&starting_after={c}"),
            None => "/v1/admin/api-keys?limit=2".to_owned(),
        };
        let (status, page) = app.get(&path, ADMIN_KEY).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let keys = page["api_keys"].as_array().expect("keys").clone();
        cursor = keys
            .last()
            .map(|k| k["id"].as_str().expect("id").to_owned());
        paged.extend(keys);
        if !page["has_more"].as_bool().expect("has_more") {
            break;
        }
    }
    // The same keys in the same order (`last_used_at` may move on between the two reads: a
    // minute can turn meanwhile).
    let ids = |keys: &[Value]| keys.iter().map(|k| k["id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&paged), ids(&all));
    let (status, _) = app
        .get(
            &format!(
                "/v1/admin/accounts/{}/api-keys?starting_after={}",
                b.account_id,
                mine[0]["id"].as_str().expect("id")
            ),
            ADMIN_KEY,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a cursor of another account's key"
    );

    // Last use: recorded to the minute, soon after a use (off the request's path).
    let used = app.balance(&b).await;
    assert_eq!(used, "0.00");
    let last_used = eventually(&true, || async {
        let (_, keys) = app
            .get(
                &format!("/v1/admin/accounts/{}/api-keys", b.account_id),
                ADMIN_KEY,
            )
            .await;
        keys["api_keys"][0]["last_used_at"].is_string()
    })
    .await;
    assert!(last_used, "last_used_at was recorded");
    let (_, keys) = app
        .get(
            &format!("/v1/admin/accounts/{}/api-keys", b.account_id),
            ADMIN_KEY,
        )
        .await;
    let at = keys["api_keys"][0]["last_used_at"]
        .as_str()
        .expect("time")
        .to_owned();
    assert!(at.ends_with(":00Z"), "to the minute: {at}");

    // Revoked: 401, listed with revoked_at.
    let id = service["id"].as_str().expect("id");
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/admin/api-keys/{id}"),
            Some(ADMIN_KEY),
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, refused) = app.get("/api/billing/topup-packs", &secret(&service)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused["error"]["message"], "this API key was revoked");
    let (_, all) = app.get("/v1/admin/api-keys?limit=100", ADMIN_KEY).await;
    let listed = all["api_keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["id"] == id)
        .expect("listed")
        .clone();
    assert!(listed["revoked_at"].is_string(), "{listed}");
}

fn client_from(ip: Ipv4Addr) -> Client {
    Client::builder()
        .local_address(IpAddr::V4(ip))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

async fn status_of(client: &Client, app: &TestApp, key: &str) -> (u16, Option<String>) {
    let response = client
        .get(app.url("/v1/wallet/balance"))
        .bearer_auth(key)
        .send()
        .await
        .expect("request");
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("ascii").to_owned());
    (response.status().as_u16(), retry)
}

/// Failed authentications are limited per client address (429 with Retry-After); other
/// addresses' valid keys are not slowed; a key's own request limit answers 429 too.
pub async fn failed_authentications_are_throttled(backend: Backend) {
    let Some(app) = spawn(
        backend,
        "auth_throttle",
        &[("BILLING_AUTH_FAILURES_PER_MINUTE", "5")],
    )
    .await
    else {
        return;
    };
    let ada = app.customer("ada").await;
    let attacker = client_from(Ipv4Addr::new(127, 0, 0, 2));
    let neighbour = client_from(Ipv4Addr::new(127, 0, 0, 3));
    for i in 0..5 {
        let (status, _) = status_of(&attacker, &app, &format!("bk_customer_guess{i}")).await;
        assert_eq!(status, 401, "guess {i}");
    }
    let (status, retry) = status_of(&attacker, &app, "bk_customer_guess6").await;
    assert_eq!(status, 429);
    let retry: u64 = retry.expect("Retry-After").parse().expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    // Blocked: even a valid key from that address waits.
    assert_eq!(status_of(&attacker, &app, &ada.key).await.0, 429);
    // Others are not slowed by the attacker's failures.
    for _ in 0..20 {
        assert_eq!(status_of(&neighbour, &app, &ada.key).await.0, 200);
    }
    // A wrong key from another address is a plain 401 (its own allowance).
    assert_eq!(status_of(&neighbour, &app, "bk_customer_typo").await.0, 401);

    // Guesses sent together cannot pass the limit: of 40 in flight at once from one
    // address, at most 5 are looked at (401), the rest answer 429.
    let swarm = client_from(Ipv4Addr::new(127, 0, 0, 4));
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (client, url) = (swarm.clone(), app.url("/v1/wallet/balance"));
        tasks.push(tokio::spawn(async move {
            client
                .get(url)
                .bearer_auth(format!("bk_customer_swarm{i}"))
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("task"));
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        35,
        "{statuses:?}"
    );

    // A key's own limit.
    let limited = issue(
        &app,
        &format!("/v1/admin/accounts/{}/api-keys", ada.account_id),
        json!({"scope": "customer", "requests_per_minute_max": 3}),
    )
    .await;
    assert_eq!(limited["requests_per_minute_max"], 3);
    let limited = secret(&limited);
    for _ in 0..3 {
        assert_eq!(status_of(&neighbour, &app, &limited).await.0, 200);
    }
    let (status, retry) = status_of(&neighbour, &app, &limited).await;
    assert_eq!(status, 429);
    assert!(retry.is_some());
    // Another key of the same account is not limited by it.
    assert_eq!(status_of(&neighbour, &app, &ada.key).await.0, 200);
}

/// A known path with a method it does not serve answers 405 with `Allow`.
pub async fn unsupported_methods_answer_405(backend: Backend) {
    let Some(app) = spawn(backend, "method_not_allowed", &[]).await else {
        return;
    };
    for (method, path, allow) in [
        (Method::DELETE, "/v1/wallet/balance", "GET"),
        (Method::GET, "/v1/usage", "POST"),
        (Method::PATCH, "/v1/admin/packs", "GET, POST"),
        (Method::POST, "/v1/admin/packs/pack_pro", "PUT, DELETE"),
        (Method::PUT, "/v1/admin/api-keys", "GET, POST"),
        (Method::GET, "/webhooks/stripe", "POST"),
        (Method::DELETE, "/sandbox/checkout/sbx_1", "GET, POST"),
    ] {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .expect("request");
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(
            response
                .headers()
                .get("allow")
                .map(|v| v.to_str().expect("ascii")),
            Some(allow),
            "{method} {path}"
        );
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "method_not_allowed");
    }
    let (status, _) = app.call(Method::GET, "/v1/nowhere", None, None, &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// No cache stores an answer: every answer (a balance, a listing, a debit, an error, a
/// refusal before authentication, a dashboard page, a sandbox page) says `Cache-Control:
/// no-store`; the dashboard's stylesheet keeps its own, cacheable one.
pub async fn answers_are_never_stored(backend: Backend) {
    let Some(app) = spawn(backend, "no_store", &[]).await else {
        return;
    };
    let ada = app.customer("ada").await;
    let platform = app.platform_key(&ada.account_id).await;
    app.grant(&ada.account_id, "10").await;
    let usage = json!({"account_id": ada.account_id, "amount": 1});
    // Method, path, key, JSON body, the status expected.
    type Request<'a> = (Method, &'a str, Option<&'a str>, Option<Value>, u16);
    let cache_control = |response: &reqwest::Response| {
        response
            .headers()
            .get("cache-control")
            .map(|v| v.to_str().expect("ascii").to_owned())
    };
    let requests: Vec<Request> = vec![
        (
            Method::GET,
            "/v1/wallet/balance",
            Some(ada.key.as_str()),
            None,
            200,
        ),
        (
            Method::GET,
            "/v1/wallet/transactions",
            Some(ada.key.as_str()),
            None,
            200,
        ),
        (
            Method::GET,
            "/api/billing/topup-history",
            Some(ada.key.as_str()),
            None,
            200,
        ),
        (
            Method::POST,
            "/v1/usage",
            Some(platform.as_str()),
            Some(usage),
            201,
        ),
        (Method::GET, "/v1/wallet/balance", None, None, 401),
        (
            Method::GET,
            "/v1/nowhere",
            Some(ada.key.as_str()),
            None,
            404,
        ),
        (Method::GET, "/dashboard/sign-in", None, None, 200),
        (Method::GET, "/sandbox/checkout/sbx_none", None, None, 404),
    ];
    for (method, path, key, body, status) in requests {
        let mut request = app.client.request(method.clone(), app.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.header("Idempotency-Key", "no-store-1").json(&body);
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        assert_eq!(
            cache_control(&response).as_deref(),
            Some("no-store"),
            "{method} {path}"
        );
    }
    let response = app
        .client
        .get(app.url("/dashboard/static/dashboard.css"))
        .send()
        .await
        .expect("stylesheet");
    assert_eq!(
        cache_control(&response).as_deref(),
        Some("public, max-age=300")
    );
}

/// Two servers on one database, keys cached for 2 s: a key revoked through one is refused
/// there at once; the other serves its cached record until the cache's time to live, then
/// refuses it too (the documented bound on staleness).
pub async fn revocation_reaches_other_processes_within_the_cache_ttl(backend: Backend) {
    let Some(url) = crate::helpers::database_url(backend, "key_cache") else {
        return;
    };
    let ttl = [("BILLING_KEY_CACHE_MS", "2000")];
    let a = crate::helpers::spawn_on(&url, &ttl).await;
    let b = crate::helpers::spawn_on(&url, &ttl).await;
    let customer = a.customer("cached").await;
    let (status, _) = b.get("/v1/wallet/balance", &customer.key).await;
    assert_eq!(status, StatusCode::OK, "b has read and cached the key");
    let (_, keys) = a
        .get(
            &format!("/v1/admin/accounts/{}/api-keys", customer.account_id),
            ADMIN_KEY,
        )
        .await;
    let id = keys["api_keys"][0]["id"]
        .as_str()
        .expect("key id")
        .to_owned();
    let revoked_at = std::time::Instant::now();
    let (status, _) = a
        .call(
            Method::DELETE,
            &format!("/v1/admin/api-keys/{id}"),
            Some(ADMIN_KEY),
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = a.get("/v1/wallet/balance", &customer.key).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "refused at once where revoked"
    );
    let (status, _) = b.get("/v1/wallet/balance", &customer.key).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the other process still serves its cached record (no key query)"
    );
    let refused = eventually(&StatusCode::UNAUTHORIZED, || async {
        b.get("/v1/wallet/balance", &customer.key).await.0
    })
    .await;
    let waited = revoked_at.elapsed();
    assert_eq!(refused, StatusCode::UNAUTHORIZED);
    assert!(
        waited < Duration::from_millis(3500),
        "refused {waited:?} after the revocation, past the 2 s TTL and the probe's 100 ms"
    );
}
