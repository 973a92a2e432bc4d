//! The license and bans check of `cargo xtask test`, in place of
//! `cargo deny check licenses bans` (cargo-deny is not packaged for Debian,
//! and building it would add minutes to every fresh CI run).
//!
//! From `cargo metadata` (the packages built for the host):
//!
//! - **licenses**: every package's SPDX expression must be satisfied by the
//!   allow list ([`ALLOWED`]): `A OR B` needs one side, `A AND B` both,
//!   `A WITH E` an allowed `A` and an allowed exception. The old `A/B` form
//!   is read as `A OR B`. A package with no `license` field fails, except
//!   unpublished workspace members (`publish = false`).
//! - **bans**: none of [`BANNED`] may be in the graph (the TLS stack is
//!   rustls; a second one, linked to the system's OpenSSL, is not wanted).
//! - **duplicates**: crates present in more than one version are listed,
//!   as a warning (they cost build time, not correctness).
//!
//! Security advisories (`cargo deny check advisories`) are not checked
//! here: the advisory database cannot be fetched from the build machines.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

use crate::{Failure, Outcome, cargo};

/// Licenses (SPDX identifiers) a dependency may be used under: permissive
/// ones whose terms an application can meet by shipping notices.
pub const ALLOWED: &[&str] = &[
    "0BSD",
    "Apache-2.0",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "BSL-1.0",
    "CC0-1.0",
    "CDLA-Permissive-2.0",
    "ISC",
    "MIT",
    "MIT-0",
    "Unicode-3.0",
    "Unicode-DFS-2016",
    "Unlicense",
    "Zlib",
];

/// License exceptions (after `WITH`) allowed with an allowed license.
pub const ALLOWED_EXCEPTIONS: &[&str] = &["LLVM-exception"];

/// Crates that may not be in the graph, with why.
pub const BANNED: &[(&str, &str)] = &[
    (
        "openssl-sys",
        "links the system OpenSSL; lodestar's TLS is rustls",
    ),
    (
        "openssl",
        "links the system OpenSSL; lodestar's TLS is rustls",
    ),
    ("native-tls", "a second TLS stack beside rustls"),
];

/// What the check found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Packages checked.
    pub packages: usize,
    /// `name version: why` for each license failure.
    pub license_failures: Vec<String>,
    /// `name version: why` for each banned crate present.
    pub banned: Vec<String>,
    /// Crates present in several versions, with the versions.
    pub duplicates: BTreeMap<String, BTreeSet<String>>,
}

/// Runs `cargo metadata` for the host and checks it; fails with the list
/// of problems.
pub fn check() -> Outcome {
    let metadata = metadata()?;
    let report = check_metadata(&metadata).map_err(Failure::new)?;
    for (name, versions) in &report.duplicates {
        let versions: Vec<&str> = versions.iter().map(String::as_str).collect();
        println!(
            "xtask: warning: {name} is built in {} versions: {}",
            versions.len(),
            versions.join(", ")
        );
    }
    if report.license_failures.is_empty() && report.banned.is_empty() {
        println!(
            "xtask: licenses and bans: {} packages ok (advisories are not checked: the advisory database cannot be fetched here)",
            report.packages
        );
        return Ok(());
    }
    let mut message = String::from("the license and bans check failed:");
    for line in report.license_failures.iter().chain(&report.banned) {
        message.push_str("\n  ");
        message.push_str(line);
    }
    message.push_str(&format!(
        "\nallowed licenses: {} (exceptions: {}); see xtask/src/deny.rs",
        ALLOWED.join(", "),
        ALLOWED_EXCEPTIONS.join(", ")
    ));
    Err(Failure::new(message))
}

