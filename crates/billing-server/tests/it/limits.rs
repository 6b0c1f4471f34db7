//! Hostile requests over a raw socket: headers over their limit answer `431`, bodies over
//! theirs `413`, a body trickled a byte a second `408` once its deadline passes (the
//! connection closed), a head trickled line by line `408`; none of them writes anything.

use std::time::{Duration, Instant};

use billing_http::limits::{BODY_TIMEOUT, HEADER_BYTES_MAX};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Backend, spawn};

/// Sends `request` and answers the response's status line and body (read to the close).
async fn exchange(address: &str, request: &[u8]) -> (String, String) {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    // The server may answer and close before it has read everything: a failed write is
    // fine, the answer is what counts.
    let _ = stream.write_all(request).await;
    read_answer(&mut stream).await
}

async fn read_answer(stream: &mut (impl AsyncReadExt + Unpin)) -> (String, String) {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&chunk[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.lines().next().unwrap_or_default().to_owned();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn usage_head(platform: &str, key: &str, length: usize) -> String {
    format!(
        "POST /v1/usage HTTP/1.1\r\nHost: billing\r\nAuthorization: Bearer {platform}\r\n\
         Content-Type: application/json\r\nIdempotency-Key: {key}\r\nContent-Length: {length}\r\n\r\n"
    )
}

pub async fn hostile_requests_are_cut_off(backend: Backend) {
    let Some(app) = spawn(backend, "limits", &[]).await else {
        return;
    };
    let ada = app.customer("ada").await;
    app.grant(&ada.account_id, "100").await;
    let platform = app.platform_key(&ada.account_id).await;
    let address = app.url("").trim_start_matches("http://").to_owned();

    // Headers over the limit: 431 with the JSON error.
    let big = "a".repeat(HEADER_BYTES_MAX + 1);
    let (status, body) = exchange(
        &address,
        format!("GET /healthz HTTP/1.1\r\nHost: billing\r\nX-Padding: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(status.contains(" 431 "), "{status}");
    assert!(body.contains("\"headers_too_large\""), "{body}");
    // Just under it is served.
    let fits = "a".repeat(HEADER_BYTES_MAX / 2);
    let (status, _) = exchange(
        &address,
        format!("GET /healthz HTTP/1.1\r\nHost: billing\r\nX-Padding: {fits}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert!(status.contains(" 200 "), "{status}");

    // A JSON body over its limit: 413.
    let body = format!(
        "{{\"account_id\": \"{}\", \"amount\": \"1\", \"description\": \"{}\"}}",
        ada.account_id,
        "d".repeat(billing_http::JSON_BODY_SIZE_MAX)
    );
    let mut request = usage_head(&platform, "too-big", body.len()).into_bytes();
    request.extend_from_slice(body.as_bytes());
    let (status, answer) = exchange(&address, &request).await;
    assert!(status.contains(" 413 "), "{status}");
    assert!(answer.contains("\"payload_too_large\""), "{answer}");
    // A webhook body over its limit: 413 too.
    let webhook = vec![b'x'; billing_http::routes::gateway::WEBHOOK_BODY_SIZE_MAX + 1];
    let mut request = format!(
        "POST /webhooks/sandbox HTTP/1.1\r\nHost: billing\r\nContent-Type: application/json\r\n\
         Sandbox-Signature: t=1,v1=00\r\nContent-Length: {}\r\n\r\n",
        webhook.len()
    )
    .into_bytes();
    request.extend_from_slice(&webhook);
    let (status, _) = exchange(&address, &request).await;
    assert!(status.contains(" 413 "), "{status}");

    // A body trickled a byte a second: 408 once its deadline passes, connection closed.
    let body = format!(
        "{{\"account_id\": \"{}\", \"amount\": \"1\"}}",
        ada.account_id
    );
    let (mut reader, mut stream) = TcpStream::connect(&address)
        .await
        .expect("connect")
        .into_split();
    stream
        .write_all(usage_head(&platform, "trickled", body.len()).as_bytes())
        .await
        .expect("head");
    let started = Instant::now();
    let trickle = async {
        for byte in body.as_bytes().iter().take(body.len() - 1) {
            if stream.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let (_, (status, answer)) = tokio::join!(trickle, read_answer(&mut reader));
    let waited = started.elapsed();
    assert!(status.contains(" 408 "), "{status}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    assert!(
        waited >= BODY_TIMEOUT && waited < BODY_TIMEOUT + Duration::from_secs(5),
        "cut off at its deadline: {waited:?}"
    );

    // A head trickled a line a second: 408 from the server's request-head timeout.
    let mut stream = TcpStream::connect(&address).await.expect("connect");
    stream
        .write_all(b"GET /v1/wallet/balance HTTP/1.1\r\n")
        .await
        .expect("line");
    let started = Instant::now();
    let (status, _) = loop {
        let _ = stream.write_all(b"X-Slow: 1\r\n").await;
        let mut probe = [0u8; 512];
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut probe)).await {
            Ok(Ok(n)) => {
                let text = String::from_utf8_lossy(&probe[..n]).into_owned();
                break (text.lines().next().unwrap_or_default().to_owned(), text);
            }
            Ok(Err(_)) => break (String::from("closed"), String::new()),
            Err(_) => assert!(
                started.elapsed() < Duration::from_secs(20),
                "the slow head was never cut off"
            ),
        }
    };
    assert!(status.contains(" 408 "), "{status}");

    // None of them wrote anything.
    assert_eq!(app.balance(&ada).await, "100.00");
    let transactions = app.all_transactions(&ada).await;
    assert_eq!(transactions.len(), 1, "only the grant: {transactions:?}");
}

/// `BILLING_HTTP_MAX_CONNECTIONS` bounds the connections held open (and so their memory):
/// with two open, a third is not served until one of them closes, and then it is; with one
/// worker holding both, and with two workers holding one each (the bound split over them).
pub async fn connections_past_the_bound_wait_until_one_closes(backend: Backend) {
    for workers in ["1", "2"] {
        let extra = [
            ("BILLING_WORKERS", workers),
            ("BILLING_HTTP_MAX_CONNECTIONS", "2"),
        ];
        let name = format!("connections_{workers}");
        let Some(app) = spawn(backend, &name, &extra).await else {
            return;
        };
        let address = app.base.trim_start_matches("http://").to_owned();
        third_waits_for_a_free_connection(&address, workers).await;
    }
}

async fn third_waits_for_a_free_connection(address: &str, workers: &str) {
    let health = b"GET /healthz HTTP/1.1\r\nHost: billing\r\n\r\n";
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        stream.write_all(health).await.expect("write");
        let (status, _) = read_answer(&mut stream).await;
        assert!(status.contains("200"), "{workers} worker(s): {status}");
        open.push(stream);
    }

    // The kernel completes the third connection's handshake, but the server does not take it.
    let mut third = TcpStream::connect(address).await.expect("connect");
    third.write_all(health).await.expect("write");
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(800), third.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "{workers} worker(s): a connection past the bound was served: {early:?}"
    );

    // One closes: the third is served at once (well before the others' 5-s keep-alive ends).
    drop(open.remove(0));
    let started = Instant::now();
    let (status, body) = read_answer(&mut third).await;
    assert!(
        status.contains("200"),
        "{workers} worker(s): {status} {body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{workers} worker(s): served after {:?}",
        started.elapsed()
    );
    // The one still open is served too.
    let kept = &mut open[0];
    kept.write_all(health).await.expect("write");
    let (status, _) = read_answer(kept).await;
    assert!(status.contains("200"), "{workers} worker(s): {status}");
}
