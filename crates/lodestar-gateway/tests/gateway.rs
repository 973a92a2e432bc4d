//! The gateway in-process against real registries (etcd processes and
//! built-in registry nodes) and real echo backends on loopback ports.

mod support;

use std::{collections::BTreeMap, time::Duration};

use bytes::Bytes;
use lodestar_gateway::config::Config;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_spread_across_instances_registered_in_etcd_with_forwarded_headers() {
    let reg = etcd().await;
    let _a = Echo::start(&reg, "web", "a", "v1", None).await;
    let _b = Echo::start(&reg, "web", "b", "v1", None).await;
    let _c = Echo::start(&reg, "web", "c", "v1", None).await;
    let config = Config::from_toml(
        "[[route]]\nprefix = \"/web\"\nservice = \"web\"\nstrip_prefix = true\npolicy = \"round_robin\"\n",
    )
    .unwrap();
    let gw = Gw::start(&reg, config).await;
    wait_for_instances(gw.addr, "/web/x", &[], &["a", "b", "c"]).await;

    let client = client();
    let mut counts = BTreeMap::<String, usize>::new();
    for _ in 0..90 {
        let answer = get(&client, gw.addr, "/web/hello?q=1", &[]).await;
        assert_eq!(answer.status, 200);
        *counts.entry(answer.instance()).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|&n| n == 30), "round robin: {counts:?}");

    let answer = get(
        &client,
        gw.addr,
        "/web/hello?q=1",
        &[
            ("x-forwarded-for", "10.1.2.3"),
            ("connection", "x-private"),
            ("x-private", "secret"),
            ("keep-alive", "timeout=5"),
            ("x-kept", "yes"),
        ],
    )
    .await;
    let json = answer.json();
    assert_eq!(json["path"], "/hello", "prefix stripped");
    assert_eq!(json["query"], "q=1");
    let headers = &json["headers"];
    assert_eq!(headers["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(
        headers["forwarded"],
        format!("for=127.0.0.1;proto=http;host=\"127.0.0.1\"")
    );
    assert_eq!(headers["x-kept"], "yes");
    assert!(
        headers.get("x-private").is_none(),
        "named in Connection: {headers}"
    );
    assert!(headers.get("keep-alive").is_none(), "{headers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colour_and_version_headers_pick_lanes_in_the_builtin_registry() {
    let reg = builtin().await;
    let _base1 = Echo::start(&reg, "web", "base-v1", "v1", None).await;
    let _base2 = Echo::start(&reg, "web", "base-v2", "v2", None).await;
    let _blue = Echo::start(&reg, "web", "blue-v1", "v1", Some("blue")).await;
    // Lane headers are believed on routes that trust them only.
    let trusted = "[[route]]\nprefix=\"/\"\nservice=\"web\"\ntrust_headers=true\n";
    let gw = Gw::start(&reg, Config::from_toml(trusted).unwrap()).await;
    wait_for_instances(gw.addr, "/", &[], &["base-v1", "base-v2"]).await;
    wait_for_instances(gw.addr, "/", &[("lodestar-color", "blue")], &["blue-v1"]).await;
    let client = client();
    for _ in 0..30 {
        // No colour: never the coloured instance.
        let id = get(&client, gw.addr, "/", &[]).await.instance();
        assert!(id.starts_with("base"), "{id}");
        // Blue: its lane.
        let id = get(&client, gw.addr, "/", &[("lodestar-color", "blue")])
            .await
            .instance();
        assert_eq!(id, "blue-v1");
        // Green has no instance: the base lane.
        let id = get(&client, gw.addr, "/", &[("lodestar-color", "green")])
            .await
            .instance();
        assert!(id.starts_with("base"), "{id}");
        // A version pin.
        let id = get(&client, gw.addr, "/", &[("lodestar-version", "v2")])
            .await
            .instance();
        assert_eq!(id, "base-v2");
    }
    // A pin nobody has: 503 naming the service, never another version.
    let answer = get(&client, gw.addr, "/", &[("lodestar-version", "v9")]).await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.json()["error"], "no instance of web with version v9");
    // Maglev on the hash key: one key, one instance.
    gw.gateway
        .reload(Config::from_toml(&format!("{trusted}policy=\"consistent_hash\"")).unwrap());
    for key in ["k1", "k2", "k3"] {
        let first = get(&client, gw.addr, "/", &[("lodestar-hash-key", key)])
            .await
            .instance();
        for _ in 0..10 {
            let id = get(&client, gw.addr, "/", &[("lodestar-hash-key", key)])
                .await
                .instance();
            assert_eq!(id, first, "key {key}");
        }
    }
}

