//! What the demo shows while it runs. On a terminal: a live view redrawn
//! four times a second (ratatui, in the alternate screen) with calls/s and
//! p50/p99 per instance, the routes in use and the event log. Otherwise
//! (piped, CI, tests): plain lines, no control codes: each event as it
//! happens and a rates table after each step.
//!
//! Raw mode is never enabled, so Ctrl-C stays a SIGINT the demo handles.

use std::{
    collections::{BTreeMap, VecDeque},
    io::IsTerminal,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use lodestar::{Discovery, Instance};
use ratatui::{
    Terminal,
    backend::CrosstermBackend,
    crossterm::{cursor, execute, terminal},
    layout::{Constraint, Layout},
    style::{Color, Modifier, Style},
    text::Line,
    widgets::{Block, Paragraph, Row, Table, Wrap},
};
use tokio::task::JoinHandle;

use super::{
    fleet::SERVICE,
    traffic::{Rate, Stats},
};
use crate::output::{outln, table};

/// How many events the live view keeps.
const EVENTS: usize = 200;

/// The event log, the step in progress and the routes in use; cheap to
/// clone.
#[derive(Clone)]
pub(super) struct Log {
    inner: Arc<Mutex<LogInner>>,
}

struct LogInner {
    plain: bool,
    started: tokio::time::Instant,
    events: VecDeque<String>,
    routes: Vec<String>,
    instances: BTreeMap<String, Instance>,
}

/// The live view's drawing task, and what stops it.
pub(super) struct Live {
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<()>,
}

// === impl Log ===

impl Log {
    /// Plain lines when `plain` (see [`plain`]), else kept for the live view.
    pub(super) fn new(plain: bool) -> Self {
        Self {
            inner: Arc::new(Mutex::new(LogInner {
                plain,
                started: tokio::time::Instant::now(),
                events: VecDeque::new(),
                routes: Vec::new(),
                instances: BTreeMap::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LogInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether lines go straight to stdout.
    pub(super) fn is_plain(&self) -> bool {
        self.lock().plain
    }

    /// An event: printed at once when plain, kept for the live view else.
    pub(super) fn event(&self, line: impl Into<String>) {
        let line = line.into();
        let mut inner = self.lock();
        if inner.plain {
            outln!("{line}");
            return;
        }
        let at = inner.started.elapsed().as_secs_f64();
        inner.events.push_back(format!("{at:5.1}s {line}"));
        if inner.events.len() > EVENTS {
            inner.events.pop_front();
        }
    }

    /// The routes in use, shown by the live view.
    pub(super) fn routes(&self, routes: &[String]) {
        self.lock().routes = routes.to_vec();
    }

    /// When plain: the rates table (the live view shows it all the time).
    pub(super) fn print_rates(&self, stats: &Stats) {
        if !self.is_plain() {
            return;
        }
        let rows = self.rows(&stats.rates());
        for line in table(&rows).lines() {
            outln!("   {line}");
        }
    }

    fn rows(&self, rates: &[Rate]) -> Vec<Vec<String>> {
        let inner = self.lock();
        let mut rows = vec![
            [
                "INSTANCE", "VERSION", "LANE", "STATE", "CALLS/S", "P50", "P99", "CALLS",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for rate in rates {
            let (version, lane, state) = match inner.instances.get(&rate.id) {
                Some(i) => (
                    i.version.clone(),
                    i.color().unwrap_or("base").to_string(),
                    if i.is_down() { "down" } else { "up" }.to_string(),
                ),
                None => ("-".into(), "-".into(), "gone".into()),
            };
            rows.push(vec![
                rate.id.clone(),
                version,
                lane,
                state,
                rate.per_second.to_string(),
                millis(rate.p50),
                millis(rate.p99),
                rate.total.to_string(),
            ]);
        }
        rows
    }

    /// Follows the echo service: each change is an event, and the live
    /// view shows each instance's version, lane and state.
    pub(super) async fn follow(self, discovery: Arc<dyn Discovery>) {
        let Ok(mut watch) = discovery.watch(SERVICE).await else {
            self.event("registry: cannot follow the echo service");
            return;
        };
        let mut last = watch.latest();
        self.known(&last);
        while let Some(snapshot) = watch.next().await {
            for change in snapshot.changes(&last) {
                let i = change.instance();
                let lane = i.color().map(|c| format!(", {c} lane")).unwrap_or_default();
                let down = if i.is_down() { ", down" } else { "" };
                let kind = change.kind();
                self.event(format!(
                    "  registry: {kind} {} ({}{lane}{down})",
                    i.id, i.version
                ));
            }
            self.known(&snapshot);
            last = snapshot;
        }
    }

    fn known(&self, snapshot: &lodestar::Snapshot) {
        let instances = snapshot
            .instances()
            .iter()
            .map(|i| (i.id.clone(), i.as_ref().clone()))
            .collect();
        self.lock().instances = instances;
    }
}

/// Whether to print plain lines: asked for, or stdout is not a terminal.
pub(super) fn plain(asked: bool) -> bool {
    asked || !std::io::stdout().is_terminal()
}

fn millis(d: Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1e3)
}

// === impl Live ===

impl Live {
    /// Enters the alternate screen and redraws every 250 ms; `None` when
    /// plain.
    pub(super) fn start(log: &Log, stats: &Stats) -> anyhow::Result<Option<Self>> {
        if log.is_plain() {
            return Ok(None);
        }
        let mut stdout = std::io::stdout();
        execute!(stdout, terminal::EnterAlternateScreen, cursor::Hide)?;
        let terminal = Terminal::new(CrosstermBackend::new(stdout))?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let (log, stats) = (log.clone(), stats.clone());
        let task = tokio::spawn(async move {
            let mut terminal = terminal;
            // Start from a blank screen whatever the terminal kept.
            let _ = terminal.clear();
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stopped => break,
                }
                let _ = terminal.draw(|frame| draw(frame, &log, &stats));
            }
        });
        Ok(Some(Self { stop, task }))
    }

    /// Stops drawing and gives the terminal back.
    pub(super) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        let _ = execute!(
            std::io::stdout(),
            terminal::LeaveAlternateScreen,
            cursor::Show
        );
    }
}

/// An instance row's colour by its state: down yellow, gone dim.
fn paint(cells: &[String]) -> Style {
    match cells.get(3).map(String::as_str) {
        Some("down") => paint_if(Style::new().fg(Color::Yellow)),
        Some("gone") => paint_if(Style::new().add_modifier(Modifier::DIM)),
        _ => Style::new(),
    }
}

/// `style`, unless `NO_COLOR` says no colour.
fn paint_if(style: Style) -> Style {
    if std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) {
        style
    } else {
        Style::new()
    }
}

/// The newest events that fit a bordered box of `width` x `height`, long
/// ones wrapped.
fn latest(events: VecDeque<String>, width: u16, height: u16) -> Vec<String> {
    let inner = usize::from(width.saturating_sub(2)).max(1);
    let mut room = usize::from(height.saturating_sub(2));
    let mut shown = Vec::new();
    for event in events.into_iter().rev() {
        let rows = event.chars().count().div_ceil(inner).max(1);
        if rows > room {
            break;
        }
        room -= rows;
        shown.push(event);
    }
    shown.reverse();
    shown
}

fn draw(frame: &mut ratatui::Frame<'_>, log: &Log, stats: &Stats) {
    let rows = log.rows(&stats.rates());
    let totals = stats.totals();
    let (routes, events) = {
        let inner = log.lock();
        (inner.routes.clone(), inner.events.clone())
    };
    let [top, middle, bottom] = Layout::vertical([
        Constraint::Length(rows.len() as u16 + 2),
        Constraint::Length(routes.len() as u16 + 3),
        Constraint::Min(4),
    ])
    .areas(frame.area());
    let widths = [10, 8, 6, 6, 8, 9, 9, 9].map(Constraint::Length);
    let mut lines = rows.into_iter();
    let header = lines.next().map(Row::new).unwrap_or_default();
    let instances = Table::new(
        lines.map(|cells| Row::new(cells.clone()).style(paint(&cells))),
        widths,
    )
    .header(header.style(paint_if(Style::new().add_modifier(Modifier::BOLD))))
    .block(Block::bordered().title(" lodestar demo: instances (last second) - Ctrl-C stops "));
    frame.render_widget(instances, top);
    let mut text: Vec<Line<'_>> = routes.into_iter().map(Line::from).collect();
    let failed = Line::from(format!(
        "failed calls: {} through the channel, {} through the gateway",
        totals.failed_grpc, totals.failed_gateway
    ));
    text.push(match totals.failed() {
        0 => failed,
        _ => failed.style(paint_if(Style::new().fg(Color::Red))),
    });
    frame.render_widget(
        Paragraph::new(text).block(Block::bordered().title(" routes in use ")),
        middle,
    );
    let text: Vec<Line<'_>> = latest(events, bottom.width, bottom.height)
        .into_iter()
        .map(Line::from)
        .collect();
    frame.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(" events ")),
        bottom,
    );
}

#[cfg(test)]
mod tests {
    use ratatui::backend::TestBackend;

    use super::*;

    #[test]
    fn the_newest_events_that_fit_wrapped() {
        let events: VecDeque<String> = ["a".repeat(30), "b".into(), "c".repeat(12)].into();
        // 10 columns inside the border, 3 rows: "c..." takes 2, "b" 1.
        assert_eq!(
            latest(events.clone(), 12, 5),
            vec!["b".to_string(), "c".repeat(12)]
        );
        assert_eq!(latest(events, 12, 2), Vec::<String>::new());
    }

    #[tokio::test]
    async fn the_live_view_shows_rates_routes_and_events() {
        let (log, stats) = (Log::new(false), Stats::default());
        stats.ok("echo-1", Duration::from_millis(2));
        stats.failed(
            super::super::traffic::Path::Gateway,
            "gateway answered 502".into(),
        );
        log.routes(&["steady: channel -> echo".to_string()]);
        log.event("2. scale out");
        let mut terminal = Terminal::new(TestBackend::new(100, 20)).unwrap();
        terminal.draw(|frame| draw(frame, &log, &stats)).unwrap();
        let screen: String = terminal
            .backend()
            .buffer()
            .content()
            .chunks(100)
            .map(|row| row.iter().map(|c| c.symbol()).collect::<String>() + "\n")
            .collect();
        for expected in [
            "echo-1",
            "2.0ms",
            "gone",
            "steady: channel -> echo",
            "0 through the channel, 1 through the gateway",
            "2. scale out",
        ] {
            assert!(screen.contains(expected), "{expected:?} missing:\n{screen}");
        }
    }
}
