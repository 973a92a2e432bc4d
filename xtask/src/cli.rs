//! Command-line parsing for `cargo xtask`.

use std::ffi::OsString;
use std::fmt;

/// The usage text printed by `cargo xtask help` and on bad input.
pub const USAGE: &str = "\
Usage: cargo xtask <COMMAND> [ARGS...]

Commands:
  test [ARGS...]   Install protoc/etcd if missing, check licenses and banned crates, then
                   cargo fmt --check, clippy -D warnings and cargo test --workspace
                   (ARGS are passed to cargo test)
  demo [ARGS...]   Run `lodestar demo [ARGS...]` from the lodestar-cli crate
  bench [--quick]  Install the benches' tools (etcd, nginx, wrk, Go) if missing, run every
                   figure beside its peer and write docs/BENCHMARKS.md, docs/benchmarks/
                   (results.json, SVG charts); --quick scales sizes and durations down;
                   --render only renders the report again from results.json
  setup            Install protoc/etcd if missing and report their versions
  help             Print this message

Environment:
  PROTOC=<path>    protoc to use instead of searching PATH
  ETCD_BIN=<path>  etcd server (3.4+) to use instead of searching PATH
";

/// A parsed `cargo xtask` invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Print the usage.
    Help,
    /// Make sure the external tools are present.
    Setup,
    /// Run every check; the arguments go to `cargo test`.
    Test(Vec<OsString>),
    /// Run the demo; the arguments go to `lodestar demo`.
    Demo(Vec<OsString>),
    /// Run the benchmarks and write the report; the arguments are the mode
    /// (`--quick` or none).
    Bench(Vec<OsString>),
}

/// Why the command line could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageError {
    /// The first argument is not a known command.
    UnknownCommand(String),
    /// A command that takes no arguments was given some.
    UnexpectedArgs {
        /// The command.
        command: &'static str,
        /// The arguments it was given.
        args: Vec<String>,
    },
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::UnknownCommand(name) => write!(f, "unknown command `{name}`"),
            UsageError::UnexpectedArgs { command, args } => {
                write!(
                    f,
                    "`{command}` takes no arguments (got `{}`)",
                    args.join(" ")
                )
            }
        }
    }
}

/// Parses the arguments after the program name.
///
/// Arguments after `test` and `bench` are passed through unchanged, so both
/// `cargo xtask test -- --nocapture` and `cargo xtask test --no-fail-fast`
/// mean what they would mean to `cargo test`. For `demo` a single leading
/// `--` is dropped, since the arguments go to `lodestar demo` verbatim.
pub fn parse(args: Vec<OsString>) -> Result<Command, UsageError> {
    let mut args = args.into_iter();
    let Some(first) = args.next() else {
        return Ok(Command::Help);
    };
    let rest: Vec<OsString> = args.collect();
    match first.to_str() {
        Some("help" | "-h" | "--help") => Ok(Command::Help),
        Some("setup") if rest.is_empty() => Ok(Command::Setup),
        Some("setup") => Err(UsageError::UnexpectedArgs {
            command: "setup",
            args: rest
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
        }),
        Some("test") => Ok(Command::Test(rest)),
        Some("bench") => Ok(Command::Bench(rest)),
        Some("demo") => {
            let mut rest = rest;
            if rest.first().is_some_and(|a| a == "--") {
                rest.remove(0);
            }
            Ok(Command::Demo(rest))
        }
        _ => Err(UsageError::UnknownCommand(
            first.to_string_lossy().into_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn no_args_and_help_print_usage() {
        assert_eq!(parse(args(&[])), Ok(Command::Help));
        assert_eq!(parse(args(&["help"])), Ok(Command::Help));
        assert_eq!(parse(args(&["--help"])), Ok(Command::Help));
        assert_eq!(parse(args(&["-h"])), Ok(Command::Help));
    }

    #[test]
    fn test_and_bench_pass_args_through_verbatim() {
        assert_eq!(
            parse(args(&["test", "--", "--nocapture"])),
            Ok(Command::Test(args(&["--", "--nocapture"])))
        );
        assert_eq!(
            parse(args(&["bench", "--", "pick"])),
            Ok(Command::Bench(args(&["--", "pick"])))
        );
        assert_eq!(parse(args(&["test"])), Ok(Command::Test(vec![])));
    }

    #[test]
    fn demo_drops_one_leading_separator() {
        assert_eq!(
            parse(args(&["demo", "--", "--seed", "3"])),
            Ok(Command::Demo(args(&["--seed", "3"])))
        );
        assert_eq!(
            parse(args(&["demo", "--seed", "3"])),
            Ok(Command::Demo(args(&["--seed", "3"])))
        );
    }

    #[test]
    fn setup_rejects_args() {
        assert!(matches!(
            parse(args(&["setup", "x"])),
            Err(UsageError::UnexpectedArgs { .. })
        ));
        assert_eq!(parse(args(&["setup"])), Ok(Command::Setup));
    }

    #[test]
    fn unknown_command_is_an_error() {
        assert_eq!(
            parse(args(&["deploy"])),
            Err(UsageError::UnknownCommand("deploy".into()))
        );
        assert_eq!(
            parse(args(&["TEST"])),
            Err(UsageError::UnknownCommand("TEST".into()))
        );
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_command_is_an_error_not_a_panic() {
        use std::os::unix::ffi::OsStringExt;
        let bad = OsString::from_vec(vec![0xff, 0xfe]);
        assert!(matches!(
            parse(vec![bad]),
            Err(UsageError::UnknownCommand(_))
        ));
    }
}
