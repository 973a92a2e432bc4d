//! The cases of operator overrides: `Registrar::set` and `clear`, seen by
//! `get` and watches of other clients.

use lodestar::{Instance, Override, RegistrationState, Snapshot, Status};

use super::backend::{Backend, Capability, Outcome, require};
use super::follow::{Follower, bounded, get, instance, register};

/// What an instance looks like in a snapshot: down or not, its weight.
fn seen(snapshot: &Snapshot, id: &str) -> Option<(bool, Option<u32>)> {
    snapshot
        .instance(id)
        .map(|i| (i.is_down(), i.weight().ok()))
}

async fn set<R: lodestar::Registrar + ?Sized>(
    name: &str,
    registry: &R,
    id: &str,
    change: Override,
) -> bool {
    let what = format!("{name}: set(echo, {id}, {change:?})");
    bounded(&what, registry.set("echo", id, change))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

async fn clear<R: lodestar::Registrar + ?Sized>(name: &str, registry: &R, id: &str) -> bool {
    let what = format!("{name}: clear(echo, {id})");
    bounded(&what, registry.clear("echo", id))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// `set --status down` marks the instance down (metadata `status=down`) in
/// `get` and in another client's watch, which keeps it; the owner's
/// registration is untouched; `--status up` brings it back.
pub async fn set_takes_an_instance_down_and_up_again<B: Backend>(backend: &mut B) -> Outcome {
    let name = backend.name().to_string();
    let owner = backend.connect().await;
    let operator = backend.connect().await;
    let watcher = backend.connect().await;
    let follower = Follower::start(&name, &*watcher, "echo").await;
    let a = register(&*owner, instance("echo", "a", 1001)).await;
    let _b = register(&*owner, instance("echo", "b", 1003)).await;
    follower.wait_ids("a and b", &["a", "b"]).await;

    let down = Override::new().with_status(Status::Down);
    assert!(set(&name, &*operator, "a", down).await, "{name}: set of a");
    let got = get(&*operator, "echo").await;
    assert_eq!(
        seen(&got, "a").map(|s| s.0),
        Some(true),
        "{name}: get after set down"
    );
    assert_eq!(
        seen(&got, "b").map(|s| s.0),
        Some(false),
        "{name}: b untouched"
    );
    follower
        .wait("a marked down in a watch", |s| {
            seen(s, "a").is_some_and(|a| a.0) && seen(s, "b").is_some_and(|b| !b.0)
        })
        .await;
    assert_eq!(a.state(), RegistrationState::Registered, "{name}: owner");
    assert!(
        !a.instance().is_down(),
        "{name}: the owner's record is its own"
    );

    let up = Override::new().with_status(Status::Up);
    assert!(set(&name, &*operator, "a", up).await, "{name}: set of a up");
    follower
        .wait("a up again in a watch", |s| {
            seen(s, "a").is_some_and(|a| !a.0)
        })
        .await;
    assert_eq!(
        seen(&get(&*operator, "echo").await, "a").map(|s| s.0),
        Some(false)
    );
    Ok(())
}

/// A second `set` merges over the first (status stays when only the weight
/// changes); metadata entries reach the snapshot; an invalid override
/// (weight 0) is refused.
pub async fn set_merges_over_the_override_in_force<B: Backend>(backend: &mut B) -> Outcome {
    let name = backend.name().to_string();
    let owner = backend.connect().await;
    let operator = backend.connect().await;
    let _a = register(&*owner, instance("echo", "a", 1001)).await;
    let down = Override::new().with_status(Status::Down);
    assert!(set(&name, &*operator, "a", down).await);
    let heavier = Override::new()
        .with_weight(7)
        .with_metadata("note", "drain");
    assert!(set(&name, &*operator, "a", heavier).await);
    let got = get(&*operator, "echo").await;
    let a = got.instance("a").expect("a is registered");
    assert!(a.is_down(), "{name}: the status set first stays");
    assert_eq!(a.weight(), Ok(7), "{name}: the weight set second");
    assert_eq!(a.metadata.get("note").map(String::as_str), Some("drain"));
    assert_eq!(a.version, "v1", "{name}: the owner's fields stay");
    assert_eq!(a.zone(), Some("z1"), "{name}: the owner's metadata stays");
    let refused = bounded(
        "set weight 0",
        operator.set("echo", "a", Override::new().with_weight(0)),
    );
    assert!(
        refused.await.is_err_and(|e| e.is_invalid()),
        "{name}: weight 0 must be refused as invalid"
    );
    Ok(())
}

/// `set` of an instance nobody registered answers false and writes nothing:
/// registering it afterwards shows it up.
pub async fn set_of_an_unknown_instance_writes_nothing<B: Backend>(backend: &mut B) -> Outcome {
    let name = backend.name().to_string();
    let registry = backend.connect().await;
    let _b = register(&*registry, instance("echo", "b", 1003)).await;
    let down = Override::new().with_status(Status::Down);
    assert!(
        !set(&name, &*registry, "a", down.clone()).await,
        "{name}: unknown a"
    );
    let other = Override::new().with_status(Status::Down);
    let what = format!("{name}: set on a service nobody registered");
    let nobody = bounded(&what, registry.set("nobody", "a", other)).await;
    assert!(matches!(nobody, Ok(false)), "{what}: {nobody:?}");
    let _a = register(&*registry, instance("echo", "a", 1001)).await;
    let got = get(&*registry, "echo").await;
    assert_eq!(
        seen(&got, "a").map(|s| s.0),
        Some(false),
        "{name}: a registered after"
    );
    assert!(
        !clear(&name, &*registry, "a").await,
        "{name}: nothing to clear"
    );
    Ok(())
}

/// `clear` puts the owner's record back in force (status up, its own
/// weight) and says whether there was an override.
pub async fn clear_puts_the_owners_record_back<B: Backend>(backend: &mut B) -> Outcome {
    let name = backend.name().to_string();
    let owner = backend.connect().await;
    let operator = backend.connect().await;
    let watcher = backend.connect().await;
    let follower = Follower::start(&name, &*watcher, "echo").await;
    let _a = register(&*owner, instance("echo", "a", 1001)).await;
    let change = Override::new().with_status(Status::Down).with_weight(3);
    assert!(set(&name, &*operator, "a", change).await);
    follower
        .wait("a down with weight 3", |s| {
            seen(s, "a") == Some((true, Some(3)))
        })
        .await;
    assert!(clear(&name, &*operator, "a").await, "{name}: clear of a");
    follower
        .wait("a back to its owner's weight 20, up", |s| {
            seen(s, "a") == Some((false, Some(20)))
        })
        .await;
    assert!(
        !clear(&name, &*operator, "a").await,
        "{name}: cleared twice"
    );
    Ok(())
}

/// An override outlives its instance: the owner deregisters and registers
/// again (a restart) and the instance is still down, until `clear`.
pub async fn an_override_outlives_the_owners_restart<B: Backend>(backend: &mut B) -> Outcome {
    require(backend, Capability::LastingOverrides)?;
    let name = backend.name().to_string();
    let owner = backend.connect().await;
    let operator = backend.connect().await;
    let a = register(&*owner, instance("echo", "a", 1001)).await;
    let down = Override::new().with_status(Status::Down);
    assert!(set(&name, &*operator, "a", down).await);
    bounded("deregister", a.deregister())
        .await
        .unwrap_or_else(|e| panic!("{name}: deregister: {e}"));
    assert!(get(&*operator, "echo").await.is_empty(), "{name}: a left");
    let restarted: Instance = instance("echo", "a", 2001);
    let _a = register(&*owner, restarted).await;
    let got = get(&*operator, "echo").await;
    assert_eq!(
        seen(&got, "a").map(|s| s.0),
        Some(true),
        "{name}: still down after a restart"
    );
    assert!(clear(&name, &*operator, "a").await);
    let got = get(&*operator, "echo").await;
    assert_eq!(
        seen(&got, "a").map(|s| s.0),
        Some(false),
        "{name}: up once cleared"
    );
    Ok(())
}
