//! The gateway's configuration: routes from `--route PREFIX=SERVICE` flags
//! and from a TOML file, gateway-wide limits, and their validation.
//!
//! ```toml
//! [limits]
//! max_header_bytes = 65536      # request head (HTTP/1) / header list (HTTP/2)
//! max_body_bytes = 10485760     # request body; 0: no limit
//! header_timeout_ms = 10000     # a client must send its head within this
//! body_timeout_ms = 10000       # ...and pause at most this between pieces of its body
//! drain_timeout_ms = 30000      # SIGTERM: in-flight requests get this long
//!
//! [trust]
//! headers = false               # routes trust clients' lodestar-* headers? (default for routes)
//! sources = ["10.0.0.0/8"]      # clients from these networks are trusted on every route
//!
//! [[route]]
//! prefix = "/api"
//! service = "echo"
//! host = "api.example.com"      # optional: only this Host
//! strip_prefix = true           # /api/users -> /users
//! policy = "p2c"                # any built-in balancing policy
//! timeout_ms = 15000            # whole request, retries included
//! version = "v2"                # pin: only instances of this version
//! trust_headers = true          # keep clients' lodestar-version/-color/-hash-key here
//!
//! [route.retry]
//! attempts = 3                  # tries in all (1: no retry)
//! on_status = [502, 503, 504]   # retried for idempotent methods
//! per_try_timeout_ms = 5000
//! budget_ratio = 0.2            # retries at most 20 % of requests...
//! budget_min_per_sec = 10       # ...plus this many per second
//!
//! [route.rate_limit]
//! per_sec = 100                 # token bucket refill
//! burst = 200                   # bucket size
//! ```
//!
//! # Examples
//!
//! ```
//! use lodestar_gateway::config::Config;
//!
//! let config = Config::from_toml("[[route]]\nprefix = \"/api\"\nservice = \"echo\"\n")?;
//! assert_eq!(config.routes[0].service, "echo");
//! assert!(Config::from_toml("[[route]]\nprefix = \"api\"\nservice = \"echo\"\n").is_err());
//! # Ok::<(), lodestar_gateway::config::Error>(())
//! ```

use std::{path::Path, time::Duration};

use lodestar::balance::BuiltinPolicy;
use serde::Deserialize;

use crate::trust::TrustConfig;

/// A configuration that cannot be used, with what is wrong in it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML does not parse or has unknown fields.
    #[error("invalid TOML: {0}")]
    Toml(String),
    /// A value breaks a rule.
    #[error("{0}")]
    Invalid(String),
}

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Gateway-wide limits.
    #[serde(default)]
    pub limits: Limits,
    /// Whose `lodestar-*` headers are believed; see [`crate::trust`].
    #[serde(default)]
    pub trust: TrustConfig,
    /// The routes; the longest matching prefix wins.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
}

/// Gateway-wide limits on what a client may send.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request head in bytes (HTTP/1: the read buffer, at least
    /// 8,192; HTTP/2: the header list); beyond it the client gets 431.
    pub max_header_bytes: usize,
    /// Largest request body in bytes (413 beyond it); 0: no limit.
    pub max_body_bytes: u64,
    /// A client must send its request head within this (slow clients are
    /// cut off).
    pub header_timeout_ms: u64,
    /// A client may pause at most this long between two pieces of its
    /// request body (408 beyond it; the instance is not blamed).
    pub body_timeout_ms: u64,
    /// On SIGTERM, requests in flight get this long to finish.
    pub drain_timeout_ms: u64,
}

/// One route: requests whose path starts with `prefix` go to `service`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The path prefix, starting with `/`; it matches whole segments
    /// (`/api` matches `/api` and `/api/x`, not `/apix`).
    pub prefix: String,
    /// The discovered service.
    pub service: String,
    /// Only requests for this host (the `Host` header or `:authority`,
    /// without port); any host when absent.
    #[serde(default)]
    pub host: Option<String>,
    /// Removes the prefix before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
    /// The balancing policy by name (`p2c`, `round_robin`, ...).
    #[serde(default = "default_policy")]
    pub policy: String,
    /// The whole request (retries included) until the response head: 504
    /// beyond it.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Only instances of this version (overrides the request's
    /// `lodestar-version` header).
    #[serde(default)]
    pub version: Option<String>,
    /// Whether clients' `lodestar-*` headers (lane, pinned version, hash
    /// key) are kept on this route; the gateway-wide `[trust] headers` when
    /// absent. Untrusted ones are removed before balancing and forwarding.
    #[serde(default)]
    pub trust_headers: Option<bool>,
    /// Retries.
    #[serde(default)]
    pub retry: RetryConfig,
    /// A token bucket for this route; none when absent.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
}

