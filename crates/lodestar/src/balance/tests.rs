//! Behaviour of the whole balancer: filters, policies through the public
//! API, feedback, updates. Time-dependent behaviour (latency, decay,
//! ejection, forced picks) runs on paused tokio time.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use proptest::prelude::*;
use tokio::time::advance;

use super::*;
use crate::{Instance, Snapshot};

fn inst(id: &str) -> Instance {
    Instance::new("echo", id).with_endpoint("grpc://127.0.0.1:1".parse().unwrap())
}

fn snap(instances: Vec<Instance>) -> Arc<Snapshot> {
    Arc::new(Snapshot::new("echo", 1, instances, 0))
}

fn ids(n: usize) -> Vec<Instance> {
    (0..n).map(|i| inst(&format!("i{i:02}"))).collect()
}

fn builder(policy: &str) -> Builder {
    Balancer::builder().policy_name(policy).unwrap().seed(7)
}

fn balancer(policy: &str, instances: Vec<Instance>) -> Balancer {
    builder(policy).build(snap(instances))
}

/// Runs `f` in a runtime whose time stands still, so latencies are 0 and
/// estimates equal.
fn paused<R>(f: impl FnOnce() -> R) -> R {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let _enter = runtime.enter();
    f()
}

fn id(balancer: &Balancer, route: &Route) -> String {
    let pick = balancer.pick(route).unwrap();
    let id = pick.instance().id.clone();
    pick.success();
    id
}

fn counts(balancer: &Balancer, route: &Route, picks: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..picks {
        *counts.entry(id(balancer, route)).or_default() += 1;
    }
    counts
}

// --- policies ---

proptest! {
    #[test]
    fn round_robin_is_exact_over_every_cycle(n in 1usize..20, cycles in 1usize..4, skew in 0usize..20) {
        let b = balancer("round_robin", ids(n));
        for _ in 0..skew {
            id(&b, &Route::new());
        }
        let counts = counts(&b, &Route::new(), n * cycles);
        prop_assert_eq!(counts.len(), n);
        prop_assert!(counts.values().all(|&c| c == cycles));
    }

    #[test]
    fn random_stays_within_statistical_bounds(seed in any::<u64>()) {
        let b = Balancer::builder().policy(Random).seed(seed).build(snap(ids(4)));
        let counts = counts(&b, &Route::new(), 8_000);
        // Binomial(8000, 1/4): sd ~39, so +-200 is beyond 5 sd.
        prop_assert!(counts.values().all(|&c| c.abs_diff(2_000) < 200), "{:?}", counts);
    }

    #[test]
    fn p2c_spreads_evenly_when_loads_are_equal(seed in any::<u64>()) {
        let counts = paused(|| {
            let b = Balancer::builder().seed(seed).build(snap(ids(4)));
            counts(&b, &Route::new(), 8_000)
        });
        prop_assert!(counts.values().all(|&c| c.abs_diff(2_000) < 200), "{:?}", counts);
    }
}

#[test]
fn weighted_interleaves_in_exact_proportions() {
    let b = balancer(
        "weighted",
        vec![
            inst("a").with_metadata("weight", "50"),
            inst("b").with_metadata("weight", "10"),
            inst("c").with_metadata("weight", "10"),
        ],
    );
    let order: Vec<String> = (0..14).map(|_| id(&b, &Route::new())).collect();
    assert_eq!(order.concat(), "aabacaaaabacaa");
}

#[test]
fn invalid_or_zero_weight_is_the_default() {
    let b = balancer(
        "weighted",
        vec![
            inst("a").with_metadata("weight", "0"),
            inst("b").with_metadata("weight", "heavy"),
            inst("c").with_metadata("weight", "100"),
        ],
    );
    let counts = counts(&b, &Route::new(), 300);
    assert!(counts.values().all(|&c| c == 100), "{counts:?}");
}

/// Requests of a closed loop of `callers`, each completing after its
/// endpoint's latency (in microseconds) on paused time: the real feedback
/// path. `latency` also gets the request's number.
async fn simulate(
    b: &Balancer,
    callers: usize,
    latency: impl Fn(&str, usize) -> u64,
    requests: usize,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    let mut pending: Vec<(u64, Pick)> = Vec::new();
    let mut now = 0u64;
    for n in 0..requests {
        if pending.len() == callers {
            pending.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
            let (at, pick) = pending.pop().unwrap();
            advance(Duration::from_micros(at - now)).await;
            now = at;
            pick.success();
        }
        let pick = b.pick(&Route::new()).unwrap();
        *counts.entry(pick.instance().id.clone()).or_default() += 1;
        pending.push((now + latency(&pick.instance().id, n), pick));
    }
    counts
}

