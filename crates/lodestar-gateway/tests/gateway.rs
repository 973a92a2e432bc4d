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
    let gw = Gw::routes(&reg, &["/=web"]).await;
    wait_for_instances(gw.addr, "/", &[], &["base-v1", "base-v2"]).await;
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
    gw.gateway.reload(
        Config::from_toml("[[route]]\nprefix=\"/\"\nservice=\"web\"\npolicy=\"consistent_hash\"")
            .unwrap(),
    );
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
        "[[route]]\nprefix = \"/\"\nservice = \"web\"\n[route.rate_limit]\nper_sec = 0.5\nburst = 3\n",
    )
    .unwrap();
    let gw = Gw::start(&reg, config).await;
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