/// When a request is tried again on another instance.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Tries in all, the first included (1: no retry).
    pub attempts: u32,
    /// Statuses retried for idempotent methods whose body can be sent again.
    pub on_status: Vec<u16>,
    /// One try's limit until the response head.
    pub per_try_timeout_ms: u64,
    /// Status and timeout retries may add at most this share of requests.
    pub budget_ratio: f64,
    /// ...plus this many retries per second, so a quiet route can retry.
    pub budget_min_per_sec: f64,
}

/// A route's token bucket.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Tokens added per second.
    pub per_sec: f64,
    /// The bucket's size: the largest burst.
    pub burst: f64,
}

fn default_policy() -> String {
    BuiltinPolicy::P2c.name().to_string()
}

fn default_timeout_ms() -> u64 {
    15_000
}

// === impl Config ===

impl Config {
    /// Parses and validates a TOML document.
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        let config: Config = toml::from_str(text).map_err(|e| Error::Toml(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Adds routes given as `PREFIX=SERVICE` (the `--route` flag), with the
    /// default options; validates the result.
    pub fn with_route_flags<S: AsRef<str>>(mut self, flags: &[S]) -> Result<Self, Error> {
        for flag in flags {
            self.routes.push(RouteConfig::from_flag(flag.as_ref())?);
        }
        self.validate()?;
        Ok(self)
    }

    /// Checks every rule; the error names the offending route.
    pub fn validate(&self) -> Result<(), Error> {
        self.limits.validate()?;
        let mut seen = std::collections::HashSet::new();
        for route in &self.routes {
            route
                .validate()
                .map_err(|e| Error::Invalid(format!("route {}: {e}", route.prefix)))?;
            if !seen.insert((route.host.clone(), route.prefix.clone())) {
                return Err(Error::Invalid(format!(
                    "route {}: the same prefix (and host) appears twice",
                    route.prefix
                )));
            }
        }
        Ok(())
    }
}

// === impl Limits ===

impl Limits {
    fn validate(&self) -> Result<(), Error> {
        if self.max_header_bytes < 1024 {
            return Err(Error::Invalid(
                "limits.max_header_bytes must be at least 1024".into(),
            ));
        }
        if self.header_timeout_ms == 0 || self.body_timeout_ms == 0 {
            return Err(Error::Invalid(
                "limits.header_timeout_ms and limits.body_timeout_ms must be positive".into(),
            ));
        }
        Ok(())
    }

    /// [`Limits::header_timeout_ms`] as a duration.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    /// [`Limits::body_timeout_ms`] as a duration.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }

    /// [`Limits::drain_timeout_ms`] as a duration.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            max_body_bytes: 0,
            header_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            drain_timeout_ms: 30_000,
        }
    }
}

// === impl RouteConfig ===

impl RouteConfig {
    /// A route to `service` with the default options.
    pub fn new(prefix: impl Into<String>, service: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            service: service.into(),
            host: None,
            strip_prefix: false,
            policy: default_policy(),
            timeout_ms: default_timeout_ms(),
            version: None,
            trust_headers: None,
            retry: RetryConfig::default(),
            rate_limit: None,
        }
    }

    /// Parses `PREFIX=SERVICE`.
    pub fn from_flag(flag: &str) -> Result<Self, Error> {
        let Some((prefix, service)) = flag.split_once('=') else {
            return Err(Error::Invalid(format!(
                "--route {flag:?}: expected PREFIX=SERVICE, e.g. /api=echo"
            )));
        };
        let route = Self::new(prefix.trim(), service.trim());
        route
            .validate()
            .map_err(|e| Error::Invalid(format!("--route {flag:?}: {e}")))?;
        Ok(route)
    }

    /// The route's timeout as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    fn validate(&self) -> Result<(), String> {
        if !self.prefix.starts_with('/') {
            return Err("the prefix must start with '/'".into());
        }
        if self
            .prefix
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err("the prefix has whitespace or control characters".into());
        }
        if self.service.is_empty()
            || self
                .service
                .chars()
                .any(|c| c == '/' || c.is_whitespace() || c.is_control())
        {
            return Err(format!("invalid service name {:?}", self.service));
        }
        if let Some(host) = &self.host
            && (host.is_empty() || host.contains(['/', ' ']))
        {
            return Err(format!("invalid host {host:?}"));
        }
        if let Err(e) = lodestar::balance::Balancer::builder().policy_name(&self.policy) {
            return Err(e.to_string());
        }
        if self.timeout_ms == 0 {
            return Err("timeout_ms must be positive".into());
        }
        self.retry.validate()?;
        if let Some(limit) = &self.rate_limit {
            limit.validate()?;
        }
        Ok(())
    }
}

