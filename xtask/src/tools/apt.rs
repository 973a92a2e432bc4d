//! Installing missing packages with apt-get, and deciding whether we may.

use std::process::{Command, Stdio};

/// What we may do to install packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    /// We are root.
    Root,
    /// `sudo -n true` works.
    Sudo,
    /// Neither.
    None,
}

/// Why a missing tool cannot be installed automatically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocker {
    /// There is no `apt-get`.
    NoAptGet,
    /// Not root and no passwordless sudo.
    NoPrivilege,
}

/// What to do about one tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// It is present: use it.
    UsePresent,
    /// Install it with apt-get, through `sudo -n` if `sudo` is true.
    Install {
        /// Prefix the apt-get commands with `sudo -n`.
        sudo: bool,
    },
    /// It is missing and we cannot install it.
    Manual(Blocker),
}

/// Decides what to do about a tool.
pub fn plan_install(found: bool, has_apt: bool, privilege: Privilege) -> Plan {
    match (found, has_apt, privilege) {
        (true, _, _) => Plan::UsePresent,
        (false, false, _) => Plan::Manual(Blocker::NoAptGet),
        (false, true, Privilege::Root) => Plan::Install { sudo: false },
        (false, true, Privilege::Sudo) => Plan::Install { sudo: true },
        (false, true, Privilege::None) => Plan::Manual(Blocker::NoPrivilege),
    }
}

/// The argv of an apt-get command. With `sudo`, the environment variable is
/// passed through `env` since sudo may reset the environment.
pub fn apt_argv(sudo: bool, args: &[&str]) -> Vec<String> {
    let mut argv: Vec<String> = Vec::new();
    if sudo {
        argv.extend(["sudo", "-n", "env", "DEBIAN_FRONTEND=noninteractive"].map(String::from));
    }
    argv.push("apt-get".into());
    argv.extend(args.iter().map(|a| a.to_string()));
    argv
}

/// The arguments of `apt-get install` for one package: never prompt, keep
/// existing config files.
pub fn apt_install_args(package: &str) -> Vec<&str> {
    vec![
        "install",
        "-y",
        "-q",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
        package,
    ]
}

/// Installs packages with apt-get, running `apt-get update` at most once.
pub struct Apt {
    /// Prefix every command with `sudo -n`.
    pub sudo: bool,
    updated: bool,
}

impl Apt {
    /// An installer that has not run `apt-get update` yet.
    pub fn new(sudo: bool) -> Self {
        Apt {
            sudo,
            updated: false,
        }
    }

    /// Installs `package`, running `apt-get update` first if not done yet.
    pub fn install(&mut self, package: &str) -> Result<(), String> {
        if !self.updated {
            run_apt(self.sudo, &["update", "-q"])?;
            self.updated = true;
        }
        run_apt(self.sudo, &apt_install_args(package))
    }
}

/// Runs one apt-get command non-interactively, printing it first.
fn run_apt(sudo: bool, args: &[&str]) -> Result<(), String> {
    let argv = apt_argv(sudo, args);
    let line = argv.join(" ");
    let shown = if sudo {
        line.clone()
    } else {
        format!("DEBIAN_FRONTEND=noninteractive {line}")
    };
    println!("xtask: $ {shown}");
    let status = Command::new(&argv[0])
        .args(&argv[1..])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("could not start `{shown}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{shown}` failed (exit code {})",
            crate::cargo::exit_code(status)
        ))
    }
}

/// Whether we are root (`id -u` prints 0) or may use `sudo -n`.
pub fn detect_privilege() -> Privilege {
    let is_root = Command::new("id")
        .arg("-u")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| {
            out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "0"
        });
    if is_root {
        return Privilege::Root;
    }
    let sudo_ok = Command::new("sudo")
        .args(["-n", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if sudo_ok {
        Privilege::Sudo
    } else {
        Privilege::None
    }
}
