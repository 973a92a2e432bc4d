//! Registrations: `register`, a renew task per instance, `cancel`.

use std::{sync::Arc, time::Duration};

use lodestar::{
    BoxFuture, Error, Instance, Registration, RegistrationState, backoff::Backoff, registry::Lease,
};
use tokio::{sync::watch, task::AbortHandle};

use super::Shared;
use crate::{
    form::Form,
    wire::{self, Code},
};

/// Keeps one instance registered.
struct Renewer {
    shared: Arc<Shared>,
    register_form: String,
    renew_form: String,
    state: Arc<watch::Sender<RegistrationState>>,
}

/// The lease of one registration: its renew task.
#[derive(Debug)]
struct RenewLease {
    shared: Arc<Shared>,
    service: String,
    id: String,
    task: Option<AbortHandle>,
    state: Arc<watch::Sender<RegistrationState>>,
}

/// Registers `instance` and starts renewing it.
pub(super) async fn register(
    shared: Arc<Shared>,
    instance: Instance,
) -> Result<Registration, Error> {
    instance.validate()?;
    let config = &shared.config;
    let mut record = wire::Instance::from_lodestar(&instance, &config.env, &config.zone);
    record.ttl = config.ttl.map_or(0, |ttl| ttl.as_secs().max(1));
    let (state, rx) = watch::channel(RegistrationState::Registered);
    let renewer = Renewer {
        register_form: record.to_register_form(false),
        renew_form: key_form(&shared, &instance.service, &instance.id),
        shared: shared.clone(),
        state: Arc::new(state),
    };
    renewer.register().await?;
    let state = renewer.state.clone();
    let task = tokio::spawn(renewer.run(shared.config.renew_every()));
    let lease = RenewLease {
        shared,
        service: instance.service.clone(),
        id: instance.id.clone(),
        task: Some(task.abort_handle()),
        state,
    };
    Ok(Registration::new(instance, rx, Box::new(lease)))
}

/// Removes `service`/`id`; whether it was there.
pub(super) async fn cancel(shared: &Shared, service: &str, id: &str) -> Result<bool, Error> {
    let reply = shared
        .post("/discovery/cancel", key_form(shared, service, id))
        .await?;
    match reply.code() {
        Some(Code::Ok) => Ok(true),
        Some(Code::NotFound) => Ok(false),
        _ => Err(shared.refused(&reply)),
    }
}

fn key_form(shared: &Shared, service: &str, id: &str) -> String {
    Form::new()
        .pair("zone", &shared.config.zone)
        .pair("env", &shared.config.env)
        .pair("appid", service)
        .pair("hostname", id)
        .finish()
}

// === impl Renewer ===

impl Renewer {
    async fn run(self, every: Duration) {
        let cap = every.min(Duration::from_secs(5));
        let mut backoff = Backoff::new(Duration::from_millis(100), cap);
        let mut delay = every;
        loop {
            tokio::time::sleep(delay).await;
            match self.renew().await {
                Ok(()) => {
                    backoff.reset();
                    delay = every;
                    self.set(RegistrationState::Registered);
                }
                Err(e) => {
                    let attempt = backoff.attempt() + 1;
                    let error = error_chain(&e);
                    tracing::warn!(attempt, %error, "renew failed; retrying");
                    self.set(RegistrationState::Retrying { attempt, error });
                    delay = backoff.next_delay();
                }
            }
        }
    }

    async fn register(&self) -> Result<(), Error> {
        let reply = self
            .shared
            .post("/discovery/register", self.register_form.clone())
            .await?;
        match reply.code() {
            Some(Code::Ok) => Ok(()),
            _ => Err(self.shared.refused(&reply)),
        }
    }

    /// One renew; `-404` means the registry lost the instance: register it
    /// again.
    async fn renew(&self) -> Result<(), Error> {
        let reply = self
            .shared
            .post("/discovery/renew", self.renew_form.clone())
            .await?;
        match reply.code() {
            Some(Code::Ok) => Ok(()),
            Some(Code::NotFound) => {
                tracing::warn!("the registry no longer has this instance; registering again");
                self.set(RegistrationState::Retrying {
                    attempt: 0,
                    error: "the registry no longer had the instance".into(),
                });
                self.register().await
            }
            _ => Err(self.shared.refused(&reply)),
        }
    }

    fn set(&self, state: RegistrationState) {
        self.state.send_if_modified(|current| {
            let changed = *current != state;
            *current = state;
            changed
        });
    }
}

/// An error and its sources on one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

// === impl RenewLease ===

impl Lease for RenewLease {
    fn deregister(mut self: Box<Self>) -> BoxFuture<'static, Result<(), Error>> {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        Box::pin(async move {
            let result = cancel(&self.shared, &self.service, &self.id).await;
            self.state.send_replace(RegistrationState::Deregistered);
            result.map(drop)
        })
    }
}

impl Drop for RenewLease {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        task.abort();
        self.state.send_replace(RegistrationState::Deregistered);
        // Best effort: remove the record now rather than at eviction.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let shared = self.shared.clone();
            let (service, id) = (
                std::mem::take(&mut self.service),
                std::mem::take(&mut self.id),
            );
            runtime.spawn(async move {
                let _ = cancel(&shared, &service, &id).await;
            });
        }
    }
}
