//! Keys and values: where an instance lives in etcd and how it is encoded,
//! for both [`KeyLayout`]s.
//!
//! Every prefix handed to etcd ends in `/`, so watching service `svc` never
//! matches `svc2` (etcd's own Go resolver watches `<service>` without the
//! slash and gets exactly that wrong).

use lodestar::{Error, Instance, Override};
use serde::{Deserialize, Serialize};

use crate::{EtcdConfig, KeyLayout};

/// Key-space arithmetic for one configuration.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    kind: KeyLayout,
    prefix: String,
}

/// Where the Go layout keeps subscriber records.
const SUBSCRIBERS_GO: &str = ".lodestar-subscribers";
/// Where the Go layout keeps operator overrides.
const OVERRIDES_GO: &str = ".lodestar-overrides";

/// The value etcd's Go naming package stores (`endpoints.Endpoint`, with the
/// historical `Op` of `naming.Update` that older resolvers read).
#[derive(Debug, Serialize, Deserialize)]
struct GoEndpoint {
    #[serde(rename = "Op", default)]
    op: u8,
    #[serde(rename = "Addr")]
    addr: String,
    /// Must stay null or a plain string: a JSON object here makes grpc-go's
    /// round_robin panic ("hash of unhashable type").
    #[serde(rename = "Metadata", default)]
    metadata: serde_json::Value,
}

// === impl Layout ===

impl Layout {
    pub(crate) fn new(config: &EtcdConfig) -> Self {
        Self {
            kind: config.layout,
            prefix: config.prefix.trim_end_matches('/').to_string(),
        }
    }

    /// The prefix under which every service lives, ending in `/`.
    pub(crate) fn services_prefix(&self) -> String {
        match self.kind {
            KeyLayout::Lodestar => format!("{}/services/", self.prefix),
            KeyLayout::Go if self.prefix.is_empty() => String::new(),
            KeyLayout::Go => format!("{}/", self.prefix),
        }
    }

    /// The prefix of one service's instances, ending in `/`.
    pub(crate) fn service_prefix(&self, service: &str) -> String {
        format!("{}{service}/", self.services_prefix())
    }

    /// The prefix of one service's subscriber records, ending in `/`.
    pub(crate) fn subscribers_prefix(&self, service: &str) -> String {
        match self.kind {
            KeyLayout::Lodestar => format!("{}/subscribers/{service}/", self.prefix),
            // Kept out of the Go resolver's key space of any real service.
            KeyLayout::Go => format!("{}{SUBSCRIBERS_GO}/{service}/", self.services_prefix()),
        }
    }

    /// The prefix of one service's operator overrides, ending in `/`:
    /// `<prefix>/overrides/<service>/`, kept apart from the records so the
    /// owner re-registering never overwrites them.
    pub(crate) fn overrides_prefix(&self, service: &str) -> String {
        match self.kind {
            KeyLayout::Lodestar => format!("{}/overrides/{service}/", self.prefix),
            KeyLayout::Go => format!("{}{OVERRIDES_GO}/{service}/", self.services_prefix()),
        }
    }

    /// Where the operator override of `service`/`id` lives.
    pub(crate) fn override_key(&self, service: &str, id: &str) -> String {
        self.overrides_prefix(service) + id
    }

