//! Pieces shared by the backends' registry URL parsers
//! (`etcd://`, `lodestar://`): durations, `host:port` lists and options.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use lodestar::url;
//!
//! assert_eq!(url::duration("ttl", "500ms").unwrap(), Duration::from_millis(500));
//! assert_eq!(url::duration("ttl", "3").unwrap(), Duration::from_secs(3));
//! assert!(url::duration("ttl", "0s").is_err());
//! assert_eq!(url::hosts("etcd endpoint", "a:1,b:2").unwrap(), ["a:1", "b:2"]);
//! assert!(url::hosts("etcd endpoint", "a").is_err());
//! let options: Vec<_> = url::options("ttl=3s&tls").collect();
//! assert_eq!(options, [("ttl", "3s"), ("tls", "")]);
//! ```

use std::time::Duration;

use crate::Error;

/// A positive duration: `500ms`, `10s`, or a bare number of seconds.
pub fn duration(key: &str, value: &str) -> Result<Duration, Error> {
    let bad = || {
        Error::Config(format!(
            "{key} must be a duration like 500ms or 10s, not {value:?}"
        ))
    };
    let (number, scale) = match value.strip_suffix("ms") {
        Some(ms) => (ms, 1e-3),
        None => (value.strip_suffix('s').unwrap_or(value), 1.0),
    };
    let secs = number.parse::<f64>().map_err(|_| bad())? * scale;
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(bad)
}

/// A comma-separated list of `host:port`; `what` names one in errors.
pub fn hosts(what: &str, list: &str) -> Result<Vec<String>, Error> {
    list.split(',')
        .map(|host| check_host_port(what, host).map(|()| host.to_string()))
        .collect()
}

fn check_host_port(what: &str, value: &str) -> Result<(), Error> {
    let bad = |why: &str| Error::Config(format!("{what} {value:?}: {why}"));
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| bad("expected host:port"))?;
    if host.is_empty() || host.contains(['/', '@', '?']) {
        return Err(bad("expected host:port"));
    }
    port.parse::<u16>()
        .map_err(|_| bad("port is not a number"))?;
    Ok(())
}

/// The `key=value` pairs of a query string (a bare `key` has an empty value).
pub fn options(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}
