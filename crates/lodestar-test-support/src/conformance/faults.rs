//! The cases with a fault: an outage, a registry restarted empty, a node
//! failing over; the registry must come back by itself and watches must
//! never go backwards.

use lodestar::RegistrationState;

use super::backend::{Backend, Capability, Outcome, require};
use super::follow::{
    Follower, PATIENCE, bounded, get, instance, register, register_retrying, settle, wait_state,
};
use crate::eventually;

/// Through an outage a watch keeps its last snapshot and `get` fails (it
/// does not answer empty); the registration says `Retrying`. After the
/// restore the registration is `Registered` again with its record back by
/// itself, and the watch follows changes made after the restore.
pub async fn a_watch_and_a_registration_resume_after_an_outage<B: Backend>(
    backend: &mut B,
) -> Outcome {
    require(backend, Capability::Outage)?;
    let name = backend.name().to_string();
    let registrar = backend.connect().await;
    let watcher = backend.connect().await;
    let a = register(&*registrar, instance("echo", "a", 1001)).await;
    let follower = Follower::start(&name, &*watcher, "echo").await;
    follower.wait_ids("a before the outage", &["a"]).await;
    let mark = follower.mark();

    backend.outage().await;
    wait_state(
        "the registration to say Retrying during the outage",
        &a,
        |s| matches!(s, RegistrationState::Retrying { .. }),
    )
    .await;
    let during = bounded("get during the outage", watcher.get("echo")).await;
    assert!(
        during.is_err(),
        "{name}: get during an outage answered {during:?} instead of failing"
    );
    assert_eq!(
        follower.ids(),
        ["a"],
        "{name}: a watch must keep its last snapshot during an outage"
    );
    assert!(
        !follower.saw_since(mark, |s| s.instance("a").is_none()),
        "{name}: a watch dropped a during the outage"
    );

    backend.restore().await;
    wait_state(
        "the registration to be Registered after the restore",
        &a,
        |s| *s == RegistrationState::Registered,
    )
    .await;
    let reader = &registrar;
    eventually(
        "a back in the registry after the restore",
        PATIENCE,
        || async move {
            reader
                .get("echo")
                .await
                .is_ok_and(|s| s.instance("a").is_some())
        },
    )
    .await;
    let _b = register_retrying(&*registrar, instance("echo", "b", 1003)).await;
    follower
        .wait_ids("a change made after the restore", &["a", "b"])
        .await;
    Ok(())
}

/// Watches never go backwards across an outage and restore: one on a
/// service with a live registration, one on a service emptied before.
pub async fn revisions_only_grow_across_an_outage<B: Backend>(backend: &mut B) -> Outcome {
    require(backend, Capability::Outage)?;
    let (live, emptied, _a) = two_histories(backend).await;

    backend.outage().await;
    backend.restore().await;
    settle().await;
    let registrar = backend.connect().await;
    let _b = register_retrying(&*registrar, instance("echo", "b", 1021)).await;
    let _c = register_retrying(&*registrar, instance("emptied", "c", 1023)).await;
    live.wait_ids("a and b after the restore", &["a", "b"])
        .await;
    emptied.wait_ids("c after the restore", &["c"]).await;
    live.assert_revisions_grow("across an outage (a live service)");
    emptied.assert_revisions_grow("across an outage (a service emptied before it)");
    Ok(())
}

/// A registry restarted with none of its data gets every live
/// registration back by itself (their state goes through `Retrying` back
/// to `Registered`), and watches follow changes made afterwards.
pub async fn registrations_come_back_after_the_registry_restarts_empty<B: Backend>(
    backend: &mut B,
) -> Outcome {
    require(backend, Capability::RestartEmpty)?;
    let name = backend.name().to_string();
    let registrar = backend.connect().await;
    let watcher = backend.connect().await;
    let a = register(&*registrar, instance("echo", "a", 1001)).await;
    let follower = Follower::start(&name, &*watcher, "echo").await;
    follower.wait_ids("a", &["a"]).await;
    let mut states = a.subscribe();
    states.borrow_and_update();

    backend.restart_empty().await;
    let reader = &watcher;
    eventually("a back in the emptied registry", PATIENCE, || async move {
        reader
            .get("echo")
            .await
            .is_ok_and(|s| s.instance("a").is_some())
    })
    .await;
    wait_state("the registration to be Registered again", &a, |s| {
        *s == RegistrationState::Registered
    })
    .await;
    assert!(
        states.has_changed().unwrap_or(false),
        "{name}: the registration never left Registered although the registry lost its record"
    );
    let _b = register_retrying(&*registrar, instance("echo", "b", 1003)).await;
    follower
        .wait_ids("a change made after the restart", &["a", "b"])
        .await;
    assert_eq!(
        get(&*watcher, "echo").await.len(),
        2,
        "{name}: get after the restart"
    );
    Ok(())
}

