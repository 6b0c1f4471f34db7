//! Dashboard sessions over plain HTTP (the browser suite drives the pages themselves):
//! stored in the database, so they outlive a restart; ended with the key they began with.

use reqwest::StatusCode;
use reqwest::redirect::Policy;

use crate::helpers::{ADMIN_KEY, Backend, database_url, spawn_on};

/// The value of `name` in a response's `Set-Cookie` headers.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
}

pub async fn dashboard_sessions_outlive_restarts_and_end_with_their_key(backend: Backend) {
    let Some(url) = database_url(backend, "dash_sessions") else {
        return;
    };
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client");
    let app = spawn_on(&url, &[]).await;
    let ada = app.customer("ada").await;
    // Sign in: the form's token must match the sign-in cookie.
    let form = http
        .get(app.url("/dashboard/sign-in"))
        .send()
        .await
        .expect("form");
    let signin = set_cookie(&form, "billing_signin").expect("sign-in cookie");
    let html = form.text().await.expect("html");
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf field")
        .to_owned();
    assert_eq!(csrf, signin);
    let wrong = http
        .post(app.url("/dashboard/sign-in"))
        .header("Cookie", format!("billing_signin={signin}"))
        .form(&[("csrf", "not-the-token"), ("api_key", ada.key.as_str())])
        .send()
        .await
        .expect("sign in");
    assert_eq!(
        wrong.status(),
        StatusCode::FORBIDDEN,
        "a wrong sign-in token"
    );
    let signed = http
        .post(app.url("/dashboard/sign-in"))
        .header("Cookie", format!("billing_signin={signin}"))
        .form(&[("csrf", csrf.as_str()), ("api_key", ada.key.as_str())])
        .send()
        .await
        .expect("sign in");
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    let session = set_cookie(&signed, "billing_session").expect("session cookie");
    assert!(session.starts_with("bs_") && !session.contains(&ada.key));
    let billing = |base: String| {
        let http = http.clone();
        let session = session.clone();
        async move {
            http.get(format!("{base}/dashboard/billing"))
                .header("Cookie", format!("billing_session={session}"))
                .send()
                .await
                .expect("billing")
        }
    };
    assert_eq!(billing(app.base.clone()).await.status(), StatusCode::OK);

    // A restart (a new process on the same database) keeps the session.
    drop(app);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let app = spawn_on(&url, &[]).await;
    let page = billing(app.base.clone()).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.expect("html").contains(&ada.account_id));

    // The statement form: a period of days; a bad day is a page with the reason, not a file.
    app.grant(&ada.account_id, "7").await;
    let statement = |query: &'static str| {
        let (http, session, base) = (http.clone(), session.clone(), app.base.clone());
        async move {
            let response = http
                .get(format!("{base}/dashboard/transactions.csv{query}"))
                .header("Cookie", format!("billing_session={session}"))
                .send()
                .await
                .expect("statement");
            (response.status(), response.text().await.expect("body"))
        }
    };
    let (status, csv) = statement("?from=&to=").await;
    assert_eq!(status, StatusCode::OK, "{csv}");
    assert_eq!(csv.lines().count(), 2, "the header and the grant: {csv}");
    let (status, csv) = statement("?from=2000-01-01&to=2000-02-01").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(csv.lines().count(), 1, "only the header: {csv}");
    let (status, page) = statement("?from=2000-02-30").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("from must be a day"), "{page}");

    // Revoking the key it was signed in with ends it.
    let (status, keys) = app
        .get(
            &format!("/v1/admin/accounts/{}/api-keys", ada.account_id),
            ADMIN_KEY,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    let key_id = keys["api_keys"][0]["id"]
        .as_str()
        .expect("key id")
        .to_owned();
    let revoke = app
        .client
        .delete(app.url(&format!("/v1/admin/api-keys/{key_id}")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("revoke");
    assert!(revoke.status().is_success());
    let after = billing(app.base.clone()).await;
    assert_eq!(after.status(), StatusCode::SEE_OTHER);
    assert_eq!(after.headers()["location"], "/dashboard/sign-in");
}
