//! Making sure the external tools are present: `protoc` (needed to build the
//! `etcd-client` crate) and the `etcd` server (3.4+, used by the integration
//! tests).
//!
//! A tool is looked up through its override variable (`PROTOC`, `ETCD_BIN`)
//! first, then on `PATH`. A missing tool is installed with `apt-get` when
//! that exists and we are root or passwordless `sudo` works; otherwise the
//! task fails with a message saying how to install it by hand (see [`apt`]).
//! The decisions are pure functions ([`plan_install`], [`apt::apt_argv`],
//! [`lookup`], [`parse_etcd_version`]) so they can be unit-tested without
//! touching the machine.

use std::env;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Failure;

mod apt;

use apt::{Apt, Blocker, Plan, Privilege, detect_privilege, plan_install};

/// Which tools a task needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolSet {
    /// `protoc` and `etcd`.
    All,
    /// Only `protoc`.
    ProtocOnly,
}

/// An external tool and how to get it.
#[derive(Debug)]
pub struct Spec {
    /// The executable's name on `PATH`.
    pub name: &'static str,
    /// The variable that names the executable explicitly; exported to child
    /// cargo commands once the tool is found.
    pub env_var: &'static str,
    /// The Debian package that provides it.
    pub package: &'static str,
    /// What to do by hand when it cannot be installed automatically.
    pub manual: &'static str,
    /// The oldest acceptable `(major, minor)` version, if checked.
    pub min_version: Option<(u32, u32)>,
}

/// The protobuf compiler.
pub const PROTOC: Spec = Spec {
    name: "protoc",
    env_var: "PROTOC",
    package: "protobuf-compiler",
    manual: "install protoc (Debian/Ubuntu package `protobuf-compiler`) and put it on PATH, \
             or set PROTOC=/path/to/protoc",
    min_version: None,
};

/// The etcd server.
pub const ETCD: Spec = Spec {
    name: "etcd",
    env_var: "ETCD_BIN",
    package: "etcd-server",
    manual: "install etcd >= 3.4 (Debian/Ubuntu package `etcd-server`) and put it on PATH, \
             or set ETCD_BIN=/path/to/etcd",
    min_version: Some((3, 4)),
};

/// util-linux's `script`: the CLI's colour test runs `lodestar` on a
/// pseudo-terminal with it.
pub const SCRIPT: Spec = Spec {
    name: "script",
    env_var: "SCRIPT_BIN",
    package: "bsdutils",
    manual: "install util-linux's script (Debian/Ubuntu package `bsdutils`) and put it on PATH, \
             or set SCRIPT_BIN=/path/to/script",
    min_version: None,
};

/// nginx, the reference proxy of the gateway bench (`vs_nginx`).
pub const NGINX: Spec = Spec {
    name: "nginx",
    env_var: "NGINX_BIN",
    package: "nginx",
    manual: "install nginx (Debian/Ubuntu package `nginx`) and put it on PATH, \
             or set NGINX_BIN=/path/to/nginx",
    min_version: None,
};

/// wrk, the load generator of the gateway bench (`vs_nginx`).
pub const WRK: Spec = Spec {
    name: "wrk",
    env_var: "WRK_BIN",
    package: "wrk",
    manual: "install wrk (Debian/Ubuntu package `wrk`) and put it on PATH, \
             or set WRK_BIN=/path/to/wrk",
    min_version: None,
};

/// The browser of the dashboard's browser tests (driven by playwright-core,
/// which downloads no browser of its own).
pub const CHROMIUM: Spec = Spec {
    name: "chromium",
    env_var: "CHROMIUM",
    package: "chromium",
    manual: "install Chromium (Debian/Ubuntu package `chromium`) and put it on PATH, \
             or set CHROMIUM=/path/to/chromium",
    min_version: None,
};

/// Node.js, which runs the dashboard's browser test driver.
pub const NODE: Spec = Spec {
    name: "node",
    env_var: "NODE",
    package: "nodejs",
    manual: "install Node.js (Debian/Ubuntu package `nodejs`) and put it on PATH",
    min_version: None,
};

