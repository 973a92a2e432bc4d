//! The wire format of bilibili discovery's HTTP API, and its mapping to
//! lodestar's [`lodestar::Instance`].
//!
//! Every answer is a [`Reply`]: `{"code": 0, "message": "0", "data": ...}`,
//! with the codes of [`Code`]. An instance travels as [`Instance`], the JSON
//! form of discovery's `model.Instance`, plus two lodestar fields its
//! clients ignore: a top-level `color` (kept equal to `metadata.color`) and
//! `ttl`.
//!
//! | lodestar | discovery |
//! | --- | --- |
//! | `service` | `appid` |
//! | `id` | `hostname` |
//! | `version` | `version` |
//! | `endpoints` | `addrs` |
//! | `metadata` | `metadata`, with `color` also at the top level and `zone` as the instance's zone |
//!
//! # Examples
//!
//! ```
//! use lodestar_registry::wire;
//!
//! let instance = lodestar::Instance::new("echo", "echo-1")
//!     .with_endpoint("grpc://127.0.0.1:50051".parse().unwrap())
//!     .with_metadata("color", "blue");
//! let wire = wire::Instance::from_lodestar(&instance, "dev", "z1");
//! assert_eq!((wire.appid.as_str(), wire.hostname.as_str()), ("echo", "echo-1"));
//! assert_eq!(wire.color, "blue");
//! let back = wire.to_lodestar().unwrap();
//! assert_eq!(back.zone(), Some("z1"));
//! assert_eq!(back.color(), Some("blue"));
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::form::Form;

/// The application every registry node registers itself under, with its
/// `http://host:port` address: discovery's clients find their nodes by
/// polling it (lodestar's `registry` nodes do the same as discovery's).
pub const DISCOVERY_APPID: &str = "infra.discovery";

/// The instance receives traffic.
pub const STATUS_UP: u32 = 1;
/// The instance is registered but takes no traffic.
pub const STATUS_WAITING: u32 = 2;

/// Metadata key where lodestar's `set` keeps an operator override and the
/// owner's values it replaced, so `clear` can put them back (a lodestar
/// extension; discovery's clients see one more metadata entry). Left out of
/// lodestar records.
pub const OVERRIDE_KEY: &str = "lodestar.override";

/// The result codes of the API, as discovery uses them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Code {
    /// Success (`0`).
    Ok,
    /// A poll found nothing newer (`-304`).
    NotModified,
    /// A parameter is missing or malformed (`-400`).
    BadRequest,
    /// The node's token is missing or wrong (`-401`, kratos's
    /// `ecode.Unauthorized`; also HTTP 401).
    Unauthorized,
    /// No such instance or application (`-404`); a renew answered so means
    /// "register again".
    NotFound,
    /// A replicated write is older than the copy here (`-409`); `data` holds
    /// the newer copy.
    Conflict,
    /// Something failed inside the registry (`-500`).
    Internal,
    /// The node cannot serve reads yet (warming up) or is overloaded (`-503`).
    Unavailable,
}

/// The envelope of every answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// One of [`Code`]'s values.
    pub code: i64,
    /// A human-readable message.
    #[serde(default)]
    pub message: String,
    /// The payload, `null` when there is none.
    #[serde(default)]
    pub data: serde_json::Value,
}