/// Untrusted clients cannot pick a lane: their `lodestar-*` headers are
/// removed before balancing and forwarding, unless the route trusts them or
/// the client's network is trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_clients_lane_headers_are_removed_before_balancing() {
    let reg = builtin().await;
    let _base = Echo::start(&reg, "web", "base-v1", "v1", None).await;
    let _blue = Echo::start(&reg, "web", "blue-v2", "v2", Some("blue")).await;
    let gw = Gw::routes(&reg, &["/=web"]).await;
    wait_for_instances(gw.addr, "/", &[], &["base-v1"]).await;
    let client = client();
    let steer = [
        ("lodestar-color", "blue"),
        ("lodestar-version", "v2"),
        ("lodestar-hash-key", "k"),
        ("lodestar-anything", "x"),
    ];
    for _ in 0..20 {
        let answer = get(&client, gw.addr, "/", &steer).await;
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.instance(),
            "base-v1",
            "no lane for an untrusted client"
        );
        let headers = &answer.json()["headers"];
        for (name, _) in steer {
            assert!(headers.get(name).is_none(), "{name} forwarded: {headers}");
        }
    }
    // A trusted network (loopback here) keeps them, whatever the route says.
    gw.gateway.reload(
        Config::from_toml("[trust]\nsources = [\"127.0.0.0/8\", \"::1\"]\n[[route]]\nprefix=\"/\"\nservice=\"web\"\n").unwrap(),
    );
    wait_for_instances(gw.addr, "/", &[("lodestar-color", "blue")], &["blue-v2"]).await;
    let answer = get(&client, gw.addr, "/", &steer).await;
    assert_eq!(answer.instance(), "blue-v2");
    assert_eq!(answer.json()["headers"]["lodestar-color"], "blue");
    // Another network is not trusted.
    gw.gateway.reload(
        Config::from_toml(
            "[trust]\nsources = [\"10.0.0.0/8\"]\n[[route]]\nprefix=\"/\"\nservice=\"web\"\n",
        )
        .unwrap(),
    );
    let answer = get(&client, gw.addr, "/", &steer).await;
    assert_eq!(answer.instance(), "base-v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_unavailable_and_slow_answer_404_503_504_json() {
    let reg = builtin().await;
    let _a = Echo::start(&reg, "web", "a", "v1", None).await;
    let config = Config::from_toml(
        "[[route]]\nprefix = \"/web\"\nservice = \"web\"\nstrip_prefix = true\ntimeout_ms = 300\n[route.retry]\nper_try_timeout_ms = 250\n\
         [[route]]\nprefix = \"/ghost\"\nservice = \"ghost\"\n",
    )
    .unwrap();
    let gw = Gw::start(&reg, config).await;
    wait_for_instances(gw.addr, "/web", &[], &["a"]).await;
    let client = client();

    let answer = get(&client, gw.addr, "/nowhere", &[]).await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.headers["content-type"], "application/json");
    assert_eq!(answer.json()["error"], "no route");
    assert_eq!(answer.json()["path"], "/nowhere");

    let answer = get(&client, gw.addr, "/ghost/x", &[]).await;
    assert_eq!(answer.status, 503);
    assert!(
        answer.json()["error"].as_str().unwrap().contains("ghost"),
        "{:?}",
        answer.json()
    );
    assert_eq!(answer.json()["service"], "ghost");

    let answer = get(&client, gw.addr, "/web/delay/2000", &[]).await;
    assert_eq!(answer.status, 504);
    assert_eq!(answer.json()["service"], "web");

    // And the gateway still serves.
    assert_eq!(get(&client, gw.addr, "/web/ok", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_move_idempotent_requests_off_failing_statuses_within_budget() {
    let reg = builtin().await;
    let _a = Echo::start(&reg, "web", "a", "v1", None).await;
    let _b = Echo::start(&reg, "web", "b", "v1", None).await;
    let config = Config::from_toml(
        "[[route]]\nprefix = \"/\"\nservice = \"web\"\npolicy = \"round_robin\"\n[route.retry]\nattempts = 2\non_status = [503]\nbudget_ratio = 0.0\nbudget_min_per_sec = 0.0\n",
    )
    .unwrap();
    let gw = Gw::start(&reg, config).await;
    wait_for_instances(gw.addr, "/", &[], &["a", "b"]).await;
    let client = client();
    // No budget: a 503 is handed back as is.
    let answer = get(&client, gw.addr, "/status/503", &[]).await;
    assert_eq!(answer.status, 503);
    assert!(!gw.gateway.metrics().render().contains("retries_total{"));

    let config = Config::from_toml(
        "[[route]]\nprefix = \"/\"\nservice = \"web\"\npolicy = \"round_robin\"\n[route.retry]\nattempts = 2\non_status = [503]\nbudget_ratio = 1.0\n",
    )
    .unwrap();
    gw.gateway.reload(config);
    // Both instances answer 503 to /status/503: two tries, then the 503.
    let answer = get(&client, gw.addr, "/status/503", &[]).await;
    assert_eq!(answer.status, 503);
    assert!(
        gw.gateway
            .metrics()
            .render()
            .contains("lodestar_gateway_retries_total{route=\"/\"} 1")
    );
    // A POST is not retried on a status.
    let answer = send(&client, gw.addr, "POST", "/status/503", &[], "x")
        .await
        .unwrap();
    assert_eq!(answer.status, 503);
    assert!(
        gw.gateway
            .metrics()
            .render()
            .contains("lodestar_gateway_retries_total{route=\"/\"} 1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_routes_answer_429_with_retry_after() {
    let reg = builtin().await;
    let _a = Echo::start(&reg, "web", "a", "v1", None).await;
    let config = Config::from_toml(
        "[[route]]\nprefix = \"/\"\nservice = \"web\"\n[route.rate_limit]\nper_sec = 0.5\nburst = 3\n\
         [[route]]\nprefix = \"/probe\"\nservice = \"web\"\n",
    )
    .unwrap();
    let gw = Gw::start(&reg, config).await;
    // The same upstream through an unlimited route: wait without spending
    // the bucket.
    wait_for_instances(gw.addr, "/probe", &[], &["a"]).await;
    let client = client();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let answer = get(&client, gw.addr, "/", &[]).await;
        if answer.status == 429 {
            assert_eq!(answer.headers["retry-after"], "2");
            assert_eq!(answer.json()["error"], "rate limited");
        }
        statuses.push(answer.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_set_down_in_the_registry_gets_nothing() {
    let reg = builtin().await;
    let _a = Echo::start(&reg, "web", "a", "v1", None).await;
    let _b = Echo::start(&reg, "web", "b", "v1", None).await;
    let gw = Gw::routes(&reg, &["/=web"]).await;
    wait_for_instances(gw.addr, "/", &[], &["a", "b"]).await;
    // The operator's switch, through discovery's own API.
    let form = "zone=default&env=dev&appid=web&hostname=a&status=2";
    let reply = lodestar_test_support::http::request(
        &reg.addr(),
        "POST",
        "/discovery/set",
        form.as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(reply.json().unwrap()["code"], 0, "{:?}", reply.json());
    wait_for_instances(gw.addr, "/", &[], &["b"]).await;
    let client = client();
    for _ in 0..50 {
        assert_eq!(get(&client, gw.addr, "/", &[]).await.instance(), "b");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_set_down_through_registrar_set_in_etcd_gets_nothing_until_up() {
    use lodestar::{Override, Status};
    let reg = etcd().await;
    let _a = Echo::start(&reg, "web", "a", "v1", None).await;
    let _b = Echo::start(&reg, "web", "b", "v1", None).await;
    let gw = Gw::routes(&reg, &["/=web"]).await;
    wait_for_instances(gw.addr, "/", &[], &["a", "b"]).await;
    let down = Override::default().with_status(Status::Down);
    assert!(reg.registry.set("web", "a", down).await.unwrap());
    wait_for_instances(gw.addr, "/", &[], &["b"]).await;
    let client = client();
    for _ in 0..50 {
        assert_eq!(get(&client, gw.addr, "/", &[]).await.instance(), "b");
    }
    let up = Override::default().with_status(Status::Up);
    assert!(reg.registry.set("web", "a", up).await.unwrap());
    wait_for_instances(gw.addr, "/", &[], &["a", "b"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_routes_under_load_without_failing_a_request() {
    let reg = builtin().await;
    let _a = Echo::start(&reg, "one", "one-a", "v1", None).await;
    let _b = Echo::start(&reg, "two", "two-a", "v1", None).await;
    let gw = Gw::routes(&reg, &["/=one"]).await;
    wait_for_instances(gw.addr, "/", &[], &["one-a"]).await;
    let addr = gw.addr;
    let load = tokio::spawn(async move {
        let client = client();
        let mut seen = BTreeMap::<String, usize>::new();
        let mut failed = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < deadline {
            match send(&client, addr, "GET", "/delay/5", &[], Bytes::new()).await {
                Ok(a) if a.status == 200 => *seen.entry(a.instance()).or_default() += 1,
                other => {
                    failed += 1;
                    eprintln!("failed: {other:?}");
                }
            }
        }
        (seen, failed)
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    gw.gateway
        .reload(Config::default().with_route_flags(&["/=two"]).unwrap());
    let (seen, failed) = load.await.unwrap();
    assert_eq!(failed, 0);
    assert!(
        seen.contains_key("one-a") && seen.contains_key("two-a"),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_pass_through() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let reg = builtin().await;
    let _a = Echo::start(&reg, "web", "a", "v1", None).await;
    let gw = Gw::routes(&reg, &["/=web"]).await;
    wait_for_instances(gw.addr, "/", &[], &["a"]).await;
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut ws, response) =
        tokio_tungstenite::client_async(format!("ws://{}/ws", gw.addr), stream)
            .await
            .expect("WebSocket handshake through the gateway");
    assert_eq!(response.status(), 101);
    for i in 0..20 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let reply = ws.next().await.unwrap().unwrap();
        assert_eq!(reply, Message::text(format!("hello {i}")));
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_pass_through_with_statuses_and_trailers() {
    use lodestar_echo::{EchoRequest, echo_client::EchoClient};

    let reg = builtin().await;
    let _a = Echo::start(&reg, "echo", "a", "v1", None).await;
    let _b = Echo::start(&reg, "echo", "b", "v1", Some("blue")).await;
    let config = Config::from_toml(
        "[trust]\nheaders = true\n\
         [[route]]\nprefix = \"/lodestar.echo.v1.Echo\"\nservice = \"echo\"\n\
         [[route]]\nprefix = \"/grpc.health.v1.Health\"\nservice = \"echo\"\n\
         [[route]]\nprefix = \"/ghost.v1.Ghost\"\nservice = \"ghost\"\n",
    )
    .unwrap();
    let gw = Gw::start(&reg, config).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", gw.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = EchoClient::new(channel.clone());
    let say = |message: &str, color: Option<&str>| {
        let mut request = tonic::Request::new(EchoRequest {
            message: message.into(),
            delay_ms: 0,
        });
        if let Some(color) = color {
            request
                .metadata_mut()
                .insert("lodestar-color", color.parse().unwrap());
        }
        request
    };
    lodestar_test_support::eventually("a gRPC answer through the gateway", PATIENCE, || {
        let mut client = client.clone();
        async move { client.say(say("hi", None)).await.is_ok() }
    })
    .await;
    for _ in 0..10 {
        let reply = client.say(say("hi", None)).await.unwrap().into_inner();
        assert_eq!(
            (reply.message.as_str(), reply.instance.as_str()),
            ("hi", "a")
        );
        let reply = client
            .say(say("hi", Some("blue")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.instance, "b");
        assert_eq!(reply.color, "blue", "the colour header went through");
    }
    // A status from the backend, with its trailers: the health service
    // answers NOT_FOUND for an unknown service name.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest {
        service: "no.such.Service".into(),
    };
    let status = health.check(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    let request = tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    let serving = health.check(request).await.unwrap().into_inner();
    assert_eq!(serving.status, 1, "SERVING");

    // The gateway's own errors are gRPC statuses, not HTML.
    let unrouted = raw_grpc(gw.addr, "/nowhere.v1.X/Y").await;
    assert_eq!(
        unrouted,
        ("200".into(), Some("12".into())),
        "no route: UNIMPLEMENTED"
    );
    let unavailable = raw_grpc(gw.addr, "/ghost.v1.Ghost/Say").await;
    assert_eq!(
        unavailable,
        ("200".into(), Some("14".into())),
        "no instance: UNAVAILABLE"
    );
}

/// A unary gRPC call with an empty message over a raw HTTP/2 connection:
/// the HTTP status and the grpc-status (from the head or the trailers).
async fn raw_grpc(addr: std::net::SocketAddr, path: &str) -> (String, Option<String>) {
    use http_body_util::{BodyExt, Full};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .unwrap();
    let response = send.send_request(request).await.unwrap();
    let status = response.status().as_str().to_string();
    let mut grpc_status = response
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_string());
    let collected = response.into_body().collect().await.unwrap();
    if let Some(trailers) = collected.trailers() {
        grpc_status = grpc_status.or(trailers
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_string()));
    }
    (status, grpc_status)
}

/// Writes `raw` on a fresh connection and reads until the server closes or
/// answers a head; the status line's code, or `None` if closed silently.
async fn raw_http(addr: std::net::SocketAddr, raw: &[u8], then_wait: bool) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // A peer may close mid-write (it refused already): read its answer anyway.
    let _ = stream.write_all(raw).await;
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if !then_wait && buf.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("the gateway answered or closed in time");
    let text = String::from_utf8_lossy(&buf);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|c| c.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversize_and_slow_requests_get_4xx_and_others_are_served() {
    let reg = builtin().await;
    let _a = Echo::start(&reg, "web", "a", "v1", None).await;
    let config = Config::from_toml(
        "[limits]\nmax_header_bytes = 8192\nmax_body_bytes = 1000\nheader_timeout_ms = 500\n\
         [[route]]\nprefix = \"/\"\nservice = \"web\"\n",
    )
    .unwrap();
    let gw = Gw::start(&reg, config).await;
    wait_for_instances(gw.addr, "/", &[], &["a"]).await;
    let addr = gw.addr;
    // Well-behaved traffic all along.
    let load = tokio::spawn(async move {
        let client = client();
        let mut failures = 0;
        for _ in 0..200 {
            if get(&client, addr, "/", &[]).await.status != 200 {
                failures += 1;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        failures
    });

    let bad_header = raw_http(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
        false,
    )
    .await;
    assert_eq!(bad_header, Some(400));
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    assert_eq!(raw_http(addr, huge.as_bytes(), false).await, Some(431));
    let declared = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n";
    assert_eq!(raw_http(addr, declared.as_bytes(), false).await, Some(413));
    // Chunked, no length given: cut off at the limit as it streams.
    let mut chunked = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        chunked.extend_from_slice(b"200\r\n");
        chunked.extend_from_slice(&[b'x'; 0x200]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let status = raw_http(addr, &chunked, false).await;
    assert!(
        status.is_some_and(|s| s == 413) || status.is_none(),
        "{status:?}"
    );
    // A slow client: half a head, then nothing. Cut off, not waited for.
    let started = std::time::Instant::now();
    let slow = raw_http(addr, b"GET / HTTP/1.1\r\nHost: x\r\n", true).await;
    assert!(slow.is_none_or(|s| (400..500).contains(&s)), "{slow:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    assert_eq!(load.await.unwrap(), 0, "well-behaved requests failed");
}

/// 200 connections trickle a head a byte every 200 ms: each is cut off at
/// the header timeout (1 s here), and normal requests through the gateway
/// are answered throughout. Prints the figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_are_cut_off_while_others_are_served() {
    let reg = builtin().await;
    let _a = Echo::start(&reg, "web", "a", "v1", None).await;
    let config = Config::from_toml(
        "[limits]\nheader_timeout_ms = 1000\n[[route]]\nprefix = \"/\"\nservice = \"web\"\n",
    )
    .unwrap();
    let gw = Gw::start(&reg, config).await;
    wait_for_instances(gw.addr, "/", &[], &["a"]).await;
    let report = lodestar_test_support::slowloris::attack(
        &gw.addr.to_string(),
        200,
        Duration::from_millis(200),
        "/",
        Duration::from_secs(10),
    )
    .await;
    println!(
        "gateway under slowloris (header timeout 1 s): {}",
        report.summary()
    );
    report.assert_cut_off_at(Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_reach_http1_backends_and_host_routes_apply() {
    use http_body_util::{BodyExt, Full};
    let reg = builtin().await;
    let _a = Echo::start(&reg, "web", "a", "v1", None).await;
    let _b = Echo::start(&reg, "api", "b", "v1", None).await;
    let config = Config::from_toml(
        "[[route]]\nprefix = \"/\"\nservice = \"web\"\n\
         [[route]]\nprefix = \"/\"\nservice = \"api\"\nhost = \"api.example\"\n",
    )
    .unwrap();
    let gw = Gw::start(&reg, config).await;
    wait_for_instances(gw.addr, "/", &[], &["a"]).await;
    wait_for_instances(gw.addr, "/", &[("host", "api.example")], &["b"]).await;

    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for (authority, want) in [("web.example", "a"), ("api.example:80", "b")] {
        let request = http::Request::get(format!("http://{authority}/h2?x=1"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = send.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), http::Version::HTTP_2);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["instance"], want);
        assert_eq!(json["path"], "/h2");
        // The backend speaks HTTP/1.1: it got a Host from :authority.
        assert_eq!(json["headers"]["host"], authority);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_picked_up_without_a_signal_and_a_bad_one_is_refused() {
    let reg = builtin().await;
    let _one = Echo::start(&reg, "one", "one-a", "v1", None).await;
    let _two = Echo::start(&reg, "two", "two-a", "v1", None).await;
    let dir = std::env::temp_dir().join(format!("lodestar-gw-poll-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gateway.toml");
    std::fs::write(&file, "[[route]]\nprefix = \"/\"\nservice = \"one\"\n").unwrap();
    let config = lodestar_gateway::reload::load(&file, &[]).unwrap();
    let gw = Gw::start(&reg, config).await;
    let follow = tokio::spawn(lodestar_gateway::reload::follow(
        gw.gateway.clone(),
        file.clone(),
        vec!["/extra=one".to_string()],
    ));
    wait_for_instances(gw.addr, "/", &[], &["one-a"]).await;
    // Polled: a different size is a change even within the same second.
    std::fs::write(
        &file,
        "[[route]]\nprefix = \"/\"\nservice = \"two\"\n# changed\n",
    )
    .unwrap();
    wait_for_instances(gw.addr, "/", &[], &["two-a"]).await;
    // The --route flags are applied on top of the file.
    wait_for_instances(gw.addr, "/extra", &[], &["one-a"]).await;
    std::fs::write(&file, "[[route]]\nprefix = \"nope\"\nservice = \"one\"\n").unwrap();
    tokio::time::sleep(lodestar_gateway::reload::POLL * 3).await;
    wait_for_instances(gw.addr, "/", &[], &["two-a"]).await;
    wait_for_instances(gw.addr, "/extra", &[], &["one-a"]).await;
    follow.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_vanishing_uploader_gets_4xx_and_the_instance_is_not_blamed() {
    use tokio::io::AsyncWriteExt;
    let reg = builtin().await;
    let _a = Echo::start(&reg, "web", "a", "v1", None).await;
    // /sink reads the whole body before answering; /stall has a short body
    // pause limit; / a short per-try timeout.
    let config = Config::from_toml(
        "[limits]\nbody_timeout_ms = 300\n\
         [[route]]\nprefix = \"/\"\nservice = \"web\"\ntimeout_ms = 2000\n[route.retry]\nper_try_timeout_ms = 200\n",
    )
    .unwrap();
    let gw = Gw::start(&reg, config).await;
    wait_for_instances(gw.addr, "/", &[], &["a"]).await;
    let half = b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nfirst bytes";
    // More than the 3 failures in a row that eject: none of these counts.
    for _ in 0..4 {
        assert_eq!(raw_http(gw.addr, half, false).await, Some(408));
    }
    // A slow but steady upload, longer than the per-try timeout, goes through:
    // the timeouts count from the end of the body.
    {
        use tokio::io::AsyncReadExt;
        let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        stream
            .write_all(b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        for _ in 0..10 {
            stream.write_all(&[b'z'; 100]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut answer = Vec::new();
        tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
            .await
            .unwrap()
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("\"received\":1000"), "{answer}");
    }
    // The same with a per-try timeout longer than the body pause limit.
    gw.gateway.reload(
        Config::from_toml(
            "[limits]\nbody_timeout_ms = 200\n\
             [[route]]\nprefix = \"/\"\nservice = \"web\"\n",
        )
        .unwrap(),
    );
    for _ in 0..4 {
        assert_eq!(raw_http(gw.addr, half, false).await, Some(408));
    }
    // Clients that go away mid-body.
    for _ in 0..4 {
        let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        stream.write_all(half).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(stream);
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let metrics = gw.gateway.metrics().render();
    assert!(
        !metrics.contains("lodestar_gateway_ejections_total{"),
        "{metrics}"
    );
    let client = client();
    for _ in 0..5 {
        assert_eq!(get(&client, gw.addr, "/", &[]).await.instance(), "a");
    }
    // And a whole body is read and counted.
    let answer = send(&client, gw.addr, "POST", "/sink", &[], vec![1u8; 100_000])
        .await
        .unwrap();
    assert_eq!(answer.json()["received"], 100_000);
}

/// A registered instance that answers 500 to everything.
async fn sick_instance(reg: &Reg, service: &str, id: &str) -> (lodestar::Registration, Task) {
    use http_body_util::Full;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_| async {
                    let mut response = http::Response::new(Full::new(Bytes::from_static(b"sick")));
                    *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                    Ok::<_, std::convert::Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let instance = lodestar::Instance::new(service, id)
        .with_version("v1")
        .with_endpoint(lodestar::Endpoint::new("http", "127.0.0.1", port).unwrap());
    let registration = reg.registry.register(instance).await.unwrap();
    (registration, Task(task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_answering_5xx_in_a_row_is_ejected() {
    let reg = builtin().await;
    let _a = Echo::start(&reg, "web", "a", "v1", None).await;
    let _sick = sick_instance(&reg, "web", "sick").await;
    // No retries: every answer of the sick instance reaches the client.
    let config = Config::from_toml(
        "[[route]]\nprefix = \"/\"\nservice = \"web\"\npolicy = \"round_robin\"\n[route.retry]\nattempts = 1\n",
    )
    .unwrap();
    let gw = Gw::start(&reg, config).await;
    let client = client();
    lodestar_test_support::eventually("both instances in rotation", PATIENCE, || {
        let client = client.clone();
        async move {
            let mut statuses = std::collections::BTreeSet::new();
            for _ in 0..4 {
                statuses.insert(get(&client, gw.addr, "/", &[]).await.status);
            }
            statuses.len() == 2
        }
    })
    .await;
    // A few more 500s at most (3 in a row eject), then only the healthy one.
    let mut failures = 0;
    for _ in 0..10 {
        if get(&client, gw.addr, "/", &[]).await.status == 500 {
            failures += 1;
        }
    }
    assert!(failures <= 3, "{failures} answers from the sick instance");
    for _ in 0..50 {
        let answer = get(&client, gw.addr, "/", &[]).await;
        assert_eq!((answer.status, answer.instance()), (200, "a".to_string()));
    }
    lodestar_test_support::eventually("the ejection in the metrics", PATIENCE, || async {
        gw.gateway
            .metrics()
            .render()
            .contains("lodestar_gateway_ejections_total{service=\"web\",instance=\"sick\"} 1")
    })
    .await;
}

/// Thread per core (`serve_workers`, what `lodestar gateway` runs): every
/// worker's socket shares one port; connections land on all of them and
/// are served; at shutdown a request in flight on a worker finishes before
/// `serve_workers` returns, and the port stops accepting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_one_port_and_drain_at_shutdown() {
    use lodestar_gateway::{Gateway, Listeners};
    let reg = builtin().await;
    let _a = Echo::start(&reg, "web", "a", "v1", None).await;
    let _b = Echo::start(&reg, "web", "b", "v1", None).await;
    let gateway = Gateway::new(
        reg.registry.clone(),
        Config::default().with_route_flags(&["/=web"]).unwrap(),
    );
    let listeners = Listeners::bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
    assert_eq!(listeners.workers(), 3);
    let addr = listeners.local_addr();
    assert_ne!(addr.port(), 0);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn({
        let gateway = gateway.clone();
        async move {
            gateway
                .serve_workers(listeners, async {
                    let _ = stopped.await;
                })
                .await
        }
    });
    wait_for_instances(addr, "/", &[], &["a", "b"]).await;
    // Fresh connections each time, so the kernel spreads them over the
    // workers' sockets; every one is answered.
    let mut served = BTreeMap::<String, usize>::new();
    for _ in 0..60 {
        let answer = get(&client(), addr, "/", &[]).await;
        assert_eq!(answer.status, 200);
        *served.entry(answer.instance()).or_default() += 1;
    }
    assert_eq!(served.len(), 2, "{served:?}");

    let slow = tokio::spawn(async move { get(&client(), addr, "/delay/500", &[]).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let _ = stop.send(());
    let answer = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("the request in flight finished")
        .unwrap();
    assert_eq!(answer.status, 200, "drained, not cut");
    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("the workers stopped")
        .unwrap()
        .expect("no worker failed");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the port no longer accepts"
    );
}