// === impl RetryConfig ===

impl RetryConfig {
    fn validate(&self) -> Result<(), String> {
        if self.attempts == 0 || self.attempts > 10 {
            return Err("retry.attempts must be between 1 and 10".into());
        }
        if let Some(code) = self.on_status.iter().find(|c| !(100..=599).contains(*c)) {
            return Err(format!("retry.on_status: {code} is not an HTTP status"));
        }
        if self.per_try_timeout_ms == 0 {
            return Err("retry.per_try_timeout_ms must be positive".into());
        }
        if !(0.0..=10.0).contains(&self.budget_ratio) || !self.budget_min_per_sec.is_finite() {
            return Err("retry.budget_ratio must be between 0 and 10".into());
        }
        if self.budget_min_per_sec < 0.0 {
            return Err("retry.budget_min_per_sec must not be negative".into());
        }
        Ok(())
    }

    /// One try's timeout as a duration.
    pub fn per_try_timeout(&self) -> Duration {
        Duration::from_millis(self.per_try_timeout_ms)
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: 3,
            on_status: vec![502, 503, 504],
            per_try_timeout_ms: 5_000,
            budget_ratio: 0.2,
            budget_min_per_sec: 10.0,
        }
    }
}

// === impl RateLimitConfig ===

impl RateLimitConfig {
    fn validate(&self) -> Result<(), String> {
        if !(self.per_sec.is_finite() && self.per_sec > 0.0) {
            return Err("rate_limit.per_sec must be positive".into());
        }
        if !(self.burst.is_finite() && self.burst >= 1.0) {
            return Err("rate_limit.burst must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses() {
        let config = Config::from_toml(
            r#"
            [limits]
            max_body_bytes = 1000
            [[route]]
            prefix = "/api"
            service = "echo"
            host = "a.example"
            strip_prefix = true
            policy = "round_robin"
            version = "v2"
            [route.retry]
            attempts = 2
            on_status = [503]
            [route.rate_limit]
            per_sec = 5
            burst = 10
            "#,
        )
        .unwrap();
        let route = &config.routes[0];
        assert_eq!(config.limits.max_body_bytes, 1000);
        assert_eq!(route.host.as_deref(), Some("a.example"));
        assert!(route.strip_prefix);
        assert_eq!(route.retry.attempts, 2);
        assert_eq!(route.retry.per_try_timeout_ms, 5_000);
        assert_eq!(route.rate_limit.as_ref().unwrap().burst, 10.0);
    }

    #[test]
    fn bad_files_name_the_problem() {
        let err = |text: &str| Config::from_toml(text).unwrap_err().to_string();
        assert!(err("[[route]]\nprefix = \"/a\"\n").contains("service"));
        assert!(err("[[route]]\nprefix=\"/a\"\nservice=\"s\"\npolicy=\"x\"").contains("route /a"));
        assert!(err("[[route]]\nprefix=\"/a\"\nservice=\"s\"\nbogus=1").contains("bogus"));
        assert!(
            err("[[route]]\nprefix=\"/a\"\nservice=\"s\"\n[[route]]\nprefix=\"/a\"\nservice=\"t\"")
                .contains("twice")
        );
        assert!(err("not toml [").contains("invalid TOML"));
    }

    #[test]
    fn route_flags() {
        let config = Config::default()
            .with_route_flags(&["/api=echo", "/=web"])
            .unwrap();
        assert_eq!(config.routes.len(), 2);
        assert!(Config::default().with_route_flags(&["/api"]).is_err());
        assert!(Config::default().with_route_flags(&["api=echo"]).is_err());
    }
}