/// discovery's `model.Instance`, as JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Region (unused by lodestar, kept for discovery's clients).
    #[serde(default)]
    pub region: String,
    /// Zone (availability zone, data centre).
    #[serde(default)]
    pub zone: String,
    /// Environment: `dev`, `prod`...
    #[serde(default)]
    pub env: String,
    /// The application: lodestar's service.
    pub appid: String,
    /// The instance: lodestar's id.
    pub hostname: String,
    /// Addresses, `scheme://ip:port`: lodestar's endpoints.
    #[serde(default)]
    pub addrs: Vec<String>,
    /// Version.
    #[serde(default)]
    pub version: String,
    /// Colour lane; the same as `metadata.color`.
    #[serde(default)]
    pub color: String,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: lodestar::Metadata,
    /// [`STATUS_UP`] or [`STATUS_WAITING`].
    #[serde(default)]
    pub status: u32,
    /// When it was registered, in nanoseconds since the Unix epoch.
    #[serde(default)]
    pub reg_timestamp: i64,
    /// When its status last went up, in nanoseconds.
    #[serde(default)]
    pub up_timestamp: i64,
    /// When it was last renewed, in nanoseconds.
    #[serde(default)]
    pub renew_timestamp: i64,
    /// When its record last changed at the node that accepted the change:
    /// the version that wins conflicts between nodes.
    #[serde(default)]
    pub dirty_timestamp: i64,
    /// When the record last changed at this node, in nanoseconds.
    #[serde(default)]
    pub latest_timestamp: i64,
    /// Its own TTL in seconds when it asked for one (a lodestar extension),
    /// else 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ttl: u64,
}

/// The instances of one application: `fetch`'s data, and each entry of
/// `poll`'s.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fetched {
    /// Instances by zone.
    #[serde(default)]
    pub instances: BTreeMap<String, Vec<Instance>>,
    /// The newest change to the application, in nanoseconds: what the next
    /// poll sends back.
    #[serde(default)]
    pub latest_timestamp: i64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

// === impl Code ===

impl Code {
    /// The number on the wire.
    pub fn value(self) -> i64 {
        match self {
            Code::Ok => 0,
            Code::NotModified => -304,
            Code::BadRequest => -400,
            Code::Unauthorized => -401,
            Code::NotFound => -404,
            Code::Conflict => -409,
            Code::Internal => -500,
            Code::Unavailable => -503,
        }
    }

    /// The code of a number, if it is one of ours.
    pub fn from_value(value: i64) -> Option<Self> {
        [
            Code::Ok,
            Code::NotModified,
            Code::BadRequest,
            Code::Unauthorized,
            Code::NotFound,
            Code::Conflict,
            Code::Internal,
            Code::Unavailable,
        ]
        .into_iter()
        .find(|c| c.value() == value)
    }
}

// === impl Reply ===

impl Reply {
    /// An answer with `code` and `data`.
    pub fn new(code: Code, message: impl Into<String>, data: serde_json::Value) -> Self {
        Self {
            code: code.value(),
            message: message.into(),
            data,
        }
    }

    /// The code, if it is a known one.
    pub fn code(&self) -> Option<Code> {
        Code::from_value(self.code)
    }
}

// === impl Instance ===

impl Instance {
    /// The wire form of a lodestar record in `env`; `zone` is used when the
    /// record's metadata names none.
    pub fn from_lodestar(instance: &lodestar::Instance, env: &str, zone: &str) -> Self {
        Self {
            zone: instance.zone().unwrap_or(zone).to_string(),
            env: env.to_string(),
            appid: instance.service.clone(),
            hostname: instance.id.clone(),
            addrs: instance.endpoints.iter().map(ToString::to_string).collect(),
            version: instance.version.clone(),
            color: instance.color().unwrap_or_default().to_string(),
            metadata: instance.metadata.clone(),
            status: STATUS_UP,
            ..Self::default()
        }
    }