/// Watches never go backwards when the registry restarts empty, though
/// the registry's own counters may start again from zero: one on a service
/// with a live registration, one on a service emptied before.
pub async fn revisions_only_grow_when_the_registry_restarts_empty<B: Backend>(
    backend: &mut B,
) -> Outcome {
    require(backend, Capability::RestartEmpty)?;
    let (live, emptied, _a) = two_histories(backend).await;

    backend.restart_empty().await;
    settle().await;
    let registrar = backend.connect().await;
    let _b = register_retrying(&*registrar, instance("echo", "b", 1021)).await;
    let _c = register_retrying(&*registrar, instance("emptied", "c", 1023)).await;
    live.wait_ids("a back and b after the restart", &["a", "b"])
        .await;
    emptied.wait_ids("c after the restart", &["c"]).await;
    live.assert_revisions_grow("when the registry restarted empty (a live service)");
    emptied
        .assert_revisions_grow("when the registry restarted empty (a service emptied before it)");
    Ok(())
}

/// A watch never goes backwards when its client moves to another node:
/// three fail-overs, with the service live at the first and the last and
/// empty at the second. The watch and the registrations follow throughout.
pub async fn revisions_only_grow_across_fail_overs<B: Backend>(backend: &mut B) -> Outcome {
    require(backend, Capability::FailOver)?;
    let name = backend.name().to_string();
    let registrar = backend.connect().await;
    let watcher = backend.connect().await;
    let follower = Follower::start(&name, &*watcher, "echo").await;
    let a = register(&*registrar, instance("echo", "a", 1001)).await;
    follower.wait_ids("a", &["a"]).await;

    backend.fail_over().await;
    settle().await;
    let b = register_retrying(&*registrar, instance("echo", "b", 1003)).await;
    follower
        .wait_ids("a and b after the first fail-over", &["a", "b"])
        .await;
    for registration in [a, b] {
        bounded("deregister", registration.deregister())
            .await
            .unwrap_or_else(|e| panic!("{name}: deregister: {e}"));
    }
    follower.wait_ids("nothing", &[]).await;

    backend.fail_over().await;
    settle().await;
    let c = register_retrying(&*registrar, instance("echo", "c", 1005)).await;
    follower
        .wait_ids("c after the second fail-over", &["c"])
        .await;

    backend.fail_over().await;
    settle().await;
    let _d = register_retrying(&*registrar, instance("echo", "d", 1007)).await;
    follower
        .wait_ids("c and d after the third fail-over", &["c", "d"])
        .await;
    wait_state("c to be Registered after the fail-overs", &c, |s| {
        *s == RegistrationState::Registered
    })
    .await;
    follower.assert_revisions_grow("across fail-overs");
    Ok(())
}

/// Some history on two services before a fault: `echo` ends with a live
/// registration (returned, to keep it alive), `emptied` with none; a
/// follower on each.
async fn two_histories<B: Backend>(
    backend: &mut B,
) -> (Follower, Follower, lodestar::Registration) {
    let name = backend.name().to_string();
    let registrar = backend.connect().await;
    let watcher = backend.connect().await;
    let live = Follower::start(&name, &*watcher, "echo").await;
    let emptied = Follower::start(&name, &*watcher, "emptied").await;
    let a = register(&*registrar, instance("echo", "a", 1001)).await;
    live.wait_ids("a", &["a"]).await;
    for i in 0..3u16 {
        let z = register(&*registrar, instance("echo", "z", 1003 + 2 * i)).await;
        let y = register(&*registrar, instance("emptied", "y", 1011 + 2 * i)).await;
        live.wait_ids("a, z", &["a", "z"]).await;
        emptied.wait_ids("y", &["y"]).await;
        for registration in [z, y] {
            bounded("deregister", registration.deregister())
                .await
                .unwrap_or_else(|e| panic!("{name}: deregister: {e}"));
        }
        live.wait_ids("a", &["a"]).await;
        emptied.wait_ids("nothing", &[]).await;
    }
    (live, emptied, a)
}
