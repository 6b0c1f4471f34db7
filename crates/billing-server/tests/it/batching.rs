//! Group commit seen from outside: server processes sharing one database stay exact, and a
//! process killed with batches in flight loses no acknowledged debit and doubles none.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Backend, TestApp, dec, launch, ledger_sum};

async fn debit(
    client: &Client,
    base: &str,
    platform: &str,
    account: &str,
    key: &str,
    amount: &str,
) -> Result<(StatusCode, Value), reqwest::Error> {
    let response = client
        .post(format!("{base}/v1/usage"))
        .bearer_auth(platform)
        .header("Idempotency-Key", key)
        .json(&json!({"account_id": account, "amount": amount.parse::<f64>().unwrap_or(0.0), "description": "API usage"}))
        .send()
        .await?;
    let status = response.status();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

/// Three server processes on one PostgreSQL, 200 debits of 7 racing through them against
/// 1,050: exactly 150 succeed.
pub async fn debits_race_across_processes(backend: Backend) {
    let Some(url) = crate::helpers::database_url(backend, "batch_processes") else {
        return;
    };
    // Killed when dropped, if an assertion fails first too.
    let mut children = Vec::new();
    let mut bases = Vec::new();
    for _ in 0..3 {
        let (child, base) = launch(&url);
        children.push(child);
        bases.push(base);
    }
    let app = TestApp::audited(bases[0].clone(), &url);
    let ada = app.customer("ada").await;
    let platform = app.platform_key(&ada.account_id).await;
    app.grant(&ada.account_id, "1050").await;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let (client, base, platform, account) = (
                app.client.clone(),
                bases[i % 3].clone(),
                platform.clone(),
                ada.account_id.clone(),
            );
            tokio::spawn(async move {
                debit(
                    &client,
                    &base,
                    &platform,
                    &account,
                    &format!("race-{i}"),
                    "7",
                )
                .await
                .expect("answered")
            })
        })
        .collect();
    let (mut created, mut refused) = (0, 0);
    for task in tasks {
        let (status, body) = task.await.expect("task");
        match status {
            StatusCode::CREATED => created += 1,
            StatusCode::PAYMENT_REQUIRED => refused += 1,
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let balance = app.balance(&ada).await;
    let transactions = app.all_transactions(&ada).await;
    drop(children);
    assert_eq!((created, refused), (150, 50));
    assert_eq!(balance, "0.00");
    assert_eq!(transactions.len(), 151);
    assert_eq!(ledger_sum(&transactions), dec("0"));
}

/// 300 debits in flight when the process is killed (`kill -9`); clients that got no answer
/// retry with their key on a new process. Every acknowledged debit is in the ledger, every
/// key is there exactly once, and the balance is the funds less all of them.
pub async fn kill_9_with_batches_in_flight(backend: Backend) {
    let Some(url) = crate::helpers::database_url(backend, "batch_kill") else {
        return;
    };
    let (mut first, base) = launch(&url);
    let app = TestApp::at(base.clone(), None);
    let ada = app.customer("ada").await;
    let platform = app.platform_key(&ada.account_id).await;
    app.grant(&ada.account_id, "1000").await;
    let client = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let (client, base, platform, account) = (
                client.clone(),
                base.clone(),
                platform.clone(),
                ada.account_id.clone(),
            );
            tokio::spawn(async move {
                let key = format!("kill-{i}");
                let answer = debit(&client, &base, &platform, &account, &key, "1").await;
                (key, answer.ok())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(40)).await;
    let _ = first.kill();
    let _ = first.wait();
    let mut acknowledged: HashMap<String, String> = HashMap::new();
    let mut unanswered = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            (key, Some((StatusCode::CREATED, body))) => {
                acknowledged.insert(key, body["id"].as_str().expect("id").to_owned());
            }
            (key, _) => unanswered.push(key),
        }
    }
    let (mut second, base) = launch(&url);
    let mut committed_unanswered = 0;
    for key in &unanswered {
        let (status, body) = debit(&client, &base, &platform, &ada.account_id, key, "1")
            .await
            .expect("answered after the restart");
        // 200: the debit had committed before the kill and its answer was lost (a replay);
        // 201: it had not, and is written now.
        match status {
            StatusCode::OK => committed_unanswered += 1,
            StatusCode::CREATED => {}
            other => panic!("{key}: {other} {body}"),
        }
        acknowledged.insert(key.clone(), body["id"].as_str().expect("id").to_owned());
    }
    // Retrying an acknowledged key replays its first transaction.
    if let Some((key, id)) = acknowledged.iter().next() {
        let (_, body) = debit(&client, &base, &platform, &ada.account_id, key, "1")
            .await
            .expect("replay");
        assert_eq!(body["id"].as_str(), Some(id.as_str()));
    }
    let app = TestApp::audited(base, &url);
    let balance = app.balance(&ada).await;
    let transactions = app.all_transactions(&ada).await;
    let _ = second.kill();
    let _ = second.wait();
    let usage: Vec<&Value> = transactions
        .iter()
        .filter(|t| t["type"] == "usage")
        .collect();
    let ids: HashSet<&str> = usage.iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(usage.len(), 300, "one debit per key, none doubled");
    for (key, id) in &acknowledged {
        assert!(
            ids.contains(id.as_str()),
            "acknowledged {key} ({id}) is in the ledger"
        );
    }
    assert_eq!(balance, "700.00");
    assert_eq!(ledger_sum(&transactions), dec("700"));
    eprintln!(
        "kill -9 with debits in flight: {} acknowledged before the kill, {} retried after it \
         ({committed_unanswered} of them had committed unanswered)",
        300 - unanswered.len(),
        unanswered.len()
    );
}

