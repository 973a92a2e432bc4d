//! `application/x-www-form-urlencoded`, both ways.
//!
//! bilibili discovery's clients send repeated keys (`addrs=a&addrs=b`,
//! `appid=x&appid=y`), which typed form decoders cannot collect into lists,
//! so parameters are kept as ordered pairs and looked up by name.
//!
//! # Examples
//!
//! ```
//! use lodestar_registry::form::{Form, Params};
//!
//! let encoded = Form::new().pair("appid", "echo").pair("addrs", "grpc://127.0.0.1:1").finish();
//! assert_eq!(encoded, "appid=echo&addrs=grpc%3A%2F%2F127.0.0.1%3A1");
//! let params = Params::parse(&encoded);
//! assert_eq!(params.get("appid"), Some("echo"));
//! assert_eq!(params.all("addrs").collect::<Vec<_>>(), ["grpc://127.0.0.1:1"]);
//! ```

use std::fmt::Write;

/// Decoded parameters, in the order they came.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

/// An encoder of form bodies and query strings.
#[derive(Clone, Debug, Default)]
pub struct Form {
    out: String,
}

// === impl Params ===

impl Params {
    /// Decodes `a=1&b=2` (a query string or a form body). Malformed escapes
    /// are kept as they are rather than refused.
    pub fn parse(text: &str) -> Self {
        let mut params = Self::default();
        params.extend(text);
        params
    }

    /// Adds the pairs of another query string or body.
    pub fn extend(&mut self, text: &str) {
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            self.pairs.push((decode(key), decode(value)));
        }
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.all(key).next()
    }

    /// Every value of `key`, in order.
    pub fn all<'a, 'k>(&'a self, key: &'k str) -> impl Iterator<Item = &'a str> + use<'a, 'k> {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'+' => out.push(b' '),
            b'%' => match bytes.get(at + 1..at + 3).and_then(hex_byte) {
                Some(byte) => {
                    out.push(byte);
                    at += 2;
                }
                None => out.push(b'%'),
            },
            byte => out.push(byte),
        }
        at += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    let text = std::str::from_utf8(pair).ok()?;
    u8::from_str_radix(text, 16).ok()
}

// === impl Form ===

impl Form {
    /// An empty form.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `key=value`, escaped.
    pub fn pair(mut self, key: &str, value: &str) -> Self {
        if !self.out.is_empty() {
            self.out.push('&');
        }
        encode_into(&mut self.out, key);
        self.out.push('=');
        encode_into(&mut self.out, value);
        self
    }

    /// The encoded text.
    pub fn finish(self) -> String {
        self.out
    }
}

fn encode_into(out: &mut String, text: &str) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_awkward_text() {
        for text in ["a b", "x=y&z", "{\"k\":\"v\"}", "é", "100%", ""] {
            let encoded = Form::new().pair("k", text).finish();
            assert_eq!(Params::parse(&encoded).get("k"), Some(text), "{encoded}");
        }
    }

    #[test]
    fn tolerates_garbage() {
        let params = Params::parse("a=%zz&b&=c&&d=%4");
        assert_eq!(params.get("a"), Some("%zz"));
        assert_eq!(params.get("b"), Some(""));
        assert_eq!(params.get(""), Some("c"));
        assert_eq!(params.get("d"), Some("%4"));
        assert_eq!(Params::parse("x=a+b").get("x"), Some("a b"));
    }
}
