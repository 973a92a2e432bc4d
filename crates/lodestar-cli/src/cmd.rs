//! One module per subcommand.

pub(crate) mod call;
pub(crate) mod dashboard;
pub(crate) mod demo;
pub(crate) mod gateway;
pub(crate) mod health;
pub(crate) mod list;
pub(crate) mod register;
pub(crate) mod registry;
pub(crate) mod serve_echo;
pub(crate) mod set;
pub(crate) mod watch;
pub(crate) mod xds;

/// SIGTERM and SIGINT, caught from the moment this is created: create it
/// before registering, so a signal that arrives mid-registration still
/// deregisters instead of killing the process with the record left behind.
pub(crate) struct Shutdown {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Shutdown {
    /// Installs the handlers.
    pub(crate) fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves on the first SIGTERM or SIGINT.
    pub(crate) async fn into_future(mut self) {
        self.recv().await;
    }

    /// Resolves on the first SIGTERM or SIGINT, with its name.
    pub(crate) async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
