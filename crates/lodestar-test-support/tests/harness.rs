//! The harness against real etcd processes: faults do what they say.

use std::time::Duration;

use lodestar_test_support::{EtcdCluster, EtcdNode, TcpProxy, eventually, free_port, http};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn node_keeps_data_across_restart_and_loses_it_when_emptied() {
    let mut etcd = EtcdNode::start().await;
    let addr = etcd.client_addr();
    assert!(addr.starts_with("127.0.0.1:"));
    assert_eq!(etcd.url(), format!("etcd://{addr}"));
    assert!(etcd.is_healthy().await);
    assert!(etcd.is_running());

    put(&addr, "greeting", "hello").await;
    assert_eq!(get(&addr, "greeting").await.as_deref(), Some("hello"));

    let first_pid = etcd.pid();
    etcd.kill();
    assert!(!etcd.is_running());
    assert_eq!(etcd.pid(), None);
    assert!(!etcd.is_healthy().await);
    assert!(
        http::get(&addr, "/health").await.is_err(),
        "killed etcd still answers"
    );

    etcd.restart().await;
    assert_eq!(etcd.client_addr(), addr, "restart moved ports");
    assert_ne!(etcd.pid(), first_pid);
    assert_eq!(get(&addr, "greeting").await.as_deref(), Some("hello"));

    etcd.restart_empty().await;
    assert_eq!(etcd.client_addr(), addr, "restart_empty moved ports");
    assert_eq!(
        get(&addr, "greeting").await,
        None,
        "data survived restart_empty"
    );
    let status = post(&addr, "/v3/maintenance/status", json!({})).await;
    assert_eq!(
        status["header"]["revision"], "1",
        "a wiped etcd starts at revision 1"
    );
}

#[tokio::test]
async fn cluster_elects_a_new_leader_and_the_old_one_rejoins() {
    let mut cluster = EtcdCluster::start(3).await;
    let endpoints = cluster.endpoints();
    assert_eq!(endpoints.len(), 3);
    assert_eq!(cluster.url(), format!("etcd://{}", endpoints.join(",")));

    let old = cluster.leader().await;
    cluster.kill(old);
    // `leader` only answers with a running member, so this is a new one.
    let new = cluster.leader().await;
    assert_ne!(new, old);
    put(&endpoints[new], "after-failover", "yes").await;

    cluster.restart(old).await;
    for node in cluster.nodes() {
        assert!(
            node.is_healthy().await,
            "{} unhealthy after rejoin",
            node.name()
        );
    }
    // The rejoined member caught up with writes made while it was down.
    eventually("the rejoined member to catch up", WAIT, || async {
        get(&endpoints[old], "after-failover").await.as_deref() == Some("yes")
    })
    .await;
}

#[tokio::test]
async fn proxy_cuts_live_and_new_connections_until_restored() {
    let etcd = EtcdNode::start().await;
    let proxy = TcpProxy::start(etcd.client_addr()).await;
    let via = proxy.addr();
    assert!(via.starts_with("127.0.0.1:"));
    assert!(is_healthy_via(&via).await);

    let mut live = TcpStream::connect(&via).await.unwrap();
    let request = format!("GET /health HTTP/1.1\r\nHost: {via}\r\n\r\n");
    live.write_all(request.as_bytes()).await.unwrap();
    read_until(&mut live, b"\"health\":\"true\"").await;

    proxy.cut();
    let mut buf = [0; 64];
    let read = tokio::time::timeout(WAIT, live.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "live connection survived the cut: {read:?}"
    );
    assert!(
        http::get(&via, "/health").await.is_err(),
        "new connection got through a cut"
    );
    assert!(etcd.is_healthy().await, "the cut reached etcd itself");

    proxy.restore();
    assert!(is_healthy_via(&via).await);

    drop(proxy);
    eventually("the dropped proxy to stop listening", WAIT, || async {
        TcpStream::connect(&via).await.is_err()
    })
    .await;
}

/// A blackholed proxy keeps connections open and forwards nothing, holding
/// what it read; restored, the held bytes arrive.
#[tokio::test]
async fn proxy_blackholes_without_closing_and_delivers_after_restore() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let echo = tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let proxy = TcpProxy::start(target).await;
    let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
    conn.write_all(b"one").await.unwrap();
    let mut buf = [0u8; 3];
    conn.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"one");

    proxy.blackhole();
    conn.write_all(b"two").await.unwrap();
    let silent = tokio::time::timeout(Duration::from_millis(500), conn.read(&mut buf)).await;
    assert!(
        silent.is_err(),
        "a blackholed connection answered or closed: {silent:?}"
    );
    let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
    fresh.write_all(b"new").await.unwrap();
    let silent = tokio::time::timeout(Duration::from_millis(300), fresh.read(&mut buf)).await;
    assert!(
        silent.is_err(),
        "a new connection got through the blackhole: {silent:?}"
    );

    proxy.restore();
    tokio::time::timeout(WAIT, conn.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"two", "the held bytes arrive after restore");
    tokio::time::timeout(WAIT, fresh.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"new");
    echo.abort();
}

#[test]
fn free_port_is_bindable_on_loopback() {
    let port = free_port();
    assert_ne!(port, 0);
    std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
}

// === helpers ===

async fn is_healthy_via(addr: &str) -> bool {
    let rsp = http::get(addr, "/health").await.unwrap();
    rsp.json().unwrap()["health"] == "true"
}

async fn put(addr: &str, key: &str, value: &str) {
    let body = json!({ "key": base64(key.as_bytes()), "value": base64(value.as_bytes()) });
    post(addr, "/v3/kv/put", body).await;
}

/// The value of `key`, or `None` if it does not exist.
async fn get(addr: &str, key: &str) -> Option<String> {
    let rsp = post(
        addr,
        "/v3/kv/range",
        json!({ "key": base64(key.as_bytes()) }),
    )
    .await;
    // The gateway omits `kvs` (and `count`) entirely when nothing matches.
    let value = rsp["kvs"].get(0)?["value"].as_str().unwrap();
    Some(String::from_utf8(base64_decode(value)).unwrap())
}

async fn post(addr: &str, path: &str, body: Value) -> Value {
    let rsp = http::post_json(addr, path, &body).await.unwrap();
    assert_eq!(
        rsp.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&rsp.body)
    );
    rsp.json().unwrap()
}

async fn read_until(stream: &mut TcpStream, needle: &[u8]) {
    let mut seen = Vec::new();
    let mut buf = [0; 1024];
    while !seen.windows(needle.len()).any(|w| w == needle) {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(
            n,
            0,
            "closed before the response: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard, padded base64, as the gateway wants for bytes fields.
fn base64(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(BASE64[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Vec<u8> {
    let sextets: Vec<u32> = text
        .bytes()
        .filter(|&c| c != b'=')
        .map(|c| BASE64.iter().position(|&b| b == c).unwrap() as u32)
        .collect();
    let mut out = Vec::new();
    for chunk in sextets.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0, |n, (i, s)| n | s << (18 - 6 * i));
        out.extend(n.to_be_bytes()[1..chunk.len()].iter());
    }
    out
}

#[test]
fn base64_round_trips() {
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"f"), "Zg==");
    for text in ["", "f", "fo", "foo", "foob", "hello world"] {
        assert_eq!(base64_decode(&base64(text.as_bytes())), text.as_bytes());
    }
}
