//! Where etcd is and how to talk to it: [`EtcdConfig`], parsed from an
//! `etcd://` URL or built in code.
//!
//! ```text
//! etcd://[user:password@]host:port[,host:port...][/prefix][?option=value&...]
//! ```
//!
//! | option | meaning | default |
//! | --- | --- | --- |
//! | `layout` | `lodestar`, or `go` for etcd's Go naming package | `lodestar` |
//! | `ttl` | lease TTL of registrations | `10s` |
//! | `connect_timeout` | time to reach etcd at start | `3s` |
//! | `timeout` | time for one request | `5s` |
//! | `tls` | `true` to use TLS (implied by `ca`, `cert`, `key`) | `false` |
//! | `ca`, `cert`, `key` | PEM files: CA to trust, client certificate and key | none |
//! | `domain` | server name to verify, when not the host | the host |
//!
//! Durations take `ms` or `s` suffixes (a bare number is seconds).
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use lodestar_etcd::{EtcdConfig, KeyLayout};
//!
//! let config: EtcdConfig = "etcd://10.0.0.1:2379,10.0.0.2:2379/prod?ttl=5s".parse().unwrap();
//! assert_eq!(config.endpoints, ["10.0.0.1:2379", "10.0.0.2:2379"]);
//! assert_eq!(config.prefix, "/prod");
//! assert_eq!(config.ttl, Duration::from_secs(5));
//! assert_eq!(config.layout, KeyLayout::Lodestar);
//!
//! let go: EtcdConfig = "etcd://127.0.0.1:2379?layout=go".parse().unwrap();
//! assert_eq!(go.prefix, "");
//! ```

use std::{path::PathBuf, str::FromStr, time::Duration};

use lodestar::Error;

/// The default key prefix of the lodestar layout.
pub const DEFAULT_PREFIX: &str = "/lodestar";

/// How instances are laid out in etcd's key space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyLayout {
    /// `<prefix>/services/<service>/<id>`, value: the instance record as JSON.
    #[default]
    Lodestar,
    /// etcd's Go naming package (`go.etcd.io/etcd/client/v3/naming/endpoints`):
    /// `<prefix>/<service>/<addr>`, value
    /// `{"Op":0,"Addr":"host:port","Metadata":"<record as a JSON string>"}`,
    /// so grpc-go clients using etcd's resolver find lodestar services and
    /// the other way round.
    Go,
}

/// TLS settings, passed through to the etcd client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file of the CA that signed the server's certificate.
    pub ca: Option<PathBuf>,
    /// PEM files of the client certificate and its key, for mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The name to verify in the server's certificate.
    pub domain: Option<String>,
}

/// How to reach etcd; see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `host:port` of each member to try.
    pub endpoints: Vec<String>,
    /// Key prefix; `/lodestar` for the lodestar layout, empty for the Go one.
    pub prefix: String,
    /// Key layout.
    pub layout: KeyLayout,
    /// Lease TTL of registrations; keep-alives go about every third of it.
    pub ttl: Duration,
    /// How long connecting may take before the registry counts as unreachable.
    pub connect_timeout: Duration,
    /// How long one request may take.
    pub request_timeout: Duration,
    /// User and password, when etcd has authentication on.
    pub user: Option<(String, String)>,
    /// TLS, when etcd serves it.
    pub tls: Option<TlsConfig>,
}

// === impl EtcdConfig ===

impl EtcdConfig {
    /// Defaults for these endpoints (`host:port` each).
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: DEFAULT_PREFIX.to_string(),
            layout: KeyLayout::Lodestar,
            ttl: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            user: None,
            tls: None,
        }
    }

    /// The endpoints as one string, for messages.
    pub fn display_endpoints(&self) -> String {
        self.endpoints.join(",")
    }

    fn apply_option(&mut self, key: &str, value: &str) -> Result<(), Error> {
        match key {
            "layout" => {
                self.layout = match value {
                    "lodestar" => KeyLayout::Lodestar,
                    "go" => KeyLayout::Go,
                    _ => {
                        return Err(config(format!(
                            "layout must be lodestar or go, not {value:?}"
                        )));
                    }
                }
            }
            "ttl" => self.ttl = lodestar::url::duration(key, value)?,
            "connect_timeout" => self.connect_timeout = lodestar::url::duration(key, value)?,
            "timeout" => self.request_timeout = lodestar::url::duration(key, value)?,
            "tls" => match value {
                "true" | "1" => {
                    self.tls.get_or_insert_with(TlsConfig::default);
                }
                "false" | "0" => self.tls = None,
                _ => return Err(config(format!("tls must be true or false, not {value:?}"))),
            },
            "ca" => self.tls_mut().ca = Some(value.into()),
            "cert" => self.tls_identity_mut().0 = value.into(),
            "key" => self.tls_identity_mut().1 = value.into(),
            "domain" => self.tls_mut().domain = Some(value.into()),
            _ => {
                return Err(config(format!(
                    "unknown option {key:?} (known: layout, ttl, connect_timeout, timeout, tls, ca, cert, key, domain)"
                )));
            }
        }
        Ok(())
    }

    fn tls_mut(&mut self) -> &mut TlsConfig {
        self.tls.get_or_insert_with(TlsConfig::default)
    }

    fn tls_identity_mut(&mut self) -> &mut (PathBuf, PathBuf) {
        self.tls_mut()
            .identity
            .get_or_insert_with(|| (PathBuf::new(), PathBuf::new()))
    }

    fn check(&self) -> Result<(), Error> {
        if self.ttl < Duration::from_secs(1) {
            return Err(config("ttl must be at least 1s".into()));
        }
        if let Some((cert, key)) = self.tls.as_ref().and_then(|t| t.identity.as_ref()) {
            if cert.as_os_str().is_empty() || key.as_os_str().is_empty() {
                return Err(config("cert and key go together".into()));
            }
        }
        Ok(())
    }
}