/// `cargo metadata` of the workspace, for the host platform only (the
/// packages actually built here).
fn metadata() -> Result<Value, Failure> {
    let host = host_triple()?;
    let output = Command::new(cargo::cargo_binary())
        .args([
            "metadata",
            "--format-version",
            "1",
            "--filter-platform",
            &host,
        ])
        .current_dir(cargo::workspace_root())
        .output()
        .map_err(|e| Failure::new(format!("could not run cargo metadata: {e}")))?;
    if !output.status.success() {
        return Err(Failure::new(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|e| Failure::new(format!("cargo metadata printed no JSON: {e}")))
}

fn host_triple() -> Result<String, Failure> {
    let output = Command::new("rustc")
        .arg("-vV")
        .output()
        .map_err(|e| Failure::new(format!("could not run rustc -vV: {e}")))?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .ok_or_else(|| Failure::new("rustc -vV names no host"))
}

/// Checks `cargo metadata` output.
pub fn check_metadata(metadata: &Value) -> Result<Report, String> {
    let packages = metadata["packages"]
        .as_array()
        .ok_or("cargo metadata has no packages")?;
    let mut report = Report {
        packages: packages.len(),
        ..Report::default()
    };
    let mut versions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for package in packages {
        let name = package["name"].as_str().unwrap_or("?");
        let version = package["version"].as_str().unwrap_or("?");
        versions
            .entry(name.to_string())
            .or_default()
            .insert(version.to_string());
        if let Some((_, why)) = BANNED.iter().find(|(banned, _)| *banned == name) {
            report
                .banned
                .push(format!("{name} {version}: banned: {why}"));
        }
        let local = package["source"].is_null();
        let unpublished = package["publish"].as_array().is_some_and(Vec::is_empty);
        match package["license"].as_str() {
            Some(expression) => match allowed(expression) {
                Ok(true) => {}
                Ok(false) => report
                    .license_failures
                    .push(format!("{name} {version}: {expression:?} is not allowed")),
                Err(e) => report
                    .license_failures
                    .push(format!("{name} {version}: cannot read {expression:?}: {e}")),
            },
            None if local && unpublished => {}
            None => report
                .license_failures
                .push(format!("{name} {version}: no license field")),
        }
    }
    report.duplicates = versions.into_iter().filter(|(_, v)| v.len() > 1).collect();
    Ok(report)
}

/// Whether an SPDX expression is satisfied by the allow list.
pub fn allowed(expression: &str) -> Result<bool, String> {
    let tokens = tokenize(expression);
    let mut parser = Parser { tokens, at: 0 };
    let value = parser.or()?;
    match parser.tokens.get(parser.at) {
        None => Ok(value),
        Some(extra) => Err(format!("unexpected {extra:?}")),
    }
}

/// Splits on spaces and parentheses; `/` is the old spelling of `OR`.
fn tokenize(expression: &str) -> Vec<String> {
    let spaced = expression
        .replace('(', " ( ")
        .replace(')', " ) ")
        .replace('/', " OR ");
    spaced.split_whitespace().map(str::to_string).collect()
}

/// A recursive-descent reader of SPDX expressions: `OR` binds looser than
/// `AND`, which binds looser than `WITH`.
struct Parser {
    tokens: Vec<String>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.at).map(String::as_str)
    }

    fn next(&mut self) -> Result<String, String> {
        let token = self.tokens.get(self.at).cloned().ok_or("unexpected end")?;
        self.at += 1;
        Ok(token)
    }

    fn or(&mut self) -> Result<bool, String> {
        let mut value = self.and()?;
        while self.peek() == Some("OR") {
            self.at += 1;
            let right = self.and()?;
            value = value || right;
        }
        Ok(value)
    }

    fn and(&mut self) -> Result<bool, String> {
        let mut value = self.license()?;
        while self.peek() == Some("AND") {
            self.at += 1;
            let right = self.license()?;
            value = value && right;
        }
        Ok(value)
    }

    fn license(&mut self) -> Result<bool, String> {
        let token = self.next()?;
        if token == "(" {
            let value = self.or()?;
            return match self.next()?.as_str() {
                ")" => Ok(value),
                other => Err(format!("expected ')', found {other:?}")),
            };
        }
        if matches!(token.as_str(), ")" | "OR" | "AND" | "WITH") {
            return Err(format!("unexpected {token:?}"));
        }
        let id = token.trim_end_matches('+');
        let mut value = ALLOWED.contains(&id);
        if self.peek() == Some("WITH") {
            self.at += 1;
            let exception = self.next()?;
            value = value && ALLOWED_EXCEPTIONS.contains(&exception.as_str());
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expressions_are_read_as_spdx_says() {
        for ok in [
            "MIT",
            "MIT OR Apache-2.0",
            "MIT/Apache-2.0",
            "MIT / Apache-2.0",
            "Apache-2.0 WITH LLVM-exception OR Apache-2.0 OR MIT",
            "(MIT OR Apache-2.0) AND Unicode-3.0",
            "MIT AND BSD-3-Clause",
            "GPL-3.0 OR MIT",
        ] {
            assert_eq!(allowed(ok), Ok(true), "{ok}");
        }
        for refused in [
            "GPL-3.0",
            "MIT AND GPL-3.0",
            "(MIT OR Apache-2.0) AND AGPL-3.0",
            "Apache-2.0 WITH Classpath-exception-2.0",
            "SSPL-1.0",
        ] {
            assert_eq!(allowed(refused), Ok(false), "{refused}");
        }
        for bad in ["", "MIT OR", "(MIT", "MIT)", "AND MIT"] {
            assert!(allowed(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn failures_name_the_package_and_the_reason() {
        let metadata = json!({"packages": [
            {"name": "ok", "version": "1.0.0", "license": "MIT", "source": "registry"},
            {"name": "gpl", "version": "2.0.0", "license": "GPL-3.0", "source": "registry"},
            {"name": "none", "version": "0.1.0", "license": null, "source": "registry"},
            {"name": "tool", "version": "0.1.0", "license": null, "source": null, "publish": []},
            {"name": "openssl-sys", "version": "0.9.0", "license": "MIT", "source": "registry"},
            {"name": "ok", "version": "2.0.0", "license": "MIT", "source": "registry"},
        ]});
        let report = check_metadata(&metadata).unwrap();
        assert_eq!(
            report.license_failures,
            [
                "gpl 2.0.0: \"GPL-3.0\" is not allowed",
                "none 0.1.0: no license field"
            ]
        );
        assert_eq!(report.banned.len(), 1);
        assert!(report.banned[0].starts_with("openssl-sys 0.9.0: banned"));
        assert_eq!(report.duplicates.keys().collect::<Vec<_>>(), ["ok"]);
    }

    /// The real workspace passes: this is the check `cargo xtask test` runs
    /// before the tests, run by the tests too.
    #[test]
    fn the_workspace_passes_the_license_and_bans_check() {
        let report = check_metadata(&metadata().unwrap()).unwrap();
        assert!(report.packages > 50, "{report:?}");
        assert_eq!(report.license_failures, Vec::<String>::new());
        assert_eq!(report.banned, Vec::<String>::new());
    }
}
