//! The page in headless Chromium: Debian's `chromium` driven by
//! `playwright-core` (`tests/browser/driver.mjs`, installed by `cargo xtask
//! setup`), against a dashboard over real registries and echo servers.
//! A missing tool fails the test with what to run; nothing is skipped.
//!
//! The screenshots of docs/dashboard/ are taken here
//! (`LODESTAR_SCREENSHOTS=1 cargo test -p lodestar-dashboard --test browser`).

mod support;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use lodestar_dashboard::Config;
use lodestar_test_support::{EtcdNode, eventually};
use support::{PATIENCE, dashboard, echo};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
};

/// The headless browser, driven line by line.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    /// The browser's console errors, for failure messages.
    logs: Vec<String>,
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Where the screenshots go: docs/dashboard/ at the workspace root when
/// `LODESTAR_SCREENSHOTS=1` (to refresh the committed ones), else the
/// target directory, so a test run leaves the work tree as it was.
fn shot(name: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = if std::env::var_os("LODESTAR_SCREENSHOTS").is_some_and(|v| v == "1") {
        root.join("docs/dashboard")
    } else {
        root.join("target/dashboard-screenshots")
    };
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).display().to_string()
}

/// The system Chromium: `$CHROMIUM`, else `chromium` on PATH.
fn chromium() -> PathBuf {
    let named = std::env::var_os("CHROMIUM").map(PathBuf::from);
    let found = named.or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "chromium not found (set CHROMIUM or install Debian's `chromium`): run `cargo xtask setup`"
        )
    })
}

impl Browser {
    /// Opens `url` in a fresh headless Chromium.
    async fn open(url: &str) -> Browser {
        let dir = browser_dir();
        assert!(
            dir.join("node_modules/playwright-core").is_dir(),
            "playwright-core is not installed in {}: run `cargo xtask setup` (it runs `npm ci` there)",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg("driver.mjs")
            .arg(url)
            .current_dir(&dir)
            .env("CHROMIUM", chromium())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node ({e}): run `cargo xtask setup`"));
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut browser = Browser {
            child,
            stdin,
            stdout,
            logs: Vec::new(),
        };
        let ready = browser.answer().await;
        assert!(ready.starts_with("ok ready"), "{ready}");
        browser
    }

    /// The next answer that is not a log line.
    async fn answer(&mut self) -> String {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(30), self.stdout.next_line())
                .await
                .expect("the driver answers within 30 s")
                .unwrap()
                .unwrap_or_else(|| panic!("the driver ended; browser log: {:?}", self.logs));
            match line.strip_prefix("log ") {
                Some(log) => self.logs.push(log.to_string()),
                None => return line,
            }
        }
    }

    /// Runs one command; fails the test unless it succeeds.
    async fn run(&mut self, command: &str) -> String {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .unwrap();
        let answer = self.answer().await;
        assert!(
            answer.starts_with("ok "),
            "{answer}\nbrowser log: {:?}",
            self.logs
        );
        println!("{answer}");
        answer
    }

    /// Closes the browser and checks the driver's exit and the page's errors.
    async fn close(mut self) {
        self.stdin.write_all(b"quit\n").await.unwrap();
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the driver exits within 30 s")
            .unwrap();
        assert!(status.success(), "driver exit: {status}");
        let errors: Vec<&String> = self
            .logs
            .iter()
            // The write test sends a wrong token on purpose.
            .filter(|l| !l.contains("status of 401 (Unauthorized)"))
            .collect();
        assert!(errors.is_empty(), "page errors: {errors:?}");
    }
}