fn share_of_busiest(counts: &BTreeMap<String, usize>) -> f64 {
    let total: usize = counts.values().sum();
    counts.values().copied().max().unwrap_or(0) as f64 / total.max(1) as f64
}

#[tokio::test(start_paused = true)]
async fn p2c_sends_almost_nothing_to_a_slow_endpoint() {
    let b = builder("p2c").build(snap(ids(5)));
    let latency = |id: &str, _| if id == "i00" { 50_000 } else { 1_000 };
    let counts = simulate(&b, 20, latency, 20_000).await;
    let slow = counts.get("i00").copied().unwrap_or(0);
    assert!(slow < 100, "{counts:?}");
}

/// Two identical endpoints, calls one at a time: the first call to one of
/// them is slow (a cold connection), every other call takes 1 ms.
async fn one_slow_start(b: &Balancer) -> BTreeMap<String, usize> {
    let first = std::sync::Mutex::new(None::<String>);
    let latency = |id: &str, _| {
        let mut first = first.lock().unwrap();
        if first.is_none() {
            *first = Some(id.to_string());
            40_000
        } else {
            1_000
        }
    };
    // 20 s of calls.
    simulate(b, 1, latency, 20_000).await
}

#[tokio::test(start_paused = true)]
async fn p2c_does_not_starve_an_identical_endpoint() {
    let b = builder("p2c").build(snap(ids(2)));
    let counts = one_slow_start(&b).await;
    assert!(share_of_busiest(&counts) <= 0.6, "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn cold_first_calls_do_not_hold_an_endpoint_out() {
    // The first call on each connection is slow, one slower than the other;
    // the warm-up probes replace both cold samples at once.
    let b = builder("p2c").build(snap(ids(2)));
    let cold = std::sync::Mutex::new(std::collections::HashSet::new());
    let latency = |id: &str, _| {
        if !cold.lock().unwrap().insert(id.to_string()) {
            1_000
        } else if id == "i00" {
            5_000
        } else {
            8_000
        }
    };
    // 300 calls, 0.3 s: well inside the first force-pick interval.
    let counts = simulate(&b, 1, latency, 300).await;
    assert!(share_of_busiest(&counts) <= 0.6, "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn without_forced_picks_one_slow_call_starves_an_endpoint() {
    // The behaviour forced picks fix: the same run with them off.
    let b = builder("p2c").force_pick(Duration::MAX).build(snap(ids(2)));
    let counts = one_slow_start(&b).await;
    assert!(share_of_busiest(&counts) > 0.9, "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn a_losing_endpoint_is_forced_once_per_interval() {
    let b = builder("p2c")
        .force_pick(Duration::from_secs(1))
        .build(snap(ids(2)));
    // i00 is slow, i01 fast; both past their warm-up probes.
    let latency = |id: &str, _| if id == "i00" { 50_000 } else { 1_000 };
    let warm = simulate(&b, 1, latency, 6).await;
    assert_eq!(warm.values().copied().collect::<Vec<_>>(), [3, 3]);
    let mut forced = Vec::new();
    for _ in 0..5 {
        // 1.5 s of 1 ms calls each round: i00 is due once per second.
        let counts = simulate(&b, 1, latency, 1_500).await;
        forced.push(counts.get("i00").copied().unwrap_or(0));
    }
    assert!(forced.iter().all(|&n| (1..=2).contains(&n)), "{forced:?}");
    assert!(forced.iter().sum::<usize>() >= 6, "{forced:?}");
}

#[tokio::test(start_paused = true)]
async fn near_equal_endpoints_share_calls_one_at_a_time() {
    // 10 % apart is noise between twins: neither takes them all.
    let b = builder("p2c").force_pick(Duration::MAX).build(snap(ids(2)));
    let latency = |id: &str, _| if id == "i00" { 1_100 } else { 1_000 };
    let counts = simulate(&b, 1, latency, 1_000).await;
    let busier = counts.values().copied().max().unwrap_or(0);
    assert!((500..=650).contains(&busier), "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn an_idle_estimate_decays_until_the_endpoint_is_tried_again() {
    // No forced picks: only peak-EWMA's decay brings a slow endpoint back.
    let b = builder("p2c")
        .force_pick(Duration::MAX)
        .decay(Duration::from_secs(1))
        .build(snap(ids(2)));
    let slow_once = |id: &str, n| if id == "i00" && n < 2 { 500_000 } else { 1_000 };
    let early = simulate(&b, 1, slow_once, 1_000).await;
    assert!(early.get("i00").copied().unwrap_or(0) <= 2, "{early:?}");
    // ln(500) = 6.2 decay windows later, 500 ms has decayed below 1 ms.
    advance(Duration::from_secs(7)).await;
    // Once back, it converges on the other's 1 ms only at the decay rate,
    // being tried each time its estimate has decayed below it.
    let later = simulate(&b, 1, |_, _| 1_000, 1_000).await;
    assert!(later.get("i00").copied().unwrap_or(0) >= 5, "{later:?}");
}

#[test]
fn p2c_compares_two_distinct_candidates() {
    let b = balancer("p2c", ids(2));
    let mut held = Vec::new();
    for _ in 0..3 {
        b.update(snap(vec![inst("i00")]));
        held.push(b.pick(&Route::new()).unwrap());
    }
    b.update(snap(ids(2)));
    // With two endpoints both are always compared: the idle one wins.
    assert!((0..50).all(|_| id(&b, &Route::new()) == "i01"));
}

#[test]
fn least_request_avoids_busy_endpoints() {
    let b = Balancer::builder()
        .policy(LeastRequest::new(3))
        .seed(1)
        .build(snap(ids(3)));
    let held: Vec<Pick> = (0..3).map(|_| b.pick(&Route::new()).unwrap()).collect();
    // Three in flight over three endpoints: one each, whatever the order.
    let mut busy: Vec<&str> = held.iter().map(|p| p.instance().id.as_str()).collect();
    busy.sort();
    assert_eq!(busy, ["i00", "i01", "i02"]);
    let (_busy, idle): (Vec<Pick>, Vec<Pick>) =
        held.into_iter().partition(|p| p.instance().id != "i01");
    drop(idle);
    assert!((0..20).all(|_| id(&b, &Route::new()) == "i01"));
}

#[test]
fn consistent_hash_keeps_keys_and_moves_about_one_nth() {
    let b = balancer("consistent_hash", ids(10));
    let key = |k: usize| Route::new().with_hash_key(format!("user-{k}"));
    let before: Vec<String> = (0..5_000).map(|k| id(&b, &key(k))).collect();
    assert!((0..5_000).all(|k| id(&b, &key(k)) == before[k]));

    let mut rest = ids(10);
    rest.remove(4);
    b.update(snap(rest));
    let after: Vec<String> = (0..5_000).map(|k| id(&b, &key(k))).collect();
    let moved = (0..5_000).filter(|&k| before[k] != after[k]).count();
    assert!(
        before
            .iter()
            .zip(&after)
            .all(|(b, a)| b != "i04" || a != "i04")
    );
    let share = moved as f64 / 5_000.0;
    assert!((0.07..0.14).contains(&share), "{share}");
}

#[test]
fn consistent_hash_without_a_key_spreads() {
    let b = balancer("consistent_hash", ids(3));
    assert_eq!(counts(&b, &Route::new(), 300).len(), 3);
}

// --- filters ---

fn lanes() -> Vec<Instance> {
    vec![
        inst("v1-base").with_version("v1"),
        inst("v1-blue")
            .with_version("v1")
            .with_metadata("color", "blue"),
        inst("v2-base").with_version("v2"),
        inst("v2-green")
            .with_version("v2")
            .with_metadata("color", "green"),
    ]
}

fn picks(b: &Balancer, route: &Route) -> Vec<String> {
    counts(b, route, 40).into_keys().collect()
}

#[test]
fn version_pin_never_falls_back() {
    let b = balancer("round_robin", lanes());
    assert_eq!(picks(&b, &Route::new().with_version("v2")), ["v2-base"]);
    let err = b.pick(&Route::new().with_version("v3")).unwrap_err();
    assert_eq!(err.to_string(), "no instance of echo with version v3");
    assert!(matches!(err, Error::NoVersion { .. }));
}

#[test]
fn colour_lanes() {
    let b = balancer("round_robin", lanes());
    let route = |c: &str| Route::new().with_color(c);
    assert_eq!(picks(&b, &route("blue")), ["v1-blue"]);
    // No instance of that colour: the base lane.
    assert_eq!(picks(&b, &route("red")), ["v1-base", "v2-base"]);
    // Uncoloured traffic never reaches a coloured instance.
    assert_eq!(picks(&b, &Route::new()), ["v1-base", "v2-base"]);
    // The version pin applies before the lane.
    assert_eq!(picks(&b, &route("blue").with_version("v2")), ["v2-base"]);
    assert_eq!(picks(&b, &route("green").with_version("v2")), ["v2-green"]);
}

#[test]
fn an_all_coloured_service_has_no_base_lane() {
    let b = balancer("random", vec![inst("a").with_metadata("color", "blue")]);
    let err = b.pick(&Route::new()).unwrap_err();
    assert!(matches!(err, Error::NoBaseLane { .. }), "{err}");
    assert_eq!(id(&b, &Route::new().with_color("blue")), "a");
}

#[test]
fn an_empty_service_is_its_own_error() {
    let b = balancer("p2c", vec![]);
    assert_eq!(
        b.pick(&Route::new()).unwrap_err(),
        Error::NoInstances {
            service: "echo".into()
        }
    );
}

#[test]
fn zone_preference_falls_back_to_any_zone() {
    let zoned = |id: &str, zone: &str| inst(id).with_metadata("zone", zone);
    let b = builder("round_robin").zone("z1").build(snap(vec![
        zoned("a", "z1"),
        zoned("b", "z2"),
        zoned("c", "z1"),
    ]));
    assert_eq!(picks(&b, &Route::new()), ["a", "c"]);
    b.set_health("a", Health::NotServing);
    b.set_health("c", Health::NotServing);
    assert_eq!(picks(&b, &Route::new()), ["b"]);
}

#[test]
fn ejected_instances_are_skipped_and_all_ejected_says_so() {
    let b = balancer("round_robin", ids(3));
    assert!(b.set_health("i01", Health::NotServing));
    assert!(!b.set_health("nope", Health::NotServing));
    assert_eq!(picks(&b, &Route::new()), ["i00", "i02"]);
    assert_eq!(b.ejected(), ["i01"]);
    b.set_health("i00", Health::NotServing);
    b.set_health("i02", Health::NotServing);
    assert_eq!(
        b.pick(&Route::new()).unwrap_err(),
        Error::AllEjected {
            service: "echo".into(),
            count: 3
        }
    );
    b.set_health("i02", Health::Serving);
    assert_eq!(picks(&b, &Route::new()), ["i02"]);
}

#[test]
fn a_colour_lane_that_is_all_ejected_falls_back_to_base() {
    let b = balancer("random", lanes());
    b.set_health("v1-blue", Health::NotServing);
    assert_eq!(
        picks(&b, &Route::new().with_color("blue").with_version("v1")),
        ["v1-base"]
    );
}

// --- outlier detection ---

/// Fails up to `times` requests, stopping when nothing is left to pick.
fn fail(b: &Balancer, times: usize) {
    for _ in 0..times {
        match b.pick(&Route::new()) {
            Ok(pick) => pick.failure(),
            Err(_) => return,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_eject_for_a_growing_time() {
    let b = builder("round_robin").build(snap(ids(2)));
    // Fails `n` requests on i00, while i01 succeeds.
    let failing = |b: &Balancer, n| {
        let mut failed = 0;
        while failed < n {
            let pick = b.pick(&Route::new()).unwrap();
            if pick.instance().id == "i00" {
                pick.failure();
                failed += 1;
            } else {
                pick.success();
            }
        }
    };
    failing(&b, 4);
    assert!(b.ejected().is_empty(), "4 failures are not enough");
    failing(&b, 1);
    assert_eq!(b.ejected(), ["i00"]);
    assert_eq!(picks(&b, &Route::new()), ["i01"]);

    advance(Duration::from_secs(30)).await;
    assert_eq!(picks(&b, &Route::new()), ["i00", "i01"], "back after 30 s");
    failing(&b, 5);
    assert_eq!(b.ejected(), ["i00"]);
    advance(Duration::from_secs(30)).await;
    assert_eq!(
        picks(&b, &Route::new()),
        ["i01"],
        "the second ejection lasts 60 s"
    );
    advance(Duration::from_secs(30)).await;
    assert_eq!(picks(&b, &Route::new()), ["i00", "i01"]);
}

#[test]
fn a_success_breaks_the_streak() {
    let b = balancer("round_robin", ids(1));
    for _ in 0..20 {
        fail(&b, 4);
        id(&b, &Route::new());
    }
    assert!(b.ejected().is_empty());
}

#[test]
fn ejection_never_takes_more_than_the_share() {
    let b = balancer("round_robin", ids(5));
    fail(&b, 200);
    assert_eq!(b.ejected().len(), 2, "50 % of 5, rounded down");

    let all = builder("round_robin")
        .outlier_detection(
            OutlierDetection::new()
                .max_ejected_share(1.0)
                .consecutive_failures(2),
        )
        .build(snap(ids(3)));
    fail(&all, 100);
    assert!(matches!(
        all.pick(&Route::new()),
        Err(Error::AllEjected { count: 3, .. })
    ));
}

#[test]
fn a_retained_instance_is_ejected_at_its_first_failure() {
    let mut kept = inst("kept");
    kept.metadata
        .insert(crate::instance::RETAINED.to_string(), "7".to_string());
    let b = balancer("round_robin", vec![inst("a"), kept]);
    let mut picks = 0;
    while b.ejected().is_empty() && picks < 10 {
        let pick = b.pick(&Route::new()).unwrap();
        if pick.instance().id == "kept" {
            pick.failure();
        } else {
            drop(pick);
        }
        picks += 1;
    }
    assert_eq!(b.ejected(), ["kept"], "after {picks} picks");
    // An ordinary instance needs its consecutive failures (5 by default).
    let plain = balancer("round_robin", ids(4));
    plain.pick(&Route::new()).unwrap().failure();
    assert!(plain.ejected().is_empty());
}

#[test]
fn a_cancelled_pick_is_neutral() {
    let b = balancer("round_robin", ids(1));
    for _ in 0..20 {
        drop(b.pick(&Route::new()).unwrap());
    }
    assert!(b.ejected().is_empty());
    assert_eq!(b.pick(&Route::new()).unwrap().candidate().in_flight(), 1);
}

// --- updates ---

#[test]
fn updates_keep_the_load_of_endpoints_that_stay() {
    let b = Balancer::builder()
        .policy(LeastRequest::new(10))
        .build(snap(ids(2)));
    let held: Vec<Pick> = (0..4).map(|_| b.pick(&Route::new()).unwrap()).collect();
    b.set_health("i01", Health::NotServing);
    b.update(snap(ids(3)));
    assert_eq!(b.ejected(), ["i01"], "health survives an update");
    // i00 still has its requests in flight: the new i02 takes the traffic.
    assert_eq!(id(&b, &Route::new()), "i02");
    b.update(snap(vec![inst("i02")]));
    drop(held); // completing on endpoints that left is harmless
    assert_eq!(id(&b, &Route::new()), "i02");
}

#[test]
fn snapshot_swaps_under_concurrent_picks() {
    let b = balancer("p2c", ids(4));
    let odd: Vec<Instance> = (0..4).map(|i| inst(&format!("j{i}"))).collect();
    std::thread::scope(|s| {
        let pickers: Vec<_> = (0..2)
            .map(|_| {
                let b = b.clone();
                s.spawn(move || {
                    for _ in 0..20_000 {
                        let pick = b.pick(&Route::new()).expect("never empty");
                        assert!(pick.instance().id.len() == 3 || pick.instance().id.len() == 2);
                        pick.success();
                    }
                })
            })
            .collect();
        for round in 0..200 {
            b.update(snap(if round % 2 == 0 { odd.clone() } else { ids(4) }));
        }
        for picker in pickers {
            picker.join().unwrap();
        }
    });
    assert_eq!(b.snapshot().len(), 4);
}

#[test]
fn new_instances_can_start_out_of_rotation() {
    let b = builder("round_robin")
        .initial_health(Health::NotServing)
        .build(snap(ids(2)));
    assert!(matches!(
        b.pick(&Route::new()),
        Err(Error::AllEjected { count: 2, .. })
    ));
    assert_eq!(
        b.set_healths([("i01", Health::Serving), ("nope", Health::Serving)]),
        1
    );
    assert_eq!(picks(&b, &Route::new()), ["i01"]);
    b.update(snap(ids(3)));
    assert_eq!(
        picks(&b, &Route::new()),
        ["i01"],
        "i02 is new: not serving yet"
    );
    assert_eq!(b.ejected(), ["i00", "i02"]);
}

/// An instance of the update property test: id, version, colour, zone.
fn arb_instance() -> impl Strategy<Value = Instance> {
    (0u8..24, 0u8..3, 0u8..3, any::<bool>()).prop_map(|(id, version, color, zone)| {
        let mut instance = inst(&format!("i{id:02}"))
            .with_version(["", "v1", "v2"][version as usize])
            .with_metadata("zone", if zone { "z1" } else { "z2" });
        if color > 0 {
            instance = instance.with_metadata("color", ["", "blue", "red"][color as usize]);
        }
        instance
    })
}

/// What every route of interest resolves to: the ids a round robin cycle
/// reaches, or the error.
fn view(b: &Balancer) -> Vec<Result<Vec<String>, Error>> {
    let mut out = Vec::new();
    for version in [None, Some("v1"), Some("v2"), Some("v3")] {
        for color in [None, Some("blue"), Some("red"), Some("green")] {
            let mut route = Route::new();
            route.version = version.map(str::to_string);
            route.color = color.map(str::to_string);
            out.push(match b.pick(&route) {
                Err(e) => Err(e),
                Ok(pick) => {
                    drop(pick);
                    Ok(picks(b, &route))
                }
            });
        }
    }
    out
}

proptest! {
    /// Snapshots applied one after the other as diffs, with health verdicts
    /// in between, leave the balancer exactly where a balancer built from
    /// the last snapshot with the same verdicts starts.
    #[test]
    fn updates_applied_as_diffs_match_a_fresh_build(
        steps in prop::collection::vec(
            (
                prop::collection::vec(arb_instance(), 0..16),
                prop::collection::vec((0u8..24, any::<bool>()), 0..6),
            ),
            1..8,
        ),
    ) {
        let zoned = || builder("round_robin").zone("z1");
        let b = zoned().build(snap(vec![]));
        let mut down = std::collections::BTreeSet::new();
        for (instances, verdicts) in &steps {
            b.update(snap(instances.clone()));
            for (id, serving) in verdicts {
                let id = format!("i{id:02}");
                let health = if *serving { Health::Serving } else { Health::NotServing };
                if b.set_health(&id, health) {
                    if *serving { down.remove(&id); } else { down.insert(id); }
                }
            }
            down.retain(|id| b.snapshot().instance(id).is_some());
        }
        let fresh = zoned().build(b.snapshot());
        for id in &down {
            fresh.set_health(id, Health::NotServing);
        }
        prop_assert_eq!(b.ejected(), fresh.ejected());
        prop_assert_eq!(view(&b), view(&fresh));
    }
}

// --- operator status ---

#[test]
fn a_down_instance_gets_no_new_picks_and_comes_back_when_up() {
    let b = balancer("round_robin", ids(3));
    let in_flight = b.pick(&Route::new()).unwrap();
    let busy = in_flight.instance().id.clone();
    let mut instances = ids(3);
    for i in &mut instances {
        if i.id == busy {
            i.metadata.insert("status".into(), "down".into());
        }
    }
    b.update(snap(instances));
    let rest: Vec<String> = picks(&b, &Route::new())
        .into_iter()
        .filter(|id| *id == busy)
        .collect();
    assert!(rest.is_empty(), "{busy} is down but was picked");
    assert_eq!(b.ejected(), std::slice::from_ref(&busy));
    // The call in flight completes against the instance it got.
    assert_eq!(in_flight.instance().id, busy);
    in_flight.success();
    b.update(snap(ids(3)));
    assert_eq!(picks(&b, &Route::new()).len(), 3, "back in rotation");
    assert!(b.ejected().is_empty());
}

#[test]
fn a_down_instance_stays_out_whatever_its_health_says() {
    paused(|| {
        let b = balancer("p2c", ids(2));
        let mut instances = ids(2);
        instances[0].metadata.insert("status".into(), "Down".into());
        b.update(snap(instances));
        b.set_health("i00", Health::Serving);
        assert_eq!(
            counts(&b, &Route::new(), 50).keys().collect::<Vec<_>>(),
            ["i01"]
        );
        b.set_health("i01", Health::NotServing);
        assert!(matches!(
            b.pick(&Route::new()),
            Err(Error::AllEjected { .. })
        ));
    });
}
