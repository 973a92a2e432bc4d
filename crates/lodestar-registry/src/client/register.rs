//! Registrations: `register`, then the core keep-alive driver renewing the
//! instance, `cancel`.

use std::sync::Arc;

use lodestar::{
    BoxFuture, Error, Instance, Registration, RegistrationState,
    backoff::Backoff,
    registry::{
        Lease,
        keepalive::{Backend, Driver, Failure},
    },
};
use tokio::{sync::watch, task::JoinHandle};
use tracing::Instrument;

use super::Shared;
use crate::{
    form::Form,
    wire::{self, Code},
};

/// The requests that keep one instance registered, for the core
/// [`Driver`]: `register` establishes, `renew` keeps alive, and a renew
/// answered `-404` says the registry lost the instance.
struct Renewer {
    shared: Arc<Shared>,
    register_form: String,
    renew_form: String,
}

/// The lease of one registration: its renew task.
#[derive(Debug)]
struct RenewLease {
    shared: Arc<Shared>,
    zone: String,
    service: String,
    id: String,
    task: Option<JoinHandle<()>>,
    state: watch::Sender<RegistrationState>,
}

/// Registers `instance` (the first attempt's error goes back to the
/// caller) and starts renewing it.
pub(super) async fn register(
    shared: Arc<Shared>,
    instance: Instance,
) -> Result<Registration, Error> {
    instance.validate()?;
    let config = &shared.config;
    let mut record = wire::Instance::from_lodestar(&instance, &config.env, &config.zone);
    record.ttl = config.ttl.map_or(0, |ttl| ttl.as_secs().max(1));
    let renewer = Renewer {
        register_form: record.to_register_form(false),
        // Discovery finds an instance by zone too: renew and cancel in the
        // zone it was registered in (its own `zone`, else the URL's).
        renew_form: key_form(&shared, &record.zone, &instance.service, &instance.id),
        shared: shared.clone(),
    };
    let every = config.renew_every();
    // Capped at the interval, so an instance the registry lost is back
    // before it would have been evicted.
    let mut driver = Driver::new(renewer, every, Backoff::registration(every));
    let (state, rx) = watch::channel(RegistrationState::Registered);
    driver.serve(0, state.clone());
    driver.establish().await?;
    let span = tracing::info_span!("renew", service = %instance.service, id = %instance.id);
    let task = tokio::spawn(driver.run().instrument(span));
    let lease = RenewLease {
        shared,
        zone: record.zone.clone(),
        service: instance.service.clone(),
        id: instance.id.clone(),
        task: Some(task),
        state,
    };
    Ok(Registration::new(instance, rx, Box::new(lease)))
}

/// Removes `service`/`id` of `zone`; whether it was there.
pub(super) async fn cancel(
    shared: &Shared,
    zone: &str,
    service: &str,
    id: &str,
) -> Result<bool, Error> {
    let reply = shared
        .post("/discovery/cancel", key_form(shared, zone, service, id))
        .await?;
    match reply.code() {
        Some(Code::Ok) => Ok(true),
        Some(Code::NotFound) => Ok(false),
        _ => Err(shared.refused(&reply)),
    }
}

fn key_form(shared: &Shared, zone: &str, service: &str, id: &str) -> String {
    Form::new()
        .pair("zone", zone)
        .pair("env", &shared.config.env)
        .pair("appid", service)
        .pair("hostname", id)
        .finish()
}

// === impl Renewer ===

impl Backend for Renewer {
    /// Nothing: the registry knows the instance by its key.
    type Lease = ();

    async fn establish(&mut self) -> Result<(), Failure> {
        let reply = self
            .shared
            .post("/discovery/register", self.register_form.clone())
            .await
            .map_err(Failure::Transient)?;
        match reply.code() {
            Some(Code::Ok) => Ok(()),
            // A refusal may be a node that is not ready yet: keep trying.
            _ => Err(Failure::Transient(self.shared.refused(&reply))),
        }
    }

    /// One renew; `-404` means the registry lost the instance (it
    /// restarted, or evicted it during a long pause).
    async fn keep_alive(&mut self, _: &mut ()) -> Result<(), Failure> {
        let reply = self
            .shared
            .post("/discovery/renew", self.renew_form.clone())
            .await
            .map_err(Failure::Transient)?;
        match reply.code() {
            Some(Code::Ok) => Ok(()),
            Some(Code::NotFound) => Err(Failure::Gone(self.shared.refused(&reply))),
            _ => Err(Failure::Transient(self.shared.refused(&reply))),
        }
    }
}

// === impl RenewLease ===

impl Lease for RenewLease {
    fn deregister(mut self: Box<Self>) -> BoxFuture<'static, Result<(), Error>> {
        let task = self.task.take();
        Box::pin(async move {
            if let Some(task) = task {
                task.abort();
                // Wait for it to stop, so it publishes nothing after
                // `Deregistered`.
                let _ = task.await;
            }
            let result = cancel(&self.shared, &self.zone, &self.service, &self.id).await;
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
            let (zone, service, id) = (
                std::mem::take(&mut self.zone),
                std::mem::take(&mut self.service),
                std::mem::take(&mut self.id),
            );
            runtime.spawn(async move {
                let _ = cancel(&shared, &zone, &service, &id).await;
            });
        }
    }
}
