//! How the CLI prints instances: aligned tables for people, one JSON object
//! per line for programs.

use std::{fmt::Write as _, io::Write as _};

use lodestar::{
    Instance,
    instance::{COLOR, WEIGHT, ZONE},
};

/// Prints to stdout like `println!`, but a closed pipe (`lodestar get | head`)
/// ends the process quietly instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;

/// Prints a message to stderr like `eprintln!`, but never panics: a closed
/// stderr loses the message, not the process (a sidecar must keep its
/// registration alive whatever happened to its log pipe).
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}
pub(crate) use errln;

/// Writes to stdout; exits with success when the reader has gone away.
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        errln!("lodestar: error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// Renders rows as columns separated by two spaces; the first row is the
/// header.
pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The header of [`instance_row`].
pub(crate) fn instance_header() -> Vec<String> {
    [
        "ID",
        "VERSION",
        "ENDPOINTS",
        "COLOR",
        "WEIGHT",
        "ZONE",
        "METADATA",
    ]
    .map(String::from)
    .to_vec()
}

/// One instance as a table row: well-known metadata in their own columns,
/// the rest as `k=v` pairs.
pub(crate) fn instance_row(instance: &Instance) -> Vec<String> {
    let dash = |s: Option<&str>| s.unwrap_or("-").to_string();
    let endpoints: Vec<String> = instance.endpoints.iter().map(ToString::to_string).collect();
    let weight = match instance.weight() {
        Ok(w) => w.to_string(),
        Err(e) => format!("invalid ({})", e.0),
    };
    let other: Vec<String> = instance
        .metadata
        .iter()
        .filter(|(k, _)| ![COLOR, WEIGHT, ZONE].contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    vec![
        instance.id.clone(),
        dash(Some(instance.version.as_str()).filter(|v| !v.is_empty())),
        endpoints.join(","),
        dash(instance.color()),
        weight,
        dash(instance.zone()),
        if other.is_empty() {
            "-".into()
        } else {
            other.join(",")
        },
    ]
}

/// Seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (Howard
/// Hinnant's days-to-civil algorithm).
pub(crate) fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_795_427_599), "2026-11-23T09:53:19Z");
    }

    #[test]
    fn tables_align_and_rows_show_well_known_metadata() {
        let instance = Instance::new("echo", "a")
            .with_endpoint("grpc://127.0.0.1:1".parse().unwrap())
            .with_metadata("color", "blue")
            .with_metadata("team", "core");
        let text = table(&[instance_header(), instance_row(&instance)]);
        assert_eq!(
            text,
            "ID  VERSION  ENDPOINTS           COLOR  WEIGHT  ZONE  METADATA\n\
             a   -        grpc://127.0.0.1:1  blue   100     -     team=core\n"
        );
    }
}
