//! TLS to etcd: a real etcd serving its client port over TLS with a
//! certificate signed by a CA made for the test (openssl CLI), and one
//! that also requires client certificates (mutual TLS).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use lodestar::{Discovery, Error, Instance, Registrar};
use lodestar_etcd::EtcdRegistry;
use lodestar_test_support::{etcd_binary, free_port};

struct TlsEtcd {
    dir: PathBuf,
    port: u16,
    child: Child,
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command is needed to make test certificates");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a server certificate for 127.0.0.1 signed by it.
fn certificates(dir: &Path) {
    ca(dir, "ca", "lodestar test CA");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
        ],
    );
}

/// A client certificate named `name` signed by the CA `ca` (`ca.pem` and
/// `ca.key` in `dir`, or another pair).
fn client_certificate(dir: &Path, ca: &str, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    std::fs::write(dir.join("client.cnf"), "extendedKeyUsage=clientAuth\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "1",
            "-extfile",
            "client.cnf",
        ],
    );
}

/// A self-signed CA: `NAME.key` and `NAME.pem` in `dir`.
fn ca(dir: &Path, name: &str, subject: &str) {
    let (key, pem, subj) = (
        format!("{name}.key"),
        format!("{name}.pem"),
        format!("/CN={subject}"),
    );
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &pem,
            "-days", "1", "-subj", &subj,
        ],
    );
}

fn start() -> TlsEtcd {
    start_with(&[])
}

/// A TLS etcd that also requires a client certificate signed by its CA;
/// `client` (trusted) and `rogue` (signed by another CA) are made in its
/// directory.
fn start_mutual() -> TlsEtcd {
    start_with(&["--client-cert-auth", "--trusted-ca-file", "ca.pem"])
}

fn start_with(extra: &[&str]) -> TlsEtcd {
    let dir = std::env::temp_dir().join(format!(
        "lodestar-tls-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir);
    if !extra.is_empty() {
        client_certificate(&dir, "ca", "client");
        ca(&dir, "rogue-ca", "rogue CA");
        client_certificate(&dir, "rogue-ca", "rogue");
    }
    let (port, peer) = (free_port(), free_port());
    let client = format!("https://127.0.0.1:{port}");
    let peer = format!("http://127.0.0.1:{peer}");
    let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
    let child = Command::new(etcd_binary())
        .args(["--name", "tls", "--data-dir"])
        .arg(dir.join("data"))
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("tls={peer}")])
        .args(["--cert-file", "server.pem", "--key-file", "server.key"])
        .args(extra)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("etcd runs");
    TlsEtcd { dir, port, child }
}

async fn connect(url: &str) -> Result<EtcdRegistry, Error> {
    EtcdRegistry::connect(url.parse().unwrap()).await
}

/// Connects once etcd serves (it takes a moment): retries, bounded.
async fn connect_when_up(etcd: &TlsEtcd, url: &str) -> EtcdRegistry {
    for _ in 0..100 {
        if let Ok(r) = connect(url).await {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "no TLS etcd; log:\n{}",
        std::fs::read_to_string(etcd.dir.join("etcd.log")).unwrap_or_default()
    )
}

fn chain(err: &Error) -> String {
    lodestar::ErrorChain(err).to_string()
}

#[tokio::test]
async fn tls_options_reach_etcd() {
    let etcd = start();
    let ca = etcd.dir.join("ca.pem");
    let url = format!(
        "etcd://127.0.0.1:{}?ca={}&connect_timeout=1s",
        etcd.port,
        ca.display()
    );
    let registry = connect_when_up(&etcd, &url).await;
    let instance = Instance::new("echo", "a").with_endpoint("grpc://127.0.0.1:1".parse().unwrap());
    let _registration = registry.register(instance).await.unwrap();
    assert_eq!(registry.get("echo").await.unwrap().len(), 1);

    // Plain text to a TLS port, or a server certificate nobody vouches for:
    // a clear error, no hang.
    let plain = format!("etcd://127.0.0.1:{}?connect_timeout=1s", etcd.port);
    assert!(matches!(
        connect(&plain).await,
        Err(Error::Unreachable { .. })
    ));
    let untrusted = format!("etcd://127.0.0.1:{}?tls=true&connect_timeout=1s", etcd.port);
    assert!(matches!(
        connect(&untrusted).await,
        Err(Error::Unreachable { .. })
    ));
    let missing = format!("etcd://127.0.0.1:{}?ca=/nonexistent/ca.pem", etcd.port);
    let err = connect(&missing).await.unwrap_err();
    assert!(
        matches!(err, Error::Config(_)) && err.to_string().contains("/nonexistent/ca.pem"),
        "{err}"
    );
}

/// etcd requiring client certificates (`--client-cert-auth`): a client
/// with a certificate signed by etcd's CA registers and discovers; one
/// without a certificate, or with one from another CA, gets a clear error
/// at connect, naming the address and the TLS failure.
#[tokio::test]
async fn client_certificates_are_presented_and_required() {
    let etcd = start_mutual();
    let file = |name: &str| etcd.dir.join(name).display().to_string();
    let url = |cert: Option<&str>| {
        let mut url = format!(
            "etcd://127.0.0.1:{}?ca={}&connect_timeout=1s",
            etcd.port,
            file("ca.pem")
        );
        if let Some(name) = cert {
            url.push_str(&format!(
                "&cert={}&key={}",
                file(&format!("{name}.pem")),
                file(&format!("{name}.key"))
            ));
        }
        url
    };
    let registry = connect_when_up(&etcd, &url(Some("client"))).await;
    let instance = Instance::new("echo", "a").with_endpoint("grpc://127.0.0.1:1".parse().unwrap());
    let _registration = registry.register(instance).await.unwrap();
    assert_eq!(registry.get("echo").await.unwrap().len(), 1);
    let mut watch = registry.watch("echo").await.unwrap();
    assert_eq!(watch.next().await.unwrap().len(), 1);

    for (what, cert) in [
        ("no client certificate", None),
        ("an untrusted client certificate", Some("rogue")),
    ] {
        let err = connect(&url(cert)).await.expect_err(what);
        let text = chain(&err);
        println!("{what}: {text}");
        assert!(matches!(err, Error::Unreachable { .. }), "{what}: {text}");
        assert!(
            text.contains(&format!("127.0.0.1:{}", etcd.port)),
            "{what}: {text}"
        );
        assert!(
            text.contains("TLS failed") && text.contains("client certificate"),
            "{what}: the error names the TLS failure: {text}"
        );
    }
    // A client certificate without its key: a configuration error.
    let half = format!("{}&cert={}", url(None), file("client.pem"));
    let err = match half.parse::<lodestar_etcd::EtcdConfig>() {
        Ok(config) => EtcdRegistry::connect(config).await.expect_err("no key"),
        Err(err) => err,
    };
    assert!(matches!(err, Error::Config(_)), "{err}");
}
