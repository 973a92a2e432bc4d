//! Docs that cannot drift from the binary (a small harness in the spirit of
//! trycmd, which would have been one more dependency for two checks):
//!
//! - every `--help` (the top level and each command it lists) equals its
//!   snapshot in `tests/snapshots/help/`;
//! - every ```console block of `README.md` and `docs/cli.md` runs as
//!   written against a real built-in registry with two echo servers (`a`,
//!   and `b` in the blue lane), each `$ lodestar ...` line's stdout matching
//!   the lines after it; `[..]` matches any text and runs of spaces match
//!   any run, so ages, ports and column widths may vary.
//!
//! After a deliberate change, `LODESTAR_BLESS=1 cargo test -p lodestar-cli
//! --test docs` rewrites the help snapshots (the console blocks are edited
//! by hand, in the docs).

mod support;

use support::*;

use std::path::{Path, PathBuf};

use lodestar_test_support::free_port;
use tokio::io::{AsyncBufReadExt, BufReader};

fn snapshots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/help")
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The commands `lodestar --help` lists.
fn commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(String::from)
        .collect()
}

/// `lodestar ARGS` as a user without `LODESTAR_REGISTRY` runs it.
async fn help(args: &[&str]) -> Output {
    let mut command = lodestar("", args);
    command.env_remove("LODESTAR_REGISTRY");
    let output = tokio::time::timeout(PATIENCE, command.output())
        .await
        .expect("lodestar finished in time")
        .expect("lodestar ran");
    Output {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test]
async fn every_help_matches_its_snapshot() {
    let bless = std::env::var_os("LODESTAR_BLESS").is_some();
    let top = help(&["--help"]).await;
    assert_eq!(top.code, Some(0), "{}", top.stderr);
    let mut pages = vec![("lodestar".to_string(), top.stdout.clone())];
    for command in commands(&top.stdout) {
        let out = help(&[&command, "--help"]).await;
        assert_eq!(out.code, Some(0), "{command} --help: {}", out.stderr);
        pages.push((command, out.stdout));
    }
    assert!(pages.len() > 8, "commands found in --help: {pages:?}");
    let mut stale = Vec::new();
    for (name, text) in pages {
        let path = snapshots().join(format!("{name}.txt"));
        if bless {
            std::fs::create_dir_all(snapshots()).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(expected) if expected == text => {}
            Ok(expected) => stale.push(format!(
                "{}: differs\n--- snapshot\n{expected}\n--- now\n{text}",
                path.display()
            )),
            Err(e) => stale.push(format!("{}: {e}\n--- now\n{text}", path.display())),
        }
    }
    assert!(
        stale.is_empty(),
        "help text changed; check docs/cli.md, then run \
         `LODESTAR_BLESS=1 cargo test -p lodestar-cli --test docs`:\n{}",
        stale.join("\n")
    );
}

/// One `$ lodestar ...` line of a console block and the stdout it shows.
#[derive(Debug)]
struct Step {
    doc: String,
    args: Vec<String>,
    expected: Vec<String>,
}

/// The console blocks of `doc` as steps.
fn steps(doc: &str) -> Vec<Step> {
    let text = std::fs::read_to_string(repository().join(doc))
        .unwrap_or_else(|e| panic!("reading {doc}: {e}"));
    let mut steps: Vec<Step> = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("```") {
            inside = line.trim() == "```console";
            continue;
        }
        if !inside {
            continue;
        }
        if let Some(command) = line.strip_prefix("$ ") {
            let mut words = command.split_whitespace().map(String::from);
            assert_eq!(
                words.next().as_deref(),
                Some("lodestar"),
                "{doc}: a console block runs lodestar only: {line}"
            );
            steps.push(Step {
                doc: doc.to_string(),
                args: words.collect(),
                expected: Vec::new(),
            });
        } else if let Some(step) = steps.last_mut() {
            step.expected.push(line.to_string());
        }
    }
    steps
}

/// Whether `line` matches `pattern`: runs of whitespace are one space and
/// `[..]` matches any text.
fn matches(pattern: &str, line: &str) -> bool {
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let (pattern, line) = (squash(pattern), squash(line));
    let parts: Vec<&str> = pattern.split("[..]").collect();
    let Some((first, rest)) = parts.split_first() else {
        return line.is_empty();
    };
    let Some(mut left) = line.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return left.is_empty();
    };
    for part in middle {
        match left.find(part) {
            Some(at) => left = &left[at + part.len()..],
            None => return false,
        }
    }
    left.ends_with(last)
}

#[test]
fn the_matcher_reads_wildcards_and_spaces() {
    assert!(matches("a   b", "a b"));
    assert!(matches("age [..]", "age 3s"));
    assert!(matches(
        "grpc://127.0.0.1:[..] v1",
        "grpc://127.0.0.1:40111   v1"
    ));
    assert!(matches("[..]x[..]", "abcxdef"));
    assert!(!matches("a b", "a c"));
    assert!(!matches("a[..]z", "abc"));
}

#[tokio::test]
async fn the_console_blocks_of_the_docs_run_as_written() {
    let all: Vec<Step> = ["README.md", "docs/cli.md"]
        .iter()
        .flat_map(|doc| steps(doc))
        .collect();
    assert!(all.len() >= 5, "console steps found: {all:?}");

    let addr = format!("127.0.0.1:{}", free_port());
    let mut registry = lodestar("memory:", &["registry", "--listen", &addr])
        .spawn()
        .unwrap();
    let mut log = BufReader::new(registry.stderr.take().unwrap()).lines();
    wait_for(&mut log, "registry listening on").await;
    let url = format!("lodestar://{addr}");
    let mut servers = Vec::new();
    for (id, lane) in [("a", None), ("b", Some("color=blue"))] {
        let mut args = vec![
            "serve-echo",
            "--service",
            "echo",
            "--id",
            id,
            "--version",
            "v1",
        ];
        if let Some(lane) = lane {
            args.extend(["--meta", lane]);
        }
        let mut child = lodestar(&url, &args).spawn().unwrap();
        let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
        wait_for(&mut log, &format!("serving echo/{id}")).await;
        servers.push((child, log));
    }

    for step in all {
        let args: Vec<&str> = step.args.iter().map(String::as_str).collect();
        let out = run(&url, &args).await;
        let shown = format!(
            "{}: `lodestar {}` exited {:?}\n--- stdout\n{}--- stderr\n{}--- expected\n{}",
            step.doc,
            args.join(" "),
            out.code,
            out.stdout,
            out.stderr,
            step.expected.join("\n")
        );
        assert_eq!(out.code, Some(0), "{shown}");
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines.len(), step.expected.len(), "{shown}");
        for (line, pattern) in lines.iter().zip(&step.expected) {
            assert!(matches(pattern, line), "{pattern:?} vs {line:?}\n{shown}");
        }
    }
}