/// The service list, a new instance appearing and a removed one
/// disappearing without reload, the event feed, and the unreachable
/// registry's banner when etcd is killed; on etcd.
#[tokio::test]
async fn the_page_follows_etcd_live_and_shows_an_unreachable_registry() {
    let mut etcd = EtcdNode::start().await;
    let registry = lodestar_connect::connect(&etcd.url()).await.unwrap();
    let _a = echo(registry.clone(), "echo", "a", "v1").await;
    let _other = echo(registry.clone(), "greeter", "g1", "v3").await;
    let mut config = Config::new(etcd.url());
    config.health_every = Duration::from_millis(500);
    let served = dashboard(registry.clone(), config).await;
    eventually("echo to be listed", PATIENCE, || async {
        served.instances("echo").await.len() == 1
    })
    .await;

    let mut page = Browser::open(&format!("http://{}/", served.addr)).await;
    page.run(r#"wait #services tr[data-service="echo"]"#).await;
    page.run(r#"wait #services tr[data-service="greeter"]"#)
        .await;
    page.run(r#"wait #live.on"#).await;
    page.run(&format!("shot {}", shot("services.png"))).await;

    page.run("hash /service/echo").await;
    page.run(r#"wait #instances tr[data-id="a"]"#).await;
    page.run(r#"text #instances tr[data-id="a"] .health || SERVING"#)
        .await;

    // A new instance appears without reload, with its join in the feed.
    let b = echo(registry.clone(), "echo", "b", "v2").await;
    page.run(r#"wait #instances tr[data-id="b"]"#).await;
    page.run(r#"wait #feed li[data-kind="join"][data-id="b"]"#)
        .await;
    page.run(r#"text #instances tr[data-id="b"] .health || SERVING"#)
        .await;
    page.run(&format!("shot {}", shot("service.png"))).await;

    // A removed one disappears.
    b.stop().await;
    page.run(r#"gone #instances tr[data-id="b"]"#).await;
    page.run(r#"wait #feed li[data-kind="leave"][data-id="b"]"#)
        .await;
    page.run("same-page").await;

    // etcd killed: the banner, with the last known state still shown.
    etcd.kill();
    page.run("wait #banner-unreachable").await;
    page.run("text #banner-unreachable || Registry unreachable")
        .await;
    page.run("text #banner-unreachable || last known state")
        .await;
    page.run(r#"wait #instances tr[data-id="a"]"#).await;
    page.run(&format!("shot {}", shot("unreachable.png"))).await;
    page.run("same-page").await;
    page.close().await;
}

/// The built-in registry's node view: two peered nodes, each with its
/// peers' replication state and renews against the self-protection
/// threshold, and the banner while self-protection is on.
#[tokio::test]
async fn the_page_shows_the_built_in_registry_nodes() {
    use lodestar_registry::server::{Config as NodeConfig, Server};

    let ports = [
        lodestar_test_support::free_port(),
        lodestar_test_support::free_port(),
    ];
    let mut nodes = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let mut config = NodeConfig::new(([127, 0, 0, 1], *port).into());
        config.peers = vec![format!("127.0.0.1:{}", ports[1 - i])];
        config.zone = "sh001".into();
        config.warmup = Duration::from_millis(500);
        // Nodes that expect a renew every second over 2 s windows, while
        // clients renew every 30 s: self-protection turns on.
        config.renew_interval = Duration::from_secs(1);
        config.protect_window = Duration::from_secs(2);
        let server = Server::bind(config).await.unwrap();
        nodes.push(tokio::spawn(server.serve(std::future::pending())));
    }
    let url = format!("lodestar://127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1]);
    let registry = lodestar_connect::connect(&url).await.unwrap();
    let _a = echo(registry.clone(), "echo", "a", "v1").await;
    let _b = echo(registry.clone(), "echo", "b", "v1").await;
    let served = dashboard(registry.clone(), Config::new(url)).await;

    let mut page = Browser::open(&format!("http://{}/#/registry", served.addr)).await;
    for port in ports {
        page.run(&format!(
            r#"wait .card.node[data-node="127.0.0.1:{port}"] .protection"#
        ))
        .await;
        page.run(&format!(
            r#"text .card.node[data-node="127.0.0.1:{port}"] || replicating"#
        ))
        .await;
    }
    // The renews of a whole window, under the threshold, and the banner.
    page.run("text .card.node .protection || Renews in the last 2s window")
        .await;
    page.run("text .card.node .protection || self-protection ON")
        .await;
    page.run("wait #banner-protect").await;
    page.run("text #banner-protect || Self-protection is on")
        .await;
    page.run(&format!("shot {}", shot("registry.png"))).await;
    // The banner shows on the other pages too.
    page.run("hash /").await;
    page.run(r#"wait #services tr[data-service="echo"]"#).await;
    page.run("wait #banner-protect").await;
    page.close().await;
    for node in nodes {
        node.abort();
    }
}

/// Writes from the page on the built-in registry; see
/// [`set_down_from_the_page`].
#[tokio::test]
async fn setting_an_instance_down_from_the_page_takes_it_out_of_traffic() {
    use lodestar_registry::server::{Config as NodeConfig, Server};

    let server = Server::bind(NodeConfig::new("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let url = format!("lodestar://{}", server.local_addr().unwrap());
    let node = tokio::spawn(server.serve(std::future::pending()));
    set_down_from_the_page(&url, "service-writes.png").await;
    node.abort();
}

/// Writes from the page on etcd (the override kept beside the record).
#[tokio::test]
async fn setting_an_instance_down_from_the_page_on_etcd() {
    let etcd = EtcdNode::start().await;
    set_down_from_the_page(&etcd.url(), "service-writes-etcd.png").await;
}

/// Writes from the page: with the token and a name, setting an instance
/// down takes it out of a running `lodestar call`'s distribution, and the
/// write is in the audit list.
async fn set_down_from_the_page(url: &str, screenshot: &str) {
    let binary = lodestar_test_support::lodestar_binary();
    let url = url.to_string();
    let registry = lodestar_connect::connect(&url).await.unwrap();
    let a = echo(registry.clone(), "echo", "a", "v1").await;
    let b = echo(registry.clone(), "echo", "b", "v1").await;
    let served = dashboard(
        registry.clone(),
        Config::new(url.clone()).with_writes("tok3n"),
    )
    .await;
    eventually("a and b to be listed", PATIENCE, || async {
        served.instances("echo").await.len() == 2
    })
    .await;

    let mut page = Browser::open(&format!("http://{}/#/service/echo", served.addr)).await;
    page.run(r#"wait #instances tr[data-id="a"] button[data-action="status"]"#)
        .await;
    // Without the token, the page says so and nothing changes.
    page.run(r#"click #instances tr[data-id="a"] button[data-action="status"]"#)
        .await;
    page.run("text #write-result || Give the token").await;
    page.run("fill #who || ann").await;
    page.run("fill #token || wrong").await;
    page.run(r#"click #instances tr[data-id="a"] button[data-action="status"]"#)
        .await;
    page.run("text #write-result || refused (401)").await;
    page.run("fill #token || tok3n").await;

    // A call running when the write lands: calls shared by round robin
    // for 2 s, then the write.
    let mut call = Command::new(binary)
        .args([
            "--registry",
            &url,
            "call",
            "echo",
            "--json",
            "--duration",
            "15",
        ])
        // Paced (5 ms a call, two at a time): a call loop at full speed
        // would starve the browser of the machine's two cores.
        .args([
            "--policy",
            "round_robin",
            "--concurrency",
            "2",
            "--delay-ms",
            "5",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let (a0, b0) = (a.calls(), b.calls());
    eventually("the call to reach a and b", PATIENCE, || async {
        a.calls() > a0 + 100 && b.calls() > b0 + 100
    })
    .await;
    page.run(r#"click #instances tr[data-id="a"] button[data-action="status"]"#)
        .await;
    page.run(r#"text #instances tr[data-id="a"] .status || down"#)
        .await;
    // The call's own watch gets the change as fast as the dashboard's;
    // calls in flight to a (at most the concurrency) may still land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (a_then, b_then) = (a.calls(), b.calls());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (a_now, b_now) = (a.calls(), b.calls());
    if let Some(status) = call.try_wait().unwrap() {
        panic!("lodestar call must still be running for the window measured; it ended: {status}");
    }
    println!(
        "while a was down: a got {} calls, b {}",
        a_now - a_then,
        b_now - b_then
    );
    assert!(a_then > 0, "a answered before it went down");
    assert!(
        a_now - a_then <= 1,
        "a left the running call's distribution: {a_then} -> {a_now}"
    );
    assert!(b_now - b_then > 50, "b took the calls: {b_then} -> {b_now}");
    page.run(r#"wait #feed li[data-kind="down"][data-id="a"]"#)
        .await;
    page.run(&format!("shot {}", shot(screenshot))).await;
    page.run("hash /audit").await;
    page.run("text #audit || status down").await;
    page.run("text #audit || ann").await;
    page.close().await;

    let out = tokio::time::timeout(Duration::from_secs(30), call.wait_with_output())
        .await
        .expect("lodestar call ends")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let count = |id: &str| summary["by_instance"][id].as_u64().unwrap_or(0);
    println!(
        "lodestar call: a {} calls, b {} calls",
        count("a"),
        count("b")
    );
    assert!(count("a") > 0 && count("b") > count("a"), "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");
}
