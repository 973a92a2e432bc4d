//! Unit tests for the pure decision logic in `tools`.

use super::apt::{apt_argv, apt_install_args};
use super::*;

use std::fs;

#[test]
fn present_tools_are_used_whatever_else_holds() {
    for has_apt in [true, false] {
        for privilege in [Privilege::Root, Privilege::Sudo, Privilege::None] {
            assert_eq!(plan_install(true, has_apt, privilege), Plan::UsePresent);
        }
    }
}

#[test]
fn missing_tools_are_installed_as_root_or_with_sudo() {
    assert_eq!(
        plan_install(false, true, Privilege::Root),
        Plan::Install { sudo: false }
    );
    assert_eq!(
        plan_install(false, true, Privilege::Sudo),
        Plan::Install { sudo: true }
    );
}

#[test]
fn missing_tools_without_apt_or_privilege_need_manual_install() {
    for privilege in [Privilege::Root, Privilege::Sudo, Privilege::None] {
        assert_eq!(
            plan_install(false, false, privilege),
            Plan::Manual(Blocker::NoAptGet)
        );
    }
    assert_eq!(
        plan_install(false, true, Privilege::None),
        Plan::Manual(Blocker::NoPrivilege)
    );
}

#[test]
fn apt_commands_are_non_interactive() {
    assert_eq!(
        apt_argv(false, &["update", "-q"]),
        ["apt-get", "update", "-q"]
    );
    let install = apt_argv(true, &apt_install_args("etcd-server"));
    assert_eq!(
        install[..5],
        [
            "sudo",
            "-n",
            "env",
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get"
        ]
    );
    assert!(install.contains(&"-y".to_string()));
    assert!(install.contains(&"Dpkg::Options::=--force-confold".to_string()));
    assert_eq!(install.last().map(String::as_str), Some("etcd-server"));
}

#[test]
fn etcd_versions_are_parsed_and_checked() {
    let out = "etcd Version: 3.4.23\nGit SHA: Not provided\nGo Version: go1.19.8\n";
    assert_eq!(parse_etcd_version(out), Some((3, 4, 23)));
    assert_eq!(
        parse_etcd_version("etcd Version: 3.5.17-rc.0\n"),
        Some((3, 5, 17))
    );
    assert_eq!(parse_etcd_version("etcd Version: 3.6\n"), Some((3, 6, 0)));
    assert_eq!(parse_etcd_version("something else"), None);
    assert_eq!(parse_etcd_version("etcd Version: banana"), None);
    assert!(meets_minimum((3, 4, 0), (3, 4)));
    assert!(meets_minimum((3, 5, 1), (3, 4)));
    assert!(meets_minimum((4, 0, 0), (3, 4)));
    assert!(!meets_minimum((3, 3, 25), (3, 4)));
    assert!(!meets_minimum((2, 9, 9), (3, 4)));
}

/// A scratch directory holding a fake executable `protoc` and a
/// non-executable `etcd`.
fn scratch(tag: &str) -> PathBuf {
    let dir = env::temp_dir().join(format!("xtask-test-{}-{tag}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("protoc");
    fs::write(&exe, "#!/bin/sh\necho libprotoc 0.0\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::write(dir.join("etcd"), "not executable").unwrap();
    dir
}

#[test]
fn lookup_searches_path_and_skips_non_executables() {
    let dir = scratch("path");
    let path = env::join_paths([Path::new("/nonexistent-xtask"), &dir]).unwrap();
    assert_eq!(
        lookup(&PROTOC, None, Some(&path)),
        Lookup::Found(dir.join("protoc"))
    );
    #[cfg(unix)]
    assert_eq!(lookup(&ETCD, None, Some(&path)), Lookup::Missing);
    assert_eq!(lookup(&PROTOC, None, None), Lookup::Missing);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn override_variable_wins_and_bad_override_is_reported() {
    let dir = scratch("override");
    let exe = dir.join("protoc");
    let empty_path = OsString::new();
    // An explicit path works even with an empty PATH.
    assert_eq!(
        lookup(&PROTOC, Some(exe.clone().into()), Some(&empty_path)),
        Lookup::Found(exe.clone())
    );
    // A bare name is searched on PATH.
    let path = dir.clone().into_os_string();
    assert_eq!(
        lookup(&PROTOC, Some("protoc".into()), Some(&path)),
        Lookup::Found(exe)
    );
    // An empty override means "unset".
    assert_eq!(
        lookup(&PROTOC, Some(OsString::new()), Some(&path)),
        Lookup::Found(dir.join("protoc"))
    );
    // A path that is not there is an error naming the variable.
    match lookup(&ETCD, Some(dir.join("nope").into()), Some(&path)) {
        Lookup::BadOverride(message) => {
            assert!(message.contains("ETCD_BIN="), "{message}");
            assert!(message.contains("unset it"), "{message}");
        }
        other => panic!("expected BadOverride, got {other:?}"),
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn manual_instructions_name_package_and_variable() {
    assert!(PROTOC.manual.contains("protobuf-compiler"));
    assert!(PROTOC.manual.contains("PROTOC="));
    assert!(ETCD.manual.contains("etcd-server"));
    assert!(ETCD.manual.contains("ETCD_BIN="));
}

#[test]
fn browser_tools_name_their_packages_and_the_npm_folder_exists() {
    assert_eq!(CHROMIUM.package, "chromium");
    assert!(CHROMIUM.manual.contains("CHROMIUM="));
    assert_eq!(NODE.package, "nodejs");
    assert_eq!(NPM.package, "npm");
    // `npm ci` needs the lock file where ensure_browser looks.
    let dir = crate::cargo::workspace_root().join(BROWSER_TESTS);
    assert!(dir.join("package.json").is_file(), "{}", dir.display());
    assert!(dir.join("package-lock.json").is_file(), "{}", dir.display());
}
