//! The machine a run measured: cores, memory, CPU model, OS (from /proc and
//! /etc/os-release; "unknown" where they are missing).

use serde_json::{Value, json};

/// What the report says about the machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub cores: usize,
    /// Total memory, in GiB.
    pub memory_gib: f64,
    /// The CPU model name.
    pub cpu: String,
    /// The OS's pretty name and the kernel release.
    pub os: String,
}

/// Describes this machine.
pub fn describe() -> Machine {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    let os = field(&read("/etc/os-release"), "PRETTY_NAME", '=')
        .map(|s| s.trim_matches('"').to_string())
        .unwrap_or_else(|| "unknown".into());
    Machine {
        cores,
        memory_gib: field(&read("/proc/meminfo"), "MemTotal", ':')
            .and_then(|v| v.trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0 / 1024.0),
        cpu: field(&read("/proc/cpuinfo"), "model name", ':').unwrap_or_else(|| "unknown".into()),
        os: format!("{os}, Linux {kernel}"),
    }
}

/// The value of the first `key SEP value` line of `text`, trimmed.
fn field(text: &str, key: &str, sep: char) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(sep)?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

// === impl Machine ===

impl Machine {
    /// The machine as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "cores": self.cores,
            "memory_gib": (self.memory_gib * 10.0).round() / 10.0,
            "cpu": self.cpu,
            "os": self.os,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_by_key() {
        let cpuinfo = "processor\t: 0\nmodel name\t: Some CPU @ 2.0GHz\n";
        assert_eq!(
            field(cpuinfo, "model name", ':').as_deref(),
            Some("Some CPU @ 2.0GHz")
        );
        assert_eq!(
            field("NAME=x\nPRETTY_NAME=\"Debian\"\n", "PRETTY_NAME", '=').as_deref(),
            Some("\"Debian\"")
        );
        assert_eq!(field("", "x", ':'), None);
    }

    #[test]
    fn this_machine_has_cores_and_memory() {
        let m = describe();
        assert!(m.cores > 0);
        assert!(m.memory_gib > 0.0);
        assert_eq!(m.to_json()["cores"], m.cores);
    }
}