/// npm, which installs the driver's `playwright-core` (`npm ci`).
pub const NPM: Spec = Spec {
    name: "npm",
    env_var: "NPM",
    package: "npm",
    manual: "install npm (Debian/Ubuntu package `npm`) and put it on PATH",
    min_version: None,
};

/// Where the dashboard's browser tests keep their `package.json`.
pub const BROWSER_TESTS: &str = "crates/lodestar-dashboard/tests/browser";

/// A tool that is present and works.
#[derive(Debug, Clone)]
pub struct FoundTool {
    /// The tool's name, e.g. `protoc`.
    pub name: &'static str,
    /// Its version, as reported by `--version`.
    pub version: String,
}

/// Everything [`ensure`] found.
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// The tools, in the order they were checked.
    pub tools: Vec<FoundTool>,
    /// Variables to set for child commands (`PROTOC`, `ETCD_BIN`).
    pub env: Vec<(&'static str, PathBuf)>,
}

/// Parses `etcd --version` output (`etcd Version: 3.4.23`) into
/// `(major, minor, patch)`.
pub fn parse_etcd_version(output: &str) -> Option<(u32, u32, u32)> {
    let rest = output
        .lines()
        .find_map(|line| line.trim().strip_prefix("etcd Version:"))?;
    let mut parts = rest.trim().split('.').map(|p| {
        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// Whether `version` is at least `min`.
pub fn meets_minimum(version: (u32, u32, u32), min: (u32, u32)) -> bool {
    (version.0, version.1) >= min
}

/// Finds an executable named `name` in the directories of `path`.
pub fn find_on_path(name: &OsStr, path: &OsStr) -> Option<PathBuf> {
    env::split_paths(path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Whether `path` is a file we may execute.
pub fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        path.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

/// Where a tool is, or why it is not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Found at this absolute path.
    Found(PathBuf),
    /// Not found anywhere.
    Missing,
    /// The override variable names something that is not an executable.
    BadOverride(String),
}

/// Looks a tool up: the override variable (a path, or a bare name searched
/// on `PATH`) wins; otherwise the tool's name on `PATH`.
pub fn lookup(spec: &Spec, override_value: Option<OsString>, path: Option<&OsStr>) -> Lookup {
    let path = path.unwrap_or_default();
    if let Some(value) = override_value.filter(|v| !v.is_empty()) {
        let as_path = Path::new(&value);
        let resolved = if as_path.components().count() > 1 || as_path.is_absolute() {
            Some(as_path.to_path_buf()).filter(|p| is_executable(p))
        } else {
            find_on_path(&value, path)
        };
        return match resolved {
            Some(p) => Lookup::Found(std::path::absolute(&p).unwrap_or(p)),
            None => Lookup::BadOverride(format!(
                "{var}={} is not an executable file; point {var} at a working {} \
                 or unset it to search PATH",
                as_path.display(),
                spec.name,
                var = spec.env_var,
            )),
        };
    }
    match find_on_path(OsStr::new(spec.name), path) {
        Some(p) => Lookup::Found(std::path::absolute(&p).unwrap_or(p)),
        None => Lookup::Missing,
    }
}

/// Runs `<tool> --version` and returns the version to report, checking the
/// minimum version if the tool has one.
fn probe_version(spec: &Spec, path: &Path) -> Result<String, Failure> {
    let out = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            Failure::new(format!(
                "could not run `{} --version`: {e}; {}",
                path.display(),
                spec.manual
            ))
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(Failure::new(format!(
            "`{} --version` failed: {}; {}",
            path.display(),
            text.trim(),
            spec.manual
        )));
    }
    let first_line = text.lines().map(str::trim).find(|l| !l.is_empty());
    let first_line = first_line.unwrap_or("unknown version").to_string();
    let Some(min) = spec.min_version else {
        return Ok(first_line);
    };
    match parse_etcd_version(&text) {
        Some(v) if meets_minimum(v, min) => Ok(format!("{}.{}.{}", v.0, v.1, v.2)),
        Some(v) => Err(Failure::new(format!(
            "{} at {} is version {}.{}.{}, older than {}.{}; {}",
            spec.name,
            path.display(),
            v.0,
            v.1,
            v.2,
            min.0,
            min.1,
            spec.manual
        ))),
        None => {
            println!(
                "xtask: warning: could not read a version from `{} --version` ({first_line}); \
                 assuming it is recent enough",
                path.display()
            );
            Ok(first_line)
        }
    }
}

/// Makes sure the tools in `set` are present, installing missing ones with
/// apt-get when possible, and reports their versions.
pub fn ensure(set: ToolSet) -> Result<Found, Failure> {
    let specs: &[&Spec] = match set {
        ToolSet::All => &[&PROTOC, &ETCD, &SCRIPT],
        ToolSet::ProtocOnly => &[&PROTOC],
    };
    ensure_specs(specs)
}

/// Makes sure what the dashboard's browser tests need is present:
/// chromium, node and npm (installed with apt-get when missing), and
/// `playwright-core` in [`BROWSER_TESTS`] (`npm ci` when it is missing).
pub fn ensure_browser(root: &Path) -> Result<Found, Failure> {
    let found = ensure_specs(&[&CHROMIUM, &NODE, &NPM])?;
    let dir = root.join(BROWSER_TESTS);
    if dir.join("node_modules/playwright-core").is_dir() {
        println!("xtask: playwright-core present in {BROWSER_TESTS}");
        return Ok(found);
    }
    let npm = found
        .env
        .iter()
        .find(|(var, _)| *var == NPM.env_var)
        .map(|(_, path)| path.clone())
        .unwrap_or_else(|| PathBuf::from("npm"));
    println!("xtask: installing playwright-core: npm ci in {BROWSER_TESTS}");
    let status = Command::new(npm)
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| Failure::new(format!("could not run npm ci in {BROWSER_TESTS}: {e}")))?;
    if !status.success() {
        return Err(Failure::new(format!(
            "npm ci in {BROWSER_TESTS} failed ({status}): the dashboard's browser tests need \
             playwright-core from the npm registry"
        )));
    }
    Ok(found)
}

/// Python 3, which runs grpcio, the third-party gRPC client of the
/// gateway's tests.
pub const PYTHON3: Spec = Spec {
    name: "python3",
    env_var: "PYTHON3",
    package: "python3-venv",
    manual: "install Python 3 with its venv module (Debian/Ubuntu package `python3-venv`) and \
             put python3 on PATH, or set PYTHON3=/path/to/python3",
    min_version: None,
};

/// The grpcio release the tests install (PyPI), pinned.
pub const GRPCIO: &str = "grpcio==1.85.1";

/// The virtual environment that holds it, under the workspace.
pub const PYTHON_VENV: &str = "target/python";

/// Makes sure `grpcio` imports in [`PYTHON_VENV`] (created with
/// `python3 -m venv` and filled with `pip install` when it does not), and
/// exports its interpreter as `LODESTAR_PYTHON` for the tests.
pub fn ensure_grpcio(root: &Path) -> Result<Found, Failure> {
    let mut found = ensure_specs(&[&PYTHON3])?;
    let venv = root.join(PYTHON_VENV);
    let python = venv.join("bin/python");
    let imports = |python: &Path| {
        Command::new(python)
            .args(["-c", "import grpc"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if imports(&python) {
        println!("xtask: grpcio present in {PYTHON_VENV}");
    } else {
        let python3 = found
            .env
            .iter()
            .find(|(var, _)| *var == PYTHON3.env_var)
            .map(|(_, path)| path.clone())
            .unwrap_or_else(|| PathBuf::from("python3"));
        let make_venv = || {
            Command::new(&python3)
                .args(["-m", "venv"])
                .arg(&venv)
                .stdin(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        println!("xtask: creating {PYTHON_VENV} (python3 -m venv)");
        if !make_venv() {
            // Debian's python3 lacks ensurepip without python3-venv.
            let path_var = env::var_os("PATH");
            if find_on_path(
                OsStr::new("apt-get"),
                path_var.as_deref().unwrap_or_default(),
            )
            .is_some()
                && detect_privilege() != Privilege::None
            {
                let mut apt = Apt::new(detect_privilege() == Privilege::Sudo);
                apt.install(PYTHON3.package).map_err(Failure::new)?;
            }
            if !make_venv() {
                return Err(Failure::new(format!(
                    "could not create a Python virtual environment in {PYTHON_VENV}: {}",
                    PYTHON3.manual
                )));
            }
        }
        println!("xtask: installing {GRPCIO} into {PYTHON_VENV} (pip)");
        let status = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", GRPCIO])
            .stdin(Stdio::null())
            .status()
            .map_err(|e| Failure::new(format!("could not run pip in {PYTHON_VENV}: {e}")))?;
        if !status.success() || !imports(&python) {
            return Err(Failure::new(format!(
                "pip install {GRPCIO} in {PYTHON_VENV} failed ({status}): the gateway's \
                 third-party gRPC client test needs grpcio from PyPI"
            )));
        }
    }
    found.env.push(("LODESTAR_PYTHON", python));
    found.tools.push(FoundTool {
        name: "grpcio",
        version: GRPCIO.trim_start_matches("grpcio==").into(),
    });
    Ok(found)
}

/// Makes sure each tool of `specs` is present; see [`ensure`].
fn ensure_specs(specs: &[&Spec]) -> Result<Found, Failure> {
    let path_var = env::var_os("PATH");
    let mut apt: Option<Apt> = None;
    let mut found = Found::default();
    for spec in specs {
        let path = match lookup(spec, env::var_os(spec.env_var), path_var.as_deref()) {
            Lookup::Found(p) => p,
            Lookup::BadOverride(message) => return Err(Failure::new(message)),
            Lookup::Missing => install(spec, path_var.as_deref(), &mut apt)?,
        };
        let version = probe_version(spec, &path)?;
        println!("xtask: {} {version} ({})", spec.name, path.display());
        found.env.push((spec.env_var, path));
        found.tools.push(FoundTool {
            name: spec.name,
            version,
        });
    }
    Ok(found)
}

/// Installs a missing tool and returns where it now is.
fn install(
    spec: &Spec,
    path_var: Option<&OsStr>,
    apt: &mut Option<Apt>,
) -> Result<PathBuf, Failure> {
    let path = path_var.unwrap_or_default();
    let has_apt = find_on_path(OsStr::new("apt-get"), path).is_some();
    let plan = match apt {
        Some(apt) => Plan::Install { sudo: apt.sudo },
        None if has_apt => plan_install(false, true, detect_privilege()),
        None => plan_install(false, false, Privilege::None),
    };
    match plan {
        // Nothing to install: just look again below.
        Plan::UsePresent => {}
        Plan::Manual(blocker) => {
            let why = match blocker {
                Blocker::NoAptGet => "apt-get is not available",
                Blocker::NoPrivilege => "not running as root and `sudo -n` is not allowed",
            };
            return Err(Failure::new(format!(
                "{} not found and cannot install package `{}` automatically ({why}): {}",
                spec.name, spec.package, spec.manual
            )));
        }
        Plan::Install { sudo } => {
            println!(
                "xtask: {} not found; installing {} with apt-get{}",
                spec.name,
                spec.package,
                if sudo { " (via sudo -n)" } else { "" }
            );
            let apt = apt.get_or_insert_with(|| Apt::new(sudo));
            apt.install(spec.package).map_err(|e| {
                Failure::new(format!(
                    "installing package `{}` failed: {e}; {}",
                    spec.package, spec.manual
                ))
            })?;
        }
    }
    find_on_path(OsStr::new(spec.name), path).ok_or_else(|| {
        Failure::new(format!(
            "installed package `{}` but `{}` is still not on PATH; {}",
            spec.package, spec.name, spec.manual
        ))
    })
}

#[cfg(test)]
mod tests;

/// Makes sure the benches' load tools ([`NGINX`], [`WRK`]) are present,
/// installing missing ones with apt-get when possible. Neither answers
/// `--version` with success (both print it for `-v`), so presence is what
/// is checked; the bench reports what it ran.
pub fn ensure_bench_tools() -> Result<Found, Failure> {
    let path_var = env::var_os("PATH");
    let mut apt: Option<Apt> = None;
    let mut found = Found::default();
    for spec in [&NGINX, &WRK] {
        let path = match lookup(spec, env::var_os(spec.env_var), path_var.as_deref()) {
            Lookup::Found(p) => p,
            Lookup::BadOverride(message) => return Err(Failure::new(message)),
            Lookup::Missing => install(spec, path_var.as_deref(), &mut apt)?,
        };
        println!("xtask: {} ({})", spec.name, path.display());
        found.env.push((spec.env_var, path));
        found.tools.push(FoundTool {
            name: spec.name,
            version: "present".into(),
        });
    }
    Ok(found)
}

/// The Go toolchain, which builds the grpc-go peer of the propagation bench
/// (`bench/go/resolver`) in GOPATH mode from Debian's Go packages.
pub const GO: Spec = Spec {
    name: "go",
    env_var: "GO",
    package: "golang-go",
    manual: "install Go (Debian/Ubuntu package `golang-go`) and put it on PATH, or set GO=/path/to/go",
    min_version: None,
};

/// Where Debian's Go library packages put their sources (a GOPATH).
pub const GOCODE: &str = "/usr/share/gocode";

/// The Go libraries of the grpc-go peer: (import path under
/// [`GOCODE`]`/src`, Debian package).
pub const GO_LIBRARIES: [(&str, &str); 2] = [
    ("google.golang.org/grpc", "golang-google-grpc-dev"),
    ("go.etcd.io/etcd/clientv3", "golang-etcd-server-dev"),
];

/// Makes sure Go and the grpc-go and etcd client libraries are present
/// (apt-get when missing), for the propagation bench's grpc-go peer.
pub fn ensure_go() -> Result<Found, Failure> {
    // `go` answers `go version`, not `--version`: presence is checked.
    let path_var = env::var_os("PATH");
    let mut apt: Option<Apt> = None;
    let go = match lookup(&GO, env::var_os(GO.env_var), path_var.as_deref()) {
        Lookup::Found(p) => p,
        Lookup::BadOverride(message) => return Err(Failure::new(message)),
        Lookup::Missing => install(&GO, path_var.as_deref(), &mut apt)?,
    };
    println!("xtask: go ({})", go.display());
    let mut found = Found::default();
    found.env.push((GO.env_var, go));
    found.tools.push(FoundTool {
        name: GO.name,
        version: "present".into(),
    });
    for (import, package) in GO_LIBRARIES {
        let dir = Path::new(GOCODE).join("src").join(import);
        if dir.is_dir() {
            println!("xtask: {import} present ({})", dir.display());
            continue;
        }
        println!("xtask: {import} not found; installing {package} with apt-get");
        let sudo = match detect_privilege() {
            Privilege::Root => false,
            Privilege::Sudo => true,
            Privilege::None => {
                return Err(Failure::new(format!(
                    "{import} is missing and cannot be installed automatically (not root, no \
                     `sudo -n`): install the Debian package `{package}`"
                )));
            }
        };
        let apt = apt.get_or_insert_with(|| Apt::new(sudo));
        apt.install(package)
            .map_err(|e| Failure::new(format!("installing package `{package}` failed: {e}")))?;
        if !dir.is_dir() {
            return Err(Failure::new(format!(
                "installed `{package}` but {} is still missing",
                dir.display()
            )));
        }
    }
    Ok(found)
}
