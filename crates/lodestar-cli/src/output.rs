//! How the CLI prints instances: aligned tables for people, one JSON object
//! per line for programs.

use std::{
    io::{IsTerminal as _, Write as _},
    sync::OnceLock,
};

use lodestar::{
    Instance,
    instance::{COLOR, REGISTERED, STATUS, WEIGHT, ZONE},
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

/// How a command prints: `--output` (global), or a command's `--json`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Aligned columns, the common ones.
    #[default]
    Table,
    /// Aligned columns, every one (metadata, full times).
    Wide,
    /// One JSON object per line.
    Json,
}

static FORMAT: OnceLock<Format> = OnceLock::new();

/// Sets the format of the whole run (from `--output`); once, at start.
pub(crate) fn set_format(format: Format) {
    let _ = FORMAT.set(format);
}

/// The format asked for; `json` (a command's `--json`) wins.
pub(crate) fn format(json: bool) -> Format {
    if json {
        return Format::Json;
    }
    FORMAT.get().copied().unwrap_or_default()
}

/// Whether to colour stdout: only on a terminal, and never when `NO_COLOR`
/// is set to anything but the empty string (<https://no-color.org>).
pub(crate) fn colour() -> bool {
    static COLOUR: OnceLock<bool> = OnceLock::new();
    *COLOUR.get_or_init(|| {
        std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
    })
}

/// A colour (or weight) of a cell, applied only when [`colour`] says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Paint {
    /// As is.
    Plain,
    /// Headers.
    Bold,
    /// Up, serving, added.
    Green,
    /// Changed, unknown.
    Yellow,
    /// Down, not serving, removed, unreachable.
    Red,
    /// Absent values.
    Dim,
}

/// One cell: its text and paint.
#[derive(Clone, Debug)]
pub(crate) struct Cell {
    text: String,
    paint: Paint,
}

/// The one table style of the CLI: columns separated by two spaces, a bold
/// header, cells painted on a terminal only (widths count the text, not
/// the colour codes).
#[derive(Debug, Default)]
pub(crate) struct Table {
    rows: Vec<Vec<Cell>>,
}

// === impl Cell ===

impl Cell {
    /// A painted cell.
    pub(crate) fn new(text: impl Into<String>, paint: Paint) -> Self {
        Self {
            text: text.into(),
            paint,
        }
    }

    fn render(&self, colour: bool) -> String {
        let code = match self.paint {
            Paint::Plain => return self.text.clone(),
            _ if !colour => return self.text.clone(),
            Paint::Bold => "1",
            Paint::Green => "32",
            Paint::Yellow => "33",
            Paint::Red => "31",
            Paint::Dim => "2",
        };
        format!("\x1b[{code}m{}\x1b[0m", self.text)
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        let paint = if text == "-" {
            Paint::Dim
        } else {
            Paint::Plain
        };
        Self::new(text, paint)
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Self::from(text.to_string())
    }
}

// === impl Table ===

impl Table {
    /// A table with this header row.
    pub(crate) fn new<I: IntoIterator<Item = S>, S: Into<String>>(header: I) -> Self {
        let header = header
            .into_iter()
            .map(|h| Cell::new(h, Paint::Bold))
            .collect();
        Self { rows: vec![header] }
    }

    /// Adds a row.
    pub(crate) fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    /// The text, without a trailing newline, coloured if [`colour`] says.
    pub(crate) fn render(&self) -> String {
        self.render_with(colour())
    }

    fn render_with(&self, colour: bool) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                let width = |r: &Vec<Cell>| r.get(c).map_or(0, |cell| cell.text.chars().count());
                self.rows.iter().map(width).max().unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                line.push_str(&cell.render(colour));
                if c + 1 < row.len() {
                    let pad = widths[c] - cell.text.chars().count() + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out.trim_end().to_string()
    }
}

/// Renders rows as columns separated by two spaces; the first row is the
/// header. (The uncoloured [`Table`], for callers with plain strings.)
#[allow(dead_code)] // kept for commands built on plain rows elsewhere (merged separately)
pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let mut table = Table::default();
    for row in rows {
        table.row(
            row.iter()
                .map(|c| Cell::new(c.clone(), Paint::Plain))
                .collect(),
        );
    }
    table.render_with(false) + "\n"
}

