//! The cases every backend runs without a fault: registering, following,
//! removing, states, revisions, skipped records and subscribers.

use lodestar::{Error, Instance, RegistrationState, Subscriber};

use super::backend::{Backend, Capability, Outcome, require};
use super::follow::{
    Follower, PATIENCE, bounded, get, ids, instance, is_over, register, subscribers, wait_state,
};
use crate::eventually;

/// A registered record is in `get` (of the client that wrote it and of
/// another one), in a watch and in `services`, with every field intact:
/// version, endpoints (as a set) and metadata.
pub async fn register_is_visible_with_its_fields_intact<B: Backend>(backend: &mut B) -> Outcome {
    let name = backend.name().to_string();
    let registrar = backend.connect().await;
    let watcher = backend.connect().await;
    let follower = Follower::start(&name, &*watcher, "echo").await;
    assert!(
        follower.latest().is_empty(),
        "{name}: a watch on a service nobody registered must start empty, not {:?}",
        follower.ids()
    );

    let record = instance("echo", "echo-1", 50051);
    let registration = register(&*registrar, record.clone()).await;
    assert_eq!(
        registration.instance(),
        &record,
        "{name}: Registration::instance"
    );
    // Read-your-writes: `register` resolved once the record was written.
    let got = get(&*registrar, "echo").await;
    assert_eq!(ids(&got), ["echo-1"], "{name}: get right after register");
    assert_intact(&name, "get", got.instance("echo-1"), &record);

    follower
        .wait_ids("echo-1 after its registration", &["echo-1"])
        .await;
    assert_intact(
        &name,
        "a watch",
        follower.latest().instance("echo-1"),
        &record,
    );
    let other = get(&*watcher, "echo").await;
    assert_intact(
        &name,
        "another client's get",
        other.instance("echo-1"),
        &record,
    );

    let services = bounded("services()", watcher.services())
        .await
        .unwrap_or_else(|e| panic!("{name}: services(): {e}"));
    assert_eq!(
        services.into_iter().collect::<Vec<_>>(),
        [("echo".to_string(), 1)],
        "{name}: services() after one registration"
    );
    drop(registration);
    Ok(())
}

/// `svc` and `svc2` never see each other's instances, whatever their
/// names have in common (prefix safety), in watches, `get` or `services`.
pub async fn services_do_not_see_each_other<B: Backend>(backend: &mut B) -> Outcome {
    let name = backend.name().to_string();
    let registry = backend.connect().await;
    let svc = Follower::start(&name, &*registry, "svc").await;
    let svc2 = Follower::start(&name, &*registry, "svc2").await;
    let _x = register(&*registry, instance("svc2", "x", 1001)).await;
    let _y = register(&*registry, instance("svc", "y", 1003)).await;

    svc.wait_ids("svc's own instance", &["y"]).await;
    svc2.wait_ids("svc2's own instance", &["x"]).await;
    assert!(
        !svc.saw(|s| s.instance("x").is_some()),
        "{name}: a watch on svc yielded svc2's instance x"
    );
    assert!(
        !svc2.saw(|s| s.instance("y").is_some()),
        "{name}: a watch on svc2 yielded svc's instance y"
    );
    assert_eq!(
        ids(&get(&*registry, "svc").await),
        ["y"],
        "{name}: get(svc)"
    );
    assert_eq!(
        ids(&get(&*registry, "svc2").await),
        ["x"],
        "{name}: get(svc2)"
    );
    assert!(
        get(&*registry, "sv").await.is_empty(),
        "{name}: get(sv) must not match svc or svc2"
    );
    let services = bounded("services()", registry.services())
        .await
        .unwrap_or_else(|e| panic!("{name}: services(): {e}"));
    assert_eq!(
        services.into_iter().collect::<Vec<_>>(),
        [("svc".to_string(), 1), ("svc2".to_string(), 1)],
        "{name}: services()"
    );
    Ok(())
}

