//! TLS to etcd: a real etcd serving its client port over TLS with a
//! certificate signed by a CA made for the test (openssl CLI).

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
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=lodestar test CA",
        ],
    );
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

fn start() -> TlsEtcd {
    let dir = std::env::temp_dir().join(format!(
        "lodestar-tls-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir);
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

#[tokio::test]
async fn tls_options_reach_etcd() {
    let etcd = start();
    let ca = etcd.dir.join("ca.pem");
    let url = format!(
        "etcd://127.0.0.1:{}?ca={}&connect_timeout=1s",
        etcd.port,
        ca.display()
    );
    // etcd takes a moment to serve: retry, bounded.
    let mut registry = None;
    for _ in 0..100 {
        if let Ok(r) = connect(&url).await {
            registry = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let registry = registry.unwrap_or_else(|| {
        panic!(
            "no TLS etcd; log:\n{}",
            std::fs::read_to_string(etcd.dir.join("etcd.log")).unwrap_or_default()
        )
    });
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
