//! The optional shared token: writes need it (reads too with
//! `token_reads`), a request without it gets HTTP 401 with discovery's
//! `-401` and changes nothing, clients and peers send it, and it never
//! reaches the logs.

mod support;

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use lodestar::{Discovery, Instance, Registrar};
use lodestar_registry::{LodestarRegistry, Token, form::Form};
use lodestar_test_support::eventually;
use serde_json::Value;
use support::{Node, PATIENCE, cluster, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "s3cret-Token_42";

fn token() -> Option<Token> {
    Some(Token::new(SECRET).unwrap())
}

/// One request on a fresh connection, with extra header lines; the status
/// and the JSON body.
async fn raw(node: &Node, method: &str, path: &str, headers: &str, body: &str) -> (u16, Value) {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(node.addr).await.unwrap();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\n{headers}\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        answer
    };
    let answer = tokio::time::timeout(PATIENCE, exchange).await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    let status = text[9..12].parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    if status == 401 {
        assert!(head.contains("www-authenticate: Bearer"), "{head}");
    }
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn register_form(hostname: &str) -> String {
    Form::new()
        .pair("zone", "z1")
        .pair("env", "dev")
        .pair("appid", "echo")
        .pair("hostname", hostname)
        .pair("addrs", "grpc://127.0.0.1:9000")
        .pair("status", "1")
        .finish()
}

fn echo(id: &str) -> Instance {
    Instance::new("echo", id).with_endpoint("grpc://127.0.0.1:50051".parse().unwrap())
}

#[tokio::test]
async fn writes_need_the_token_and_a_refused_one_changes_nothing() {
    let node = start(|c| c.token = token()).await;
    let bearer = format!("Authorization: Bearer {SECRET}\r\n");
    for (headers, body) in [
        (String::new(), register_form("echo-1")),
        (
            "Authorization: Bearer wrong\r\n".to_string(),
            register_form("echo-1"),
        ),
        (
            "Authorization: Basic czNjcmV0\r\n".to_string(),
            register_form("echo-1"),
        ),
        (
            String::new(),
            format!("{}&token=wrong", register_form("echo-1")),
        ),
    ] {
        let (status, reply) = raw(&node, "POST", "/discovery/register", &headers, &body).await;
        assert_eq!(
            (status, &reply["code"]),
            (401, &Value::from(-401)),
            "{headers}{body}: {reply}"
        );
        assert!(!reply.to_string().contains(SECRET));
    }
    // Nothing was written; reads are open without `token_reads`.
    assert_eq!(node.hostnames("echo").await, Some(vec![]));

    // The header, or the form's `token` for clients that cannot set one.
    let (status, reply) = raw(
        &node,
        "POST",
        "/discovery/register",
        &bearer,
        &register_form("echo-1"),
    )
    .await;
    assert_eq!((status, &reply["code"]), (200, &Value::from(0)), "{reply}");
    let with_param = format!("{}&token={SECRET}", register_form("echo-2"));
    let (_, reply) = raw(&node, "POST", "/discovery/register", "", &with_param).await;
    assert_eq!(reply["code"], 0, "{reply}");
    assert_eq!(
        node.hostnames("echo").await,
        Some(vec!["echo-1".to_string(), "echo-2".to_string()])
    );

    // Renew, cancel and set are writes too.
    for path in ["/discovery/renew", "/discovery/cancel", "/discovery/set"] {
        let form = "zone=z1&env=dev&appid=echo&hostname=echo-1&status=2";
        let (status, _) = raw(&node, "POST", path, "", form).await;
        assert_eq!(status, 401, "{path}");
    }
    let (_, fetched) = node
        .get("/discovery/fetch?env=dev&appid=echo&status=1")
        .await;
    assert_eq!(
        fetched["data"]["instances"]["z1"].as_array().map(Vec::len),
        Some(2)
    );
}

#[tokio::test]
async fn with_token_reads_every_route_needs_it() {
    let node = start(|c| {
        c.token = token();
        c.token_reads = true;
    })
    .await;
    let bearer = format!("Authorization: Bearer {SECRET}\r\n");
    for path in [
        "/discovery/fetch?env=dev&appid=echo&status=1",
        "/discovery/fetchs?env=dev&appid=echo&status=1",
        "/discovery/fetch/all",
        "/discovery/poll?env=dev&appid=echo&latest_timestamp=0",
        "/discovery/polls?env=dev&appid=echo&latest_timestamp=0",
        "/discovery/nodes",
        "/lodestar/status",
    ] {
        let (status, _) = raw(&node, "GET", path, "", "").await;
        assert_eq!(status, 401, "{path}");
        let (status, _) = raw(&node, "GET", path, &bearer, "").await;
        assert_ne!(status, 401, "{path}");
        let (status, _) = raw(
            &node,
            "GET",
            &format!(
                "{path}{}token={SECRET}",
                if path.contains('?') { '&' } else { '?' }
            ),
            "",
            "",
        )
        .await;
        assert_ne!(status, 401, "{path}");
    }
}

/// The client sends the URL's token with every request, long polls
/// included; without it, connecting fails and says why.
#[tokio::test]
async fn the_client_sends_the_url_token_and_a_missing_one_is_a_clear_error() {
    let node = start(|c| {
        c.token = token();
        c.token_reads = true;
    })
    .await;
    let url = format!("{}?token={SECRET}", node.url());
    let registry = LodestarRegistry::connect(url.parse().unwrap())
        .await
        .unwrap();
    let mut watch = registry.watch("echo").await.unwrap();
    assert!(watch.next().await.unwrap().is_empty());
    let registration = registry.register(echo("echo-1")).await.unwrap();
    // Seen through the long poll.
    let snapshot = tokio::time::timeout(PATIENCE, watch.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snapshot.len(), 1);
    registration.deregister().await.unwrap();

    let error = match LodestarRegistry::connect(node.url().parse().unwrap()).await {
        Ok(_) => panic!("connected without the token"),
        Err(e) => lodestar::ErrorChain(&e).to_string(),
    };
    assert!(error.contains("-401") || error.contains("401"), "{error}");
    assert!(error.contains("token"), "{error}");

    let wrong = format!("{}?token=wrong", node.url());
    let error = match LodestarRegistry::connect(wrong.parse().unwrap()).await {
        Ok(_) => panic!("connected with a wrong token"),
        Err(e) => lodestar::ErrorChain(&e).to_string(),
    };
    assert!(error.contains("wrong token"), "{error}");
    assert!(
        !error.contains("wrong&") && !error.contains(SECRET),
        "{error}"
    );
}

/// Peers replicate with the node's token: a write to one node reaches the
/// other, which refuses the same write from a client without the token.
#[tokio::test]
async fn peers_replicate_with_the_token() {
    let nodes = cluster(2, |c| c.token = token()).await;
    let url = format!("{}?token={SECRET}", nodes[0].url());
    let registry = LodestarRegistry::connect(url.parse().unwrap())
        .await
        .unwrap();
    let _registration = registry.register(echo("echo-1")).await.unwrap();
    eventually("the peer has the registration", PATIENCE, || async {
        nodes[1].hostnames("echo").await == Some(vec!["echo-1".to_string()])
    })
    .await;
    // A replication-marked write from outside is refused all the same.
    let forged = format!("{}&replication=true", register_form("intruder"));
    let (status, _) = raw(&nodes[1], "POST", "/discovery/register", "", &forged).await;
    assert_eq!(status, 401);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        nodes[0].hostnames("echo").await,
        Some(vec!["echo-1".to_string()])
    );
}