    /// Decodes the override at `key` (under [`Self::overrides_prefix`] of
    /// `service`): the id it applies to, and the override or why it is not
    /// one.
    pub(crate) fn decode_override<'k>(
        &self,
        service: &str,
        key: &'k str,
        value: &[u8],
    ) -> Option<(&'k str, Result<Override, Error>)> {
        let id = key.strip_prefix(&self.overrides_prefix(service))?;
        if id.is_empty() || id.contains('/') {
            return None;
        }
        let parsed = serde_json::from_slice::<Override>(value)
            .map_err(|e| invalid(format!("not an override: {e}")))
            .and_then(|o| o.validate().map(|()| o));
        Some((id, parsed))
    }

    /// Where a subscriber of `service` records itself.
    pub(crate) fn subscriber_key(&self, service: &str, client_id: &str) -> String {
        self.subscribers_prefix(service) + client_id
    }

    /// Whether a service name found in the key space is lodestar's own
    /// subscriber bookkeeping (Go layout) rather than a service.
    pub(crate) fn is_bookkeeping(service: &str) -> bool {
        service.starts_with(SUBSCRIBERS_GO) || service.starts_with(OVERRIDES_GO)
    }

    /// The key and value that announce `instance`.
    pub(crate) fn encode(&self, instance: &Instance) -> (String, String) {
        let record = instance.to_json();
        match self.kind {
            KeyLayout::Lodestar => (
                self.service_prefix(&instance.service) + &instance.id,
                record,
            ),
            KeyLayout::Go => {
                let addr = go_addr(instance);
                let value = GoEndpoint {
                    op: 0,
                    addr: addr.clone(),
                    metadata: serde_json::Value::String(record),
                };
                let value = serde_json::to_string(&value).unwrap_or_default();
                (self.service_prefix(&instance.service) + &addr, value)
            }
        }
    }

    /// Splits a key under [`Self::services_prefix`] into service and name
    /// (id or address). `None` for keys that are not instance keys.
    pub(crate) fn split_key<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        let rest = key.strip_prefix(&self.services_prefix())?;
        // Go targets may hold slashes; the last segment is the address.
        let (service, name) = match self.kind {
            KeyLayout::Lodestar => rest.split_once('/')?,
            KeyLayout::Go => rest.rsplit_once('/')?,
        };
        (!service.is_empty() && !name.is_empty() && !name.contains('/')).then_some((service, name))
    }

    /// Decodes the value at `key` (which must lie under the prefix of
    /// `service`) into an instance, checking it agrees with its key.
    pub(crate) fn decode(&self, service: &str, key: &str, value: &[u8]) -> Result<Instance, Error> {
        let name = self
            .split_key(key)
            .filter(|(s, _)| *s == service)
            .map(|(_, name)| name)
            .ok_or_else(|| invalid(format!("key {key:?} is not an instance key of {service}")))?;
        match self.kind {
            KeyLayout::Lodestar => {
                let instance = Instance::from_json(value)?;
                if instance.service != service || instance.id != name {
                    return Err(invalid(format!(
                        "record names {}/{} but lives at {key:?}",
                        instance.service, instance.id
                    )));
                }
                Ok(instance)
            }
            KeyLayout::Go => decode_go(service, name, value),
        }
    }
}

/// The address a Go client dials: the first gRPC endpoint, else the first.
fn go_addr(instance: &Instance) -> String {
    instance
        .endpoint("grpc")
        .or_else(|| instance.endpoints.first())
        .map(|e| e.address())
        .unwrap_or_default()
}

fn decode_go(service: &str, name: &str, value: &[u8]) -> Result<Instance, Error> {
    let endpoint: GoEndpoint = serde_json::from_slice(value)
        .map_err(|e| invalid(format!("not a Go naming endpoint: {e}")))?;
    if endpoint.op != 0 {
        return Err(invalid(format!("operation {} is not Add", endpoint.op)));
    }
    // A record written by lodestar carries the whole instance.
    if let serde_json::Value::String(record) = &endpoint.metadata {
        if let Ok(instance) = Instance::from_json(record.as_bytes()) {
            if instance.service == service {
                return Ok(instance);
            }
        }
    }
    // Registered by Go: all we know is the address.
    let grpc = format!("grpc://{}", endpoint.addr)
        .parse()
        .map_err(|e: Error| invalid(e.to_string()))?;
    let mut instance = Instance::new(service, name).with_endpoint(grpc);
    if let serde_json::Value::String(text) = endpoint.metadata {
        instance = instance.with_metadata("go.metadata", text);
    }
    Ok(instance)
}

