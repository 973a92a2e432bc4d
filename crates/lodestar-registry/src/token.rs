//! The registry's optional shared secret: [`Token`].
//!
//! A node started with a token (`lodestar registry --token T`, or
//! `LODESTAR_TOKEN`) refuses writes without it, and reads too when asked
//! (`--token-reads`); clients give it in the URL
//! (`lodestar://h:7171?token=T`) and send it with every request as
//! `Authorization: Bearer T`. A request may also carry it as a `token`
//! query or form parameter, for clients that cannot set headers.
//!
//! A token never prints: its `Debug` and `Display` show `<redacted>`, so a
//! config or an error that holds one can be logged.
//!
//! # Examples
//!
//! ```
//! use lodestar_registry::Token;
//!
//! let token = Token::new("s3cret").unwrap();
//! assert_eq!(format!("{token:?}"), "Token(<redacted>)");
//! assert!(token.matches("s3cret"));
//! assert!(!token.matches("s3creT"));
//! assert!(Token::new("").is_err());
//! ```

use std::fmt;

/// A shared secret that never prints; see the [module docs](self).
#[derive(Clone)]
pub struct Token(String);

/// A token that cannot be used: empty, or with characters an HTTP header
/// cannot carry.
#[derive(Debug, thiserror::Error)]
#[error("a token must be 1 to 4096 visible ASCII characters (no spaces)")]
pub struct BadToken;

/// Longest token accepted; longer ones are refused before comparing.
const MAX_TOKEN: usize = 4096;

// === impl Token ===

impl Token {
    /// A token from its text: 1 to 4,096 visible ASCII characters, what an
    /// `Authorization` header and a URL parameter carry unchanged.
    pub fn new(text: impl Into<String>) -> Result<Self, BadToken> {
        let text = text.into();
        let visible = text.bytes().all(|b| b.is_ascii_graphic());
        match !text.is_empty() && text.len() <= MAX_TOKEN && visible {
            true => Ok(Self(text)),
            false => Err(BadToken),
        }
    }

    /// Whether `given` is this token, in time that depends on the lengths
    /// only, never on where the first difference is.
    pub fn matches(&self, given: &str) -> bool {
        let (want, given) = (self.0.as_bytes(), given.as_bytes());
        if want.len() != given.len() {
            return false;
        }
        // Every byte is looked at; `black_box` keeps the compiler from
        // stopping at the first difference.
        let diff = want
            .iter()
            .zip(given)
            .fold(0u8, |acc, (a, b)| acc | std::hint::black_box(a ^ b));
        diff == 0
    }

    /// The secret itself, to send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Compares as [`Token::matches`] does, in constant time.
impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        self.matches(&other.0)
    }
}

impl Eq for Token {}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `url` with the value of every `token=` parameter replaced by
/// `<redacted>`, for messages and logs.
///
/// ```
/// use lodestar_registry::token::redact_url;
///
/// assert_eq!(
///     redact_url("lodestar://h:7171?env=prod&token=s3cret"),
///     "lodestar://h:7171?env=prod&token=<redacted>"
/// );
/// assert_eq!(redact_url("lodestar://h:7171"), "lodestar://h:7171");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("token", _)) => "token=<redacted>".to_string(),
            _ => pair.to_string(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_a_header_cannot_carry() {
        for bad in ["", "a b", "tab\there", "é", "line\n"] {
            assert!(Token::new(bad).is_err(), "{bad:?}");
        }
        assert!(Token::new("x".repeat(MAX_TOKEN + 1)).is_err());
        assert!(Token::new("x".repeat(MAX_TOKEN)).is_ok());
    }

    #[test]
    fn compares_whole_tokens_only() {
        let token = Token::new("abc").unwrap();
        for other in ["", "ab", "abcd", "abd", "ABC"] {
            assert!(!token.matches(other), "{other}");
        }
        assert!(token.matches("abc"));
    }

    #[test]
    fn never_prints() {
        let token = Token::new("s3cret").unwrap();
        let printed = format!("{token} {token:?} {:?}", Some(&token));
        assert!(!printed.contains("s3cret"), "{printed}");
    }
}