/// A buffer the log writes into.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything the server, the client and the peers log at every level,
/// refusals and Debug-printed configs included, is captured: the token is
/// not in it.
#[tokio::test(flavor = "current_thread")]
async fn the_token_never_reaches_the_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let nodes = cluster(2, |c| {
        c.token = token();
        c.token_reads = true;
    })
    .await;
    let url = format!("{}?token={SECRET}", nodes[0].url());
    let config: lodestar_registry::ClientConfig = url.parse().unwrap();
    tracing::info!(?config, "connecting");
    let registry = LodestarRegistry::connect(config).await.unwrap();
    let registration = registry.register(echo("echo-1")).await.unwrap();
    eventually("replicated", PATIENCE, || async {
        raw(
            &nodes[1],
            "GET",
            "/discovery/fetch?env=dev&appid=echo&status=1",
            &format!("Authorization: Bearer {SECRET}\r\n"),
            "",
        )
        .await
        .1["code"]
            == 0
    })
    .await;
    let _ = raw(
        &nodes[0],
        "POST",
        "/discovery/register",
        "Authorization: Bearer not-it\r\n",
        &register_form("x"),
    )
    .await;
    let _ = LodestarRegistry::connect(
        format!("{}?token=also-not-it", nodes[0].url())
            .parse()
            .unwrap(),
    )
    .await;
    registration.deregister().await.unwrap();
    drop(nodes);

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).to_string();
    assert!(
        logs.contains("registry serving"),
        "the capture works: {logs}"
    );
    assert!(logs.contains("<redacted>"), "the config was logged: {logs}");
    for secret in [SECRET, "not-it"] {
        assert!(!logs.contains(secret), "{secret} in the logs:\n{logs}");
    }
}