/// `Registration::deregister` removes the record before it resolves: a
/// `get` right after no longer has it, and watches follow.
pub async fn deregister_removes_the_record_at_once<B: Backend>(backend: &mut B) -> Outcome {
    let name = backend.name().to_string();
    let registrar = backend.connect().await;
    let watcher = backend.connect().await;
    let follower = Follower::start(&name, &*watcher, "echo").await;
    let a = register(&*registrar, instance("echo", "a", 1001)).await;
    let _b = register(&*registrar, instance("echo", "b", 1003)).await;
    follower.wait_ids("a and b", &["a", "b"]).await;

    bounded("deregister()", a.deregister())
        .await
        .unwrap_or_else(|e| panic!("{name}: deregister(): {e}"));
    assert_eq!(
        ids(&get(&*registrar, "echo").await),
        ["b"],
        "{name}: get right after deregister() resolved"
    );
    follower.wait_ids("a removed", &["b"]).await;
    Ok(())
}

/// Dropping a `Registration` without deregistering removes the record too,
/// in the background.
pub async fn dropping_the_handle_removes_the_record<B: Backend>(backend: &mut B) -> Outcome {
    let name = backend.name().to_string();
    let registrar = backend.connect().await;
    let watcher = backend.connect().await;
    let follower = Follower::start(&name, &*watcher, "echo").await;
    let a = register(&*registrar, instance("echo", "a", 1001)).await;
    let _b = register(&*registrar, instance("echo", "b", 1003)).await;
    follower.wait_ids("a and b", &["a", "b"]).await;

    drop(a);
    follower
        .wait_ids("a removed after its handle was dropped", &["b"])
        .await;
    let watcher = &watcher;
    eventually("get to lose the dropped record", PATIENCE, || async move {
        watcher.get("echo").await.is_ok_and(|s| ids(&s) == ["b"])
    })
    .await;
    Ok(())
}

/// A registration is `Registered` once `register` resolves; after
/// `deregister` resolves its state says `Deregistered` (or its channel is
/// closed), and so it does, soon, after the handle is dropped.
pub async fn registration_state_follows_the_handle<B: Backend>(backend: &mut B) -> Outcome {
    let name = backend.name().to_string();
    let registrar = backend.connect().await;
    let a = register(&*registrar, instance("echo", "a", 1001)).await;
    let b = register(&*registrar, instance("echo", "b", 1003)).await;
    assert_eq!(
        a.state(),
        RegistrationState::Registered,
        "{name}: a's state"
    );
    assert_eq!(
        b.state(),
        RegistrationState::Registered,
        "{name}: b's state"
    );
    let (a_state, b_state) = (a.subscribe(), b.subscribe());

    bounded("deregister()", a.deregister())
        .await
        .unwrap_or_else(|e| panic!("{name}: deregister(): {e}"));
    assert!(
        is_over(&a_state),
        "{name}: after deregister() resolved the state still says {:?}",
        *a_state.borrow()
    );
    assert_eq!(
        b.state(),
        RegistrationState::Registered,
        "{name}: b's state"
    );

    drop(b);
    let b_state = &b_state;
    eventually(
        "the dropped registration's state to end",
        PATIENCE,
        || async move { is_over(b_state) },
    )
    .await;
    Ok(())
}

