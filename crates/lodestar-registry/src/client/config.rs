//! Where the registry is and how to talk to it: [`ClientConfig`], parsed
//! from a `lodestar://` URL or built in code.
//!
//! The URL and its options are described in the [`client`](crate::client)
//! module docs.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use lodestar_registry::ClientConfig;
//!
//! let config: ClientConfig = "lodestar://10.0.0.1:7171,10.0.0.2:7171?env=prod&zone=z1".parse().unwrap();
//! assert_eq!(config.nodes, ["10.0.0.1:7171", "10.0.0.2:7171"]);
//! assert_eq!((config.env.as_str(), config.zone.as_str()), ("prod", "z1"));
//! assert_eq!(config.renew_every(), Duration::from_secs(30));
//!
//! let short: ClientConfig = "lodestar://127.0.0.1:7171?ttl=3".parse().unwrap();
//! assert_eq!(short.renew_every(), Duration::from_secs(1));
//! ```

use std::{str::FromStr, time::Duration};

use lodestar::Error;

use crate::Token;

/// The port `lodestar registry` listens on by default.
pub const DEFAULT_PORT: u16 = 7171;

/// How to reach the registry; see the [`client`](crate::client) module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// `host:port` of each node, tried in turn.
    pub nodes: Vec<String>,
    /// Environment (`env`) of registrations and lookups.
    pub env: String,
    /// Zone of registrations whose metadata has no `zone`.
    pub zone: String,
    /// The TTL registrations ask for; `None` for the registry's own eviction.
    pub ttl: Option<Duration>,
    /// Renew interval when there is no TTL.
    pub renew_interval: Duration,
    /// How long reaching a node may take at start.
    pub connect_timeout: Duration,
    /// How long one request may take; polls get the server's hold on top.
    pub request_timeout: Duration,
    /// The nodes' shared secret, sent with every request; `Debug` shows it
    /// redacted.
    pub token: Option<Token>,
}

// === impl ClientConfig ===

impl ClientConfig {
    /// Defaults for these nodes (`host:port` each).
    pub fn new<I, S>(nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            nodes: nodes.into_iter().map(Into::into).collect(),
            env: "dev".to_string(),
            zone: "default".to_string(),
            ttl: None,
            renew_interval: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            token: None,
        }
    }

    /// How often registrations renew: a third of the TTL, else the renew
    /// interval.
    pub fn renew_every(&self) -> Duration {
        match self.ttl {
            Some(ttl) => (ttl / 3).max(Duration::from_millis(100)),
            None => self.renew_interval,
        }
    }

    /// The nodes as one string, for messages.
    pub fn display_nodes(&self) -> String {
        self.nodes.join(",")
    }

    fn apply_option(&mut self, key: &str, value: &str) -> Result<(), Error> {
        match key {
            "env" => self.env = nonempty(key, value)?,
            "zone" => self.zone = nonempty(key, value)?,
            "ttl" => {
                let ttl = lodestar::url::duration(key, value)?;
                if ttl < Duration::from_secs(1) {
                    return Err(config("ttl must be at least 1s".into()));
                }
                self.ttl = Some(ttl);
            }
            "renew" => self.renew_interval = lodestar::url::duration(key, value)?,
            "connect_timeout" => self.connect_timeout = lodestar::url::duration(key, value)?,
            "timeout" => self.request_timeout = lodestar::url::duration(key, value)?,
            "token" => {
                let token = Token::new(value).map_err(|e| config(format!("token: {e}")))?;
                self.token = Some(token);
            }
            _ => {
                return Err(config(format!(
                    "unknown option {key:?} (known: env, zone, ttl, renew, connect_timeout, timeout, token)"
                )));
            }
        }
        Ok(())
    }
}

fn config(reason: String) -> Error {
    Error::Config(reason)
}

fn nonempty(key: &str, value: &str) -> Result<String, Error> {
    let bad = value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control());
    match bad {
        true => Err(config(format!(
            "{key} must be a non-empty name, not {value:?}"
        ))),
        false => Ok(value.to_string()),
    }
}

impl FromStr for ClientConfig {
    type Err = Error;

    /// Parses `lodestar://host:port[,...][?options]`.
    fn from_str(url: &str) -> Result<Self, Error> {
        let rest = url.strip_prefix("lodestar://").ok_or_else(|| {
            config(format!(
                "{:?} is not a lodestar URL (lodestar://host:7171[,host:7171])",
                crate::token::redact_url(url)
            ))
        })?;
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let hosts = hosts.trim_end_matches('/');
        let mut config = ClientConfig::new(lodestar::url::hosts("registry node", hosts)?);
        for (key, value) in lodestar::url::options(query) {
            config.apply_option(key, value)?;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options() {
        let c: ClientConfig =
            "lodestar://a:1,b:2/?env=prod&zone=sh001&ttl=2500ms&renew=10&connect_timeout=1s&timeout=2s"
                .parse()
                .unwrap();
        assert_eq!(c.nodes, ["a:1", "b:2"]);
        assert_eq!(c.ttl, Some(Duration::from_millis(2500)));
        assert_eq!(c.renew_interval, Duration::from_secs(10));
        assert_eq!(c.connect_timeout, Duration::from_secs(1));
        assert_eq!(c.request_timeout, Duration::from_secs(2));
        let d: ClientConfig = "lodestar://127.0.0.1:7171".parse().unwrap();
        assert_eq!((d.env.as_str(), d.ttl), ("dev", None));
    }

    #[test]
    fn a_token_is_kept_and_never_printed() {
        let c: ClientConfig = "lodestar://a:1?token=s3cret&env=prod".parse().unwrap();
        assert!(c.token.as_ref().unwrap().matches("s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
        for bad in [
            "etcd://h:1?token=s3cret",
            "lodestar://h:1?token=s3cret&colour=red",
        ] {
            let err = bad.parse::<ClientConfig>().unwrap_err().to_string();
            assert!(!err.contains("s3cret"), "{err}");
        }
    }

    #[test]
    fn rejects_bad_urls_with_a_reason() {
        for bad in [
            "etcd://h:1",
            "lodestar://",
            "lodestar://host",
            "lodestar://h:port",
            "lodestar://h:1,",
            "lodestar://h:1?ttl=soon",
            "lodestar://h:1?ttl=500ms",
            "lodestar://h:1?env=",
            "lodestar://h:1?colour=red",
            "lodestar://h:1?token=",
            "lodestar://h:1?token=a b",
        ] {
            let err = bad.parse::<ClientConfig>().unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{bad}: {err}");
        }
    }
}