fn invalid(reason: String) -> Error {
    Error::InvalidInstance(reason)
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(url: &str) -> Layout {
        Layout::new(&url.parse().unwrap())
    }

    fn echo(id: &str) -> Instance {
        Instance::new("echo", id)
            .with_version("v1")
            .with_endpoint("http://127.0.0.1:8080".parse().unwrap())
            .with_endpoint("grpc://127.0.0.1:50051".parse().unwrap())
    }

    #[test]
    fn lodestar_keys_end_in_slash() {
        let l = layout("etcd://h:1");
        assert_eq!(l.service_prefix("svc"), "/lodestar/services/svc/");
        let (key, value) = l.encode(&echo("e1"));
        assert_eq!(key, "/lodestar/services/echo/e1");
        assert_eq!(l.split_key(&key), Some(("echo", "e1")));
        assert_eq!(
            l.decode("echo", &key, value.as_bytes()).unwrap(),
            echo("e1")
        );
        assert!(!"/lodestar/services/svc2/x".starts_with(&l.service_prefix("svc")));
    }

    #[test]
    fn overrides_live_apart_and_bad_ones_are_errors() {
        for (url, prefix) in [
            ("etcd://h:1", "/lodestar/overrides/echo/"),
            ("etcd://h:1/foo?layout=go", "foo/.lodestar-overrides/echo/"),
        ] {
            let l = layout(url);
            assert_eq!(l.overrides_prefix("echo"), prefix);
            let key = l.override_key("echo", "e1");
            assert!(!key.starts_with(&l.service_prefix("echo")));
            let (id, good) = l
                .decode_override("echo", &key, br#"{"status":"down"}"#)
                .unwrap();
            assert_eq!(id, "e1");
            assert_eq!(good.unwrap().status, Some(lodestar::Status::Down));
            let (_, bad) = l.decode_override("echo", &key, b"{").unwrap();
            assert!(bad.is_err());
            let (_, zero) = l.decode_override("echo", &key, br#"{"weight":0}"#).unwrap();
            assert!(zero.is_err());
            assert!(l.decode_override("echo2", &key, b"{}").is_none());
        }
        assert!(Layout::is_bookkeeping(".lodestar-overrides"));
    }

    #[test]
    fn lodestar_record_must_match_its_key() {
        let l = layout("etcd://h:1");
        let value = echo("e1").to_json();
        assert!(
            l.decode("echo", "/lodestar/services/echo/e2", value.as_bytes())
                .is_err()
        );
        assert!(
            l.decode("other", "/lodestar/services/other/e1", value.as_bytes())
                .is_err()
        );
        assert!(
            l.decode("echo", "/lodestar/services/echo/e1", b"garbage")
                .is_err()
        );
    }

    #[test]
    fn go_layout_round_trips_and_keeps_metadata_a_string() {
        let l = layout("etcd://h:1/foo?layout=go");
        let (key, value) = l.encode(&echo("e1"));
        assert_eq!(key, "foo/echo/127.0.0.1:50051");
        let json: serde_json::Value = serde_json::from_str(&value).unwrap();
        assert_eq!(json["Op"], 0);
        assert_eq!(json["Addr"], "127.0.0.1:50051");
        assert!(
            json["Metadata"].is_string(),
            "grpc-go panics on an object here"
        );
        assert_eq!(
            l.decode("echo", &key, value.as_bytes()).unwrap(),
            echo("e1")
        );
    }

    #[test]
    fn go_layout_reads_what_go_writes() {
        let l = layout("etcd://h:1?layout=go");
        for value in [
            r#"{"Addr":"10.0.0.1:9000","Metadata":null}"#,
            r#"{"Op":0,"Addr":"10.0.0.1:9000"}"#,
            r#"{"Addr":"10.0.0.1:9000","Metadata":"zone=z1"}"#,
        ] {
            let i = l
                .decode("my-service", "my-service/10.0.0.1:9000", value.as_bytes())
                .unwrap();
            assert_eq!(i.id, "10.0.0.1:9000");
            assert_eq!(i.endpoint("grpc").unwrap().address(), "10.0.0.1:9000");
        }
        assert!(
            l.decode("my-service", "my-service/x", br#"{"Op":1,"Addr":"a:1"}"#)
                .is_err()
        );
        assert!(
            l.decode("my-service", "my-service/x", br#"{"Addr":"no port"}"#)
                .is_err()
        );
    }
}
