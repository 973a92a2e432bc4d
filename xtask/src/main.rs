//! `cargo xtask`: the project's task runner.
//!
//! Run it through the cargo alias defined in `.cargo/config.toml`:
//!
//! ```text
//! cargo xtask test [ARGS...]    # install tools if needed, licenses and bans, fmt, clippy, test
//! cargo xtask demo [ARGS...]    # run `lodestar demo`
//! cargo xtask bench [--quick]   # every figure beside its peer -> docs/BENCHMARKS.md
//! cargo xtask setup             # only make sure protoc and etcd are present
//! cargo xtask help              # list the commands
//! ```
//!
//! `cargo xtask test` is the single command that runs every check on a
//! fresh machine; CI runs it through `.ci/run`. The task runner uses only the
//! standard library so that it builds quickly and never needs `protoc`
//! itself.

#![warn(missing_docs)]

mod bench;
mod cargo;
mod cli;
mod deny;
mod tools;

use std::ffi::OsString;
use std::fmt;
use std::process::ExitCode;

use cli::Command;
use tools::ToolSet;

/// Why a task stopped: the exit code to leave with and, usually, a message
/// explaining what went wrong and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The process exit code (never 0).
    pub code: u8,
    /// Printed to stderr (prefixed with `xtask: `) before exiting.
    pub message: Option<String>,
}

impl Failure {
    /// A failure with exit code 1 and the given message.
    pub fn new(message: impl Into<String>) -> Self {
        Failure {
            code: 1,
            message: Some(message.into()),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(message) => write!(f, "{message} (exit code {})", self.code),
            None => write!(f, "exit code {}", self.code),
        }
    }
}

/// The result of every task.
pub type Outcome = Result<(), Failure>;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let command = match cli::parse(args) {
        Ok(command) => command,
        Err(error) => {
            eprintln!("xtask: {error}\n");
            eprint!("{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if let Some(message) = &failure.message {
                eprintln!("xtask: {message}");
            }
            ExitCode::from(failure.code.max(1))
        }
    }
}

/// Runs one parsed command.
fn run(command: Command) -> Outcome {
    match command {
        Command::Help => {
            print!("{}", cli::USAGE);
            Ok(())
        }
        Command::Setup => {
            let mut found = tools::ensure(ToolSet::All)?;
            found.tools.extend(tools::ensure_bench_tools()?.tools);
            found.tools.extend(tools::ensure_go()?.tools);
            found
                .tools
                .extend(tools::ensure_browser(&cargo::workspace_root())?.tools);
            found
                .tools
                .extend(tools::ensure_grpcio(&cargo::workspace_root())?.tools);
            let present: Vec<String> = found
                .tools
                .iter()
                .map(|t| format!("{} ({})", t.name, t.version))
                .collect();
            println!("xtask: setup complete: {} present", present.join(", "));
            Ok(())
        }
        Command::Test(extra) => {
            cargo::header("licenses and bans (cargo metadata against xtask/src/deny.rs)");
            deny::check()?;
            cargo::header("ensure tools (protoc, etcd, chromium, node, playwright-core, grpcio)");
            let mut found = tools::ensure(ToolSet::All)?;
            found
                .env
                .extend(tools::ensure_browser(&cargo::workspace_root())?.env);
            found
                .env
                .extend(tools::ensure_grpcio(&cargo::workspace_root())?.env);
            cargo::header(
                "ensure Go and grpc-go/etcd packages (the bench's Go peer compiles in a test)",
            );
            found.env.extend(tools::ensure_go()?.env);
            cargo::run_steps(&cargo::test_steps(&extra), &found.env)
        }
        Command::Demo(extra) => {
            cargo::header("ensure tools (protoc)");
            let found = tools::ensure(ToolSet::ProtocOnly)?;
            cargo::run_steps(&[cargo::demo_step(&extra)], &found.env)
        }
        Command::Bench(extra) if extra.len() == 1 && extra[0] == "--render" => bench::render(),
        Command::Bench(extra) => {
            let mode = bench::Mode::from_args(&extra).map_err(|e| Failure {
                code: 2,
                message: Some(e),
            })?;
            cargo::header("ensure tools (protoc, etcd)");
            let mut found = tools::ensure(ToolSet::All)?;
            cargo::header("ensure bench tools (nginx, wrk, Go with grpc-go and etcd's resolver)");
            found.env.extend(tools::ensure_bench_tools()?.env);
            // The xDS bench's third-party client.
            found
                .env
                .extend(tools::ensure_grpcio(&cargo::workspace_root())?.env);
            // Without Go the other figures still run; the report says why
            // the grpc-go row is missing.
            let go_path = match tools::ensure_go() {
                Ok(go) => go
                    .env
                    .iter()
                    .find(|(k, _)| *k == tools::GO.env_var)
                    .map(|(_, p)| Ok(p.clone()))
                    .unwrap_or_else(|| Err("go not found".to_string())),
                Err(failure) => Err(failure.message.unwrap_or_else(|| "Go missing".into())),
            };
            cargo::header("build the grpc-go peer (GOPATH mode, Debian's packages)");
            let resolver =
                go_path.and_then(|go| bench::build_go_resolver(&cargo::workspace_root(), &go));
            if let Err(why) = &resolver {
                eprintln!("xtask: {why}");
            }
            println!("xtask: each bench prints its figures as it runs (below); the report follows");
            bench::run(mode, &found.env, resolver)
        }
    }
}
