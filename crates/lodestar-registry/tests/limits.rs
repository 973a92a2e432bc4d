//! Bad and slow HTTP clients: malformed, huge and slow requests get a 4xx
//! or are cut off at the limits, idle keep-alive connections are left
//! alone, and the node keeps serving others meanwhile.

mod support;

use std::time::{Duration, Instant};

use lodestar_test_support::slowloris;
use support::{Node, PATIENCE, start};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Sends `bytes` on a fresh connection, then reads until the server closes
/// it (or PATIENCE); the answer's text.
async fn send(node: &Node, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(node.addr).await.unwrap();
    // The server may answer and close before everything is written.
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn status(answer: &str) -> &str {
    answer.get(9..12).unwrap_or("")
}

fn quick(c: &mut lodestar_registry::server::Config) {
    c.header_timeout = Duration::from_secs(1);
    c.body_timeout = Duration::from_secs(1);
}

#[tokio::test]
async fn malformed_and_huge_requests_get_4xx() {
    let node = start(quick).await;
    let answer = send(&node, b"NOT HTTP AT ALL\r\n\r\n").await;
    assert_eq!(status(&answer), "400", "{answer}");
    let answer = send(
        &node,
        b"GET /discovery/nodes HTTP/1.1\r\nBad Header\r\n\r\n",
    )
    .await;
    assert_eq!(status(&answer), "400", "{answer}");
    // A head of 1 MiB.
    let mut huge = b"GET /discovery/nodes HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 1 << 20));
    huge.extend(b"\r\n\r\n");
    let answer = send(&node, &huge).await;
    assert_eq!(
        status(&answer),
        "431",
        "{}",
        &answer[..answer.len().min(200)]
    );
    // A body over max_body (64 KiB): refused, nothing registered.
    let body = format!(
        "zone=z1&env=dev&appid=echo&hostname=h&addrs=grpc://1.2.3.4:5&status=1&pad={}",
        "a".repeat(100 << 10)
    );
    let request = format!(
        "POST /discovery/register HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = send(&node, request.as_bytes()).await;
    assert_eq!(status(&answer), "413", "{answer}");
    assert!(answer.contains(r#""code":-400"#), "{answer}");
    assert!(answer.contains("larger than 65536 bytes"), "{answer}");
    assert_eq!(node.hostnames("echo").await, Some(vec![]));
    // Still serving.
    assert_eq!(node.get("/discovery/nodes").await.0, 200);
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_refused() {
    let node = start(quick).await;
    let started = Instant::now();
    let answer = send(
        &node,
        b"POST /discovery/register HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
          Content-Length: 100\r\n\r\nzone=z1",
    )
    .await;
    let took = started.elapsed();
    assert_eq!(status(&answer), "408", "{answer}");
    assert!(answer.contains(r#""code":-400"#), "{answer}");
    assert!(answer.contains("took longer than"), "{answer}");
    assert!(
        took >= Duration::from_millis(900) && took < PATIENCE,
        "{took:?}"
    );
}

/// Idle keep-alive connections are not timed: a client may come back long
/// after the header timeout, as discovery's Go clients do.
#[tokio::test]
async fn idle_keep_alive_connections_outlive_the_header_timeout() {
    let node = start(quick).await;
    let mut stream = TcpStream::connect(node.addr).await.unwrap();
    let request = b"GET /discovery/nodes HTTP/1.1\r\nHost: x\r\n\r\n";
    for _ in 0..2 {
        stream.write_all(request).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
}

/// 200 connections trickle a head a byte every 200 ms: each is cut off at
/// the header timeout (1 s here), and normal requests are answered
/// throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_are_cut_off_while_others_are_served() {
    let node = start(quick).await;
    let report = slowloris::attack(
        &node.addr.to_string(),
        200,
        Duration::from_millis(200),
        "/discovery/nodes",
        Duration::from_secs(10),
    )
    .await;
    println!(
        "registry under slowloris (header timeout 1 s): {}",
        report.summary()
    );
    report.assert_cut_off_at(Duration::from_secs(1));
}