/// `Registrar::deregister(service, id)` from another client removes a
/// record it does not own and returns `true`; `false` when there is no
/// such record.
pub async fn admin_deregister_removes_any_record_and_says_whether_there_was_one<B: Backend>(
    backend: &mut B,
) -> Outcome {
    let name = backend.name().to_string();
    let owner = backend.connect().await;
    let admin = backend.connect().await;
    let follower = Follower::start(&name, &*admin, "echo").await;
    let _a = register(&*owner, instance("echo", "a", 1001)).await;
    follower.wait_ids("a", &["a"]).await;
    let mark = follower.mark();

    let removed = bounded("deregister(echo, a)", admin.deregister("echo", "a"))
        .await
        .unwrap_or_else(|e| panic!("{name}: deregister(echo, a): {e}"));
    assert!(
        removed,
        "{name}: deregister(echo, a) said there was no such record"
    );
    let after = get(&*admin, "echo").await;
    assert!(
        after.instance("a").is_none(),
        "{name}: get right after deregister(echo, a) still has a"
    );
    follower
        .wait("a gone", |_| {
            follower.saw_since(mark, |s| s.instance("a").is_none())
        })
        .await;

    for (service, id) in [("echo", "nobody"), ("nothing", "a"), ("ech", "a")] {
        let removed = bounded(
            "deregister of an unknown record",
            admin.deregister(service, id),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: deregister({service}, {id}): {e}"));
        assert!(
            !removed,
            "{name}: deregister({service}, {id}) said it removed a record that never was"
        );
    }
    Ok(())
}

/// After someone else's `deregister(service, id)`, the live owner puts its
/// record back by itself and stays `Registered` (as `Registrar::deregister`
/// documents: "an owner that is still alive notices and registers again").
pub async fn a_live_owner_registers_again_after_an_admin_deregister<B: Backend>(
    backend: &mut B,
) -> Outcome {
    let name = backend.name().to_string();
    let owner = backend.connect().await;
    let admin = backend.connect().await;
    let follower = Follower::start(&name, &*admin, "echo").await;
    let a = register(&*owner, instance("echo", "a", 1001)).await;
    follower.wait_ids("a", &["a"]).await;

    let removed = bounded("deregister(echo, a)", admin.deregister("echo", "a"))
        .await
        .unwrap_or_else(|e| panic!("{name}: deregister(echo, a): {e}"));
    assert!(
        removed,
        "{name}: deregister(echo, a) said there was no such record"
    );
    let admin = &admin;
    let what = format!(
        "{name}: the live owner of echo/a to register it again after an admin deregister \
         (Registrar::deregister: \"an owner that is still alive notices and registers again\")"
    );
    eventually(&what, PATIENCE, || async move {
        admin
            .get("echo")
            .await
            .is_ok_and(|s| s.instance("a").is_some())
    })
    .await;
    follower.wait_ids("a back", &["a"]).await;
    wait_state("the owner's state to be Registered", &a, |s| {
        *s == RegistrationState::Registered
    })
    .await;
    Ok(())
}

/// `deregister(service, id)` loses none of the owner's other records: they
/// stay, or, where the backend takes the owner's whole lease to make a live
/// owner notice (etcd revokes it), they are put back by the owner at once.
pub async fn admin_deregister_loses_none_of_the_owners_other_records<B: Backend>(
    backend: &mut B,
) -> Outcome {
    let name = backend.name().to_string();
    let owner = backend.connect().await;
    let admin = backend.connect().await;
    let follower = Follower::start(&name, &*admin, "echo").await;
    let _a = register(&*owner, instance("echo", "a", 1001)).await;
    let _b = register(&*owner, instance("echo", "b", 1003)).await;
    let _other = register(&*owner, instance("other", "c", 1005)).await;
    follower.wait_ids("a and b", &["a", "b"]).await;

    let removed = bounded("deregister(echo, a)", admin.deregister("echo", "a"))
        .await
        .unwrap_or_else(|e| panic!("{name}: deregister(echo, a): {e}"));
    assert!(
        removed,
        "{name}: deregister(echo, a) said there was no such record"
    );
    eventually(
        "the owner's other records (echo/b, other/c)",
        PATIENCE,
        || async {
            let echo = get(&*admin, "echo").await;
            let other = get(&*admin, "other").await;
            echo.instance("b").is_some() && other.instance("c").is_some()
        },
    )
    .await;
    Ok(())
}

/// Invalid instances (no endpoint, a weight that is not a positive
/// integer, bad names) are refused with `Error::InvalidInstance` and leave
/// nothing behind.
pub async fn invalid_instances_are_refused<B: Backend>(backend: &mut B) -> Outcome {
    let name = backend.name().to_string();
    let registry = backend.connect().await;
    let invalid = [
        ("no endpoint", Instance::new("echo", "a")),
        (
            "weight 0",
            instance("echo", "a", 1001).with_metadata("weight", "0"),
        ),
        (
            "weight -1",
            instance("echo", "a", 1001).with_metadata("weight", "-1"),
        ),
        (
            "weight heavy",
            instance("echo", "a", 1001).with_metadata("weight", "heavy"),
        ),
        ("an id with a '/'", instance("echo", "a/b", 1001)),
        ("an empty id", instance("echo", "", 1001)),
        ("an empty service", instance("", "a", 1001)),
        ("a service with a space", instance("ec ho", "a", 1001)),
    ];
    for (what, record) in invalid {
        match bounded(what, registry.register(record)).await {
            Err(Error::InvalidInstance(_)) => {}
            Err(other) => panic!("{name}: {what}: refused, but not as InvalidInstance: {other}"),
            Ok(_) => panic!("{name}: an instance with {what} was registered"),
        }
    }
    assert!(
        get(&*registry, "echo").await.is_empty(),
        "{name}: get(echo)"
    );
    let services = bounded("services()", registry.services())
        .await
        .unwrap_or_else(|e| panic!("{name}: services(): {e}"));
    assert!(services.is_empty(), "{name}: services() = {services:?}");
    Ok(())
}

/// Along a sequence of registrations and removals, every snapshot a watch
/// yields has a revision strictly greater than the one before.
pub async fn revisions_only_grow_across_changes<B: Backend>(backend: &mut B) -> Outcome {
    let name = backend.name().to_string();
    let registrar = backend.connect().await;
    let watcher = backend.connect().await;
    let follower = Follower::start(&name, &*watcher, "echo").await;

    let a = register(&*registrar, instance("echo", "a", 1001)).await;
    follower.wait_ids("a", &["a"]).await;
    let b = register(&*registrar, instance("echo", "b", 1003)).await;
    follower.wait_ids("a, b", &["a", "b"]).await;
    let c = register(&*registrar, instance("echo", "c", 1005)).await;
    follower.wait_ids("a, b, c", &["a", "b", "c"]).await;
    bounded("deregister(b)", b.deregister())
        .await
        .unwrap_or_else(|e| panic!("{name}: deregister(b): {e}"));
    follower.wait_ids("a, c", &["a", "c"]).await;
    // Another service's changes in between.
    let _x = register(&*registrar, instance("echo2", "x", 1007)).await;
    drop(a);
    follower.wait_ids("c", &["c"]).await;
    let a = register(&*registrar, instance("echo", "a", 1009)).await;
    follower.wait_ids("a again, c", &["a", "c"]).await;
    bounded("deregister(c)", c.deregister())
        .await
        .unwrap_or_else(|e| panic!("{name}: deregister(c): {e}"));
    bounded("deregister(a)", a.deregister())
        .await
        .unwrap_or_else(|e| panic!("{name}: deregister(a): {e}"));
    follower.wait_ids("nothing", &[]).await;
    let _d = register(&*registrar, instance("echo", "d", 1011)).await;
    follower.wait_ids("d", &["d"]).await;

    follower.assert_revisions_grow("across registrations and removals");
    Ok(())
}

/// A watch is latest-wins: a reader that does not read during a burst of
/// 50 registrations gets the final truth, all 50, from its next `next()`;
/// then all 50 gone.
pub async fn a_watch_is_latest_wins_after_a_burst<B: Backend>(backend: &mut B) -> Outcome {
    let name = backend.name().to_string();
    let registrar = backend.connect().await;
    let watcher = backend.connect().await;
    let mut watch = bounded("watch(echo)", watcher.watch("echo"))
        .await
        .unwrap_or_else(|e| panic!("{name}: watch(echo): {e}"));
    let first = bounded("the first snapshot", watch.next())
        .await
        .unwrap_or_else(|| panic!("{name}: the watch ended"));
    assert!(first.is_empty(), "{name}: {:?}", ids(&first));

    let mut registrations = Vec::new();
    let mut expected = Vec::new();
    for i in 0..50u16 {
        let id = format!("burst-{i:02}");
        registrations.push(register(&*registrar, instance("echo", &id, 20000 + 2 * i)).await);
        expected.push(id);
    }
    let latest = &watch;
    eventually("all 50 in the watch", PATIENCE, || async move {
        latest.latest().len() == 50
    })
    .await;
    let next = bounded("the snapshot after the burst", watch.next())
        .await
        .unwrap_or_else(|| panic!("{name}: the watch ended"));
    assert_eq!(
        ids(&next),
        expected,
        "{name}: the next snapshot after a burst must be the newest (latest-wins)"
    );
    assert_eq!(ids(&get(&*watcher, "echo").await), expected, "{name}: get");

    drop(registrations);
    let latest = &watch;
    eventually("all 50 gone from the watch", PATIENCE, || async move {
        latest.latest().is_empty()
    })
    .await;
    let next = bounded("the snapshot after the removals", watch.next())
        .await
        .unwrap_or_else(|| panic!("{name}: the watch ended"));
    assert!(next.is_empty(), "{name}: {} left", next.len());
    Ok(())
}

/// A record that does not parse is left out and counted in
/// `Snapshot::skipped`, by `get` and by watches, which keep every good
/// record and carry on.
pub async fn garbage_records_are_skipped_and_counted<B: Backend>(backend: &mut B) -> Outcome {
    require(backend, Capability::Garbage)?;
    let name = backend.name().to_string();
    let registry = backend.connect().await;
    let _good = register(&*registry, instance("echo", "good", 1001)).await;
    backend.write_garbage("echo", "junk").await;

    let follower = Follower::start(&name, &*registry, "echo").await;
    follower
        .wait("the good record, one skipped", |s| {
            ids(s) == ["good"] && s.skipped() == 1
        })
        .await;
    let got = get(&*registry, "echo").await;
    assert_eq!(
        (ids(&got), got.skipped()),
        (vec!["good".to_string()], 1),
        "{name}: get with one garbage record"
    );

    // More garbage while watching, and a good record after it.
    backend.write_garbage("echo", "junk2").await;
    let _late = register(&*registry, instance("echo", "late", 1003)).await;
    follower
        .wait("both good records, two skipped", |s| {
            ids(s) == ["good", "late"] && s.skipped() == 2
        })
        .await;
    // Another service's garbage is not counted here.
    backend.write_garbage("echo2", "junk").await;
    let _third = register(&*registry, instance("echo", "third", 1005)).await;
    follower
        .wait("three good records, still two skipped", |s| {
            ids(s) == ["good", "late", "third"] && s.skipped() == 2
        })
        .await;
    let other = get(&*registry, "echo2").await;
    assert_eq!(
        (other.len(), other.skipped()),
        (0, 1),
        "{name}: get(echo2) with only a garbage record"
    );
    Ok(())
}

/// A subscription is listed by `subscribers(service)` (client id, host,
/// pid, since) from any client, only under its service, and is gone once
/// dropped or cancelled; subscribers are not instances or services.
pub async fn subscribers_are_listed_while_subscribed<B: Backend>(backend: &mut B) -> Outcome {
    require(backend, Capability::Subscribers)?;
    let name = backend.name().to_string();
    let registry = backend.connect().await;
    let observer = backend.connect().await;
    let me = Subscriber::this_process("echo");
    let them = Subscriber::this_process("echo2");
    let mine = bounded("subscribe", registry.subscribe(me.clone()))
        .await
        .unwrap_or_else(|e| panic!("{name}: subscribe: {e}"));
    let theirs = bounded("subscribe", registry.subscribe(them.clone()))
        .await
        .unwrap_or_else(|e| panic!("{name}: subscribe: {e}"));

    let observer = &*observer;
    eventually("echo's subscriber to be listed", PATIENCE, || async {
        !subscribers(observer, "echo").await.is_empty()
    })
    .await;
    assert_eq!(
        subscribers(observer, "echo").await,
        [me],
        "{name}: subscribers(echo)"
    );
    assert_eq!(
        subscribers(observer, "echo2").await,
        [them],
        "{name}: subscribers(echo2)"
    );
    assert!(
        subscribers(observer, "ech").await.is_empty(),
        "{name}: subscribers(ech)"
    );
    assert!(
        get(observer, "echo").await.is_empty(),
        "{name}: a subscriber is not an instance"
    );
    let services = bounded("services()", observer.services())
        .await
        .unwrap_or_else(|e| panic!("{name}: services(): {e}"));
    assert!(
        services.is_empty(),
        "{name}: subscribers are not services: services() = {services:?}"
    );

    drop(mine);
    eventually("the dropped subscription to go", PATIENCE, || async {
        subscribers(observer, "echo").await.is_empty()
    })
    .await;
    bounded("cancel", theirs.cancel())
        .await
        .unwrap_or_else(|e| panic!("{name}: cancel: {e}"));
    eventually("the cancelled subscription to go", PATIENCE, || async {
        subscribers(observer, "echo2").await.is_empty()
    })
    .await;
    Ok(())
}

/// Panics unless `seen` is `expected`, endpoints compared as a set.
fn assert_intact(backend: &str, place: &str, seen: Option<&Instance>, expected: &Instance) {
    let Some(seen) = seen else {
        panic!("{backend}: {place} lacks {}", expected.id);
    };
    // A backend may add when it registered the instance.
    let sorted = |i: &Instance| {
        let mut i = i.clone();
        i.endpoints.sort();
        i.metadata.remove(lodestar::instance::REGISTERED);
        i
    };
    assert_eq!(
        sorted(seen),
        sorted(expected),
        "{backend}: the record as {place} has it"
    );
}