/// Whom an instance serves: its colour lane, `base` when none.
pub(crate) fn lane(instance: &Instance) -> &str {
    instance.color().unwrap_or("base")
}

/// `up` or `down`, as an operator set it.
pub(crate) fn status(instance: &Instance) -> Cell {
    if instance.is_down() {
        Cell::new("down", Paint::Red)
    } else {
        Cell::new("up", Paint::Green)
    }
}

/// The header of [`instance_row`]; `wide` adds the registration time and
/// the other metadata.
pub(crate) fn instance_header(wide: bool) -> Vec<&'static str> {
    let mut header = vec![
        "ID",
        "ENDPOINTS",
        "VERSION",
        "LANE",
        "ZONE",
        "WEIGHT",
        "STATUS",
        "AGE",
    ];
    if wide {
        header.extend(["REGISTERED", "METADATA"]);
    }
    header
}

/// One instance as a table row: endpoints, version, lane, zone, weight,
/// status, age (from [`Instance::registered`], at `now`); `wide` adds the
/// registration time and the rest of the metadata as `k=v` pairs.
pub(crate) fn instance_row(instance: &Instance, now: u64, wide: bool) -> Vec<Cell> {
    let dash = |s: Option<&str>| Cell::from(s.unwrap_or("-"));
    let endpoints: Vec<String> = instance.endpoints.iter().map(ToString::to_string).collect();
    let weight = match instance.weight() {
        Ok(w) => Cell::from(w.to_string()),
        Err(e) => Cell::new(format!("invalid ({})", e.0), Paint::Red),
    };
    let registered = instance.registered();
    let mut row = vec![
        Cell::from(instance.id.clone()),
        Cell::from(endpoints.join(",")),
        dash(Some(instance.version.as_str()).filter(|v| !v.is_empty())),
        Cell::from(lane(instance)),
        dash(instance.zone()),
        weight,
        status(instance),
        dash(registered.map(|t| age(now.saturating_sub(t))).as_deref()),
    ];
    if wide {
        let other: Vec<String> = instance
            .metadata
            .iter()
            .filter(|(k, _)| ![COLOR, WEIGHT, ZONE, STATUS, REGISTERED].contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        row.push(dash(registered.map(utc).as_deref()));
        row.push(dash(
            Some(other.join(",")).filter(|o| !o.is_empty()).as_deref(),
        ));
    }
    row
}

/// A duration in seconds as people read an age: `45s`, `12m`, `3h20m`, `4d2h`.
pub(crate) fn age(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m", secs / 60),
        3_600..86_400 => format!("{}h{}m", secs / 3_600, secs % 3_600 / 60),
        _ => format!("{}d{}h", secs / 86_400, secs % 86_400 / 3_600),
    }
}

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
            .with_metadata("team", "core")
            .with_metadata("registered", "1000");
        let mut table = Table::new(instance_header(true));
        table.row(instance_row(&instance, 1_125, true));
        assert_eq!(
            table.render_with(false),
            "ID  ENDPOINTS           VERSION  LANE  ZONE  WEIGHT  STATUS  AGE  REGISTERED            METADATA\n\
             a   grpc://127.0.0.1:1  -        blue  -     100     up      2m   1970-01-01T00:16:40Z  team=core"
        );
    }

    #[test]
    fn colour_codes_do_not_shift_columns() {
        let down = Instance::new("echo", "b")
            .with_endpoint("grpc://127.0.0.1:2".parse().unwrap())
            .with_metadata("status", "down");
        let mut table = Table::new(["ID", "STATUS", "AGE"]);
        table.row(vec![Cell::from("b"), status(&down), Cell::from("-")]);
        table.row(vec![
            Cell::from("longer"),
            Cell::new("up", Paint::Green),
            Cell::from("1s"),
        ]);
        let coloured = table.render_with(true);
        let stripped = coloured
            .replace("\x1b[1m", "")
            .replace("\x1b[31m", "")
            .replace("\x1b[32m", "")
            .replace("\x1b[2m", "")
            .replace("\x1b[0m", "");
        assert_eq!(stripped, table.render_with(false));
        assert!(coloured.contains("\x1b[31mdown\x1b[0m"));
    }

    #[test]
    fn ages_read_like_ages() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(125), "2m");
        assert_eq!(age(3 * 3_600 + 20 * 60), "3h20m");
        assert_eq!(age(2 * 86_400 + 3_600), "2d1h");
    }
}