    /// The lodestar record. Addresses that are not `scheme://host:port` are
    /// left out; with none left, or a bad name, it is an error. An instance
    /// not up (an operator's `set status=2`) has metadata `status=down`;
    /// the override bookkeeping of lodestar's `set` is left out.
    pub fn to_lodestar(&self) -> Result<lodestar::Instance, lodestar::Error> {
        let mut instance =
            lodestar::Instance::new(&self.appid, &self.hostname).with_version(&self.version);
        instance.endpoints = self.addrs.iter().filter_map(|a| a.parse().ok()).collect();
        instance.metadata = self.metadata.clone();
        instance.metadata.remove(OVERRIDE_KEY);
        if self.reg_timestamp > 0 {
            instance
                .metadata
                .get_or_insert_with(lodestar::instance::REGISTERED.into(), || {
                    (self.reg_timestamp / 1_000_000_000).to_string()
                });
        }
        if self.status != STATUS_UP {
            instance.metadata.insert(
                lodestar::instance::STATUS.into(),
                lodestar::Status::Down.as_str().into(),
            );
        }
        if !self.color.is_empty() {
            instance
                .metadata
                .insert(lodestar::instance::COLOR.into(), self.color.clone());
        }
        if !self.zone.is_empty() {
            instance
                .metadata
                .get_or_insert_with(lodestar::instance::ZONE.into(), || self.zone.clone());
        }
        if instance.endpoints.is_empty() {
            return Err(lodestar::Error::InvalidInstance(format!(
                "{}/{} has no usable address in {:?}",
                self.appid, self.hostname, self.addrs
            )));
        }
        lodestar::Instance::from_json(instance.to_json().as_bytes())
    }

    /// The form body of `POST /discovery/register` for this instance. A
    /// replicated write (`replication`) also carries the timestamps.
    pub fn to_register_form(&self, replication: bool) -> String {
        let metadata = serde_json::to_string(&self.metadata).unwrap_or_default();
        let mut form = Form::new()
            .pair("region", &self.region)
            .pair("zone", &self.zone)
            .pair("env", &self.env)
            .pair("appid", &self.appid)
            .pair("hostname", &self.hostname);
        for addr in &self.addrs {
            form = form.pair("addrs", addr);
        }
        form = form
            .pair("status", &self.status.to_string())
            .pair("version", &self.version)
            .pair("color", &self.color)
            .pair("metadata", &metadata);
        if self.ttl > 0 {
            form = form.pair("ttl", &self.ttl.to_string());
        }
        if replication {
            form = form
                .pair("replication", "true")
                .pair("dirty_timestamp", &self.dirty_timestamp.to_string())
                .pair("reg_timestamp", &self.reg_timestamp.to_string())
                .pair("up_timestamp", &self.up_timestamp.to_string())
                .pair("renew_timestamp", &self.renew_timestamp.to_string());
        }
        form.finish()
    }

    /// Makes `color` and `metadata.color` agree: the top-level field wins
    /// when set, as discovery's own clients set only that one.
    pub fn reconcile_color(&mut self) {
        let key = lodestar::instance::COLOR;
        if self.color.is_empty() {
            self.color = self.metadata.get(key).cloned().unwrap_or_default();
        } else {
            self.metadata.insert(key.to_string(), self.color.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for value in [0, -304, -400, -404, -409, -500, -503] {
            assert_eq!(Code::from_value(value).map(Code::value), Some(value));
        }
        assert_eq!(Code::from_value(7), None);
    }

    #[test]
    fn bad_addresses_are_skipped_and_none_is_an_error() {
        let mut wire = Instance {
            appid: "a".into(),
            hostname: "h".into(),
            addrs: vec!["nope".into(), "http://10.0.0.1:80".into()],
            ..Instance::default()
        };
        assert_eq!(wire.to_lodestar().unwrap().endpoints.len(), 1);
        wire.addrs = vec!["nope".into()];
        assert!(wire.to_lodestar().is_err());
    }

    #[test]
    fn colour_is_kept_consistent() {
        let mut wire = Instance::default();
        wire.metadata.insert("color".into(), "red".into());
        wire.reconcile_color();
        assert_eq!(wire.color, "red");
        wire.color = "blue".into();
        wire.reconcile_color();
        assert_eq!(wire.metadata["color"], "blue");
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let json = r#"{"appid":"a","hostname":"h","status":1,"extra":[1]}"#;
        let wire: Instance = serde_json::from_str(json).unwrap();
        assert_eq!(wire.status, STATUS_UP);
    }
}