fn config(reason: String) -> Error {
    Error::Config(reason)
}

impl FromStr for EtcdConfig {
    type Err = Error;

    /// Parses `etcd://[user:password@]host:port[,...][/prefix][?options]`.
    fn from_str(url: &str) -> Result<Self, Error> {
        let rest = url.strip_prefix("etcd://").ok_or_else(|| {
            config(format!(
                "{url:?} is not an etcd URL (etcd://host:2379[,host:2379][/prefix])"
            ))
        })?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], Some(&rest[at..])),
            None => (rest, None),
        };
        let (user, hosts) = match authority.rsplit_once('@') {
            Some((user, hosts)) => {
                let (name, password) = user.split_once(':').unwrap_or((user, ""));
                (Some((name.to_string(), password.to_string())), hosts)
            }
            None => (None, authority),
        };
        let mut config = EtcdConfig::new(lodestar::url::hosts("etcd endpoint", hosts)?);
        config.user = user;
        for (key, value) in lodestar::url::options(query) {
            config.apply_option(key, value)?;
        }
        config.prefix = match (config.layout, path) {
            (KeyLayout::Lodestar, None | Some("/")) => DEFAULT_PREFIX.to_string(),
            (KeyLayout::Lodestar, Some(p)) => p.trim_end_matches('/').to_string(),
            // A Go target is used verbatim: `/foo` in the URL is `foo`.
            (KeyLayout::Go, None) => String::new(),
            (KeyLayout::Go, Some(p)) => p[1..].trim_end_matches('/').to_string(),
        };
        config.check()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_url() {
        let c: EtcdConfig =
            "etcd://root:s3cret@a:1,b:2/p/q/?layout=lodestar&ttl=2500ms&connect_timeout=1&timeout=2s&ca=/ca.pem&cert=/c.pem&key=/k.pem&domain=etcd.local"
                .parse()
                .unwrap();
        assert_eq!(c.endpoints, ["a:1", "b:2"]);
        assert_eq!(c.prefix, "/p/q");
        assert_eq!(c.user, Some(("root".into(), "s3cret".into())));
        assert_eq!(c.ttl, Duration::from_millis(2500));
        assert_eq!(c.connect_timeout, Duration::from_secs(1));
        assert_eq!(c.request_timeout, Duration::from_secs(2));
        let tls = c.tls.unwrap();
        assert_eq!(tls.ca, Some("/ca.pem".into()));
        assert_eq!(tls.identity, Some(("/c.pem".into(), "/k.pem".into())));
        assert_eq!(tls.domain.as_deref(), Some("etcd.local"));
    }

    #[test]
    fn defaults() {
        let c: EtcdConfig = "etcd://127.0.0.1:2379".parse().unwrap();
        assert_eq!(c.prefix, DEFAULT_PREFIX);
        assert_eq!(c.ttl, Duration::from_secs(10));
        assert_eq!(c.tls, None);
        let go: EtcdConfig = "etcd://h:1/foo/bar?layout=go".parse().unwrap();
        assert_eq!(go.prefix, "foo/bar");
    }

    #[test]
    fn rejects_bad_urls_with_a_reason() {
        for bad in [
            "http://h:1",
            "etcd://",
            "etcd://host",
            "etcd://host:port",
            "etcd://h:1,",
            "etcd://h:1?ttl=fast",
            "etcd://h:1?ttl=0",
            "etcd://h:1?ttl=500ms",
            "etcd://h:1?ttl=-3",
            "etcd://h:1?layout=zk",
            "etcd://h:1?colour=red",
            "etcd://h:1?cert=/c.pem",
            "etcd://h:1?tls=maybe",
        ] {
            let err = bad.parse::<EtcdConfig>().unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{bad}: {err}");
        }
    }
}