/// `SIGTERM` under load: requests already accepted are answered (and committed), new ones
/// answer `503 shutting_down` with `Retry-After`, `/readyz` says `draining`, and the process
/// exits 0. After a restart on the same database, the ledger holds exactly the acknowledged
/// debits.
pub async fn sigterm_drains_in_flight_requests(backend: Backend) {
    let Some(url) = crate::helpers::database_url(backend, "drain") else {
        return;
    };
    let (mut first, base) = launch(&url);
    let app = TestApp::at(base.clone(), None);
    let ada = app.customer("ada").await;
    let platform = app.platform_key(&ada.account_id).await;
    app.grant(&ada.account_id, "100000").await;
    let client = Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks: Vec<_> = (0..16)
        .map(|n| {
            let (client, base, platform, account, stop) = (
                client.clone(),
                base.clone(),
                platform.clone(),
                ada.account_id.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let (mut acknowledged, mut refused, mut retry_after) = (Vec::new(), 0, true);
                for i in 0.. {
                    let key = format!("drain-{n}-{i}");
                    let Ok(response) = client
                        .post(format!("{base}/v1/usage"))
                        .bearer_auth(&platform)
                        .header("Idempotency-Key", &key)
                        .json(&json!({"account_id": account, "amount": "1"}))
                        .send()
                        .await
                    else {
                        // The process stopped listening.
                        break;
                    };
                    let status = response.status();
                    let has_retry_after = response.headers().contains_key("retry-after");
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    match status {
                        StatusCode::CREATED => {
                            acknowledged.push(body["id"].as_str().expect("id").to_owned());
                        }
                        StatusCode::SERVICE_UNAVAILABLE => {
                            assert_eq!(body["error"]["code"], "shutting_down", "{body}");
                            refused += 1;
                            retry_after &= has_retry_after;
                        }
                        other => panic!("{key}: {other} {body}"),
                    }
                    if stop.load(std::sync::atomic::Ordering::SeqCst) && refused > 0 {
                        break;
                    }
                }
                (acknowledged, refused, retry_after)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A debit whose body is still arriving when SIGTERM comes: in flight, so the drain waits
    // for it (and the others see 503s meanwhile, however fast they are answered).
    let body =
        serde_json::to_vec(&json!({"account_id": ada.account_id, "amount": "1"})).expect("json");
    let address = base.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/usage HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {platform}\r\n\
         Idempotency-Key: drain-slow\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).await.expect("head");
    slow.write_all(&body[..5]).await.expect("part of the body");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(sent.success());
    // While it drains, the load balancer's probe says so (until the process is gone).
    let probing = std::time::Instant::now();
    loop {
        let Ok(response) = client.get(format!("{base}/readyz")).send().await else {
            break;
        };
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if body["status"] == "draining" || body.is_null() {
            break;
        }
        assert_eq!(body["status"], "ready", "{body}");
        assert!(
            probing.elapsed() < Duration::from_secs(10),
            "readyz never said draining"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let started = std::time::Instant::now();
    let (mut acknowledged, mut refused) = (HashSet::new(), 0);
    for task in tasks {
        let (acked, n, retry_after) = task.await.expect("task");
        assert!(retry_after, "every 503 carries Retry-After");
        refused += n;
        acknowledged.extend(acked);
    }
    // The slow debit, accepted before SIGTERM, is answered and committed.
    slow.write_all(&body[5..])
        .await
        .expect("the rest of the body");
    let mut answer = String::new();
    slow.read_to_string(&mut answer).await.expect("answer");
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let slow_id: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap_or_default())
        .expect("a JSON body");
    acknowledged.insert(slow_id["id"].as_str().expect("id").to_owned());
    let exit = loop {
        if let Some(status) = first.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "the process exits after draining"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "a drained process exits 0: {exit}");
    assert!(refused > 0, "requests after SIGTERM were refused with 503");
    let (mut second, base) = launch(&url);
    let app = TestApp::audited(base, &url);
    let transactions = app.all_transactions(&ada).await;
    let _ = second.kill();
    let _ = second.wait();
    let usage: HashSet<String> = transactions
        .iter()
        .filter(|t| t["type"] == "usage")
        .filter_map(|t| t["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        usage, acknowledged,
        "the ledger holds exactly the acknowledged debits"
    );
    eprintln!(
        "SIGTERM under load: {} debits acknowledged, {refused} refused with 503 while draining, \
         exited in {:?}",
        acknowledged.len(),
        started.elapsed()
    );
}
