//! Service registry tests: real `examples/registry` processes on loopback HTTP with temp
//! dirs (see `support/registry.rs`; run `cargo build --examples` first).

#[path = "support/registry.rs"]
mod registry_support;
mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use registry_support::{raft_index, RegCluster, SseEvent, Watch, PATIENCE};
use support::poll;

/// The events of `watch` about one instance, in stream order.
fn about(watch: &Watch, service: &str, instance: &str) -> Vec<SseEvent> {
    let mut events = watch.registry_events();
    events.retain(|e| e.is_about(service, instance));
    events
}

/// Registers a marker through `via` and waits until every watch delivered it: each stream then
/// holds every event up to the marker's index.
fn sync_watches(c: &RegCluster, via: u64, watches: &[&Watch]) -> u64 {
    let r = c.register_eventually(via, "marker", &format!("m-{via}"), "x", 60_000);
    let index = raft_index(&r);
    for w in watches {
        w.wait_index(index);
    }
    index
}

// Intent: a registration acknowledged by a follower is visible at once to a linearizable read
// on another node (20 times, through both followers, read on every other node); lists are
// sorted; a deregistration is 204 then 404; the replicas converge to one state digest.
#[test]
fn a_registration_on_a_follower_is_visible_on_another_node_at_once() {
    let c = RegCluster::start(3, &[]);
    let leader = c.wait_leader();
    let followers = c.others(leader);
    for i in 0..20u64 {
        let writer = followers[(i % 2) as usize];
        let reader = c.others(writer)[(i / 2 % 2) as usize];
        let r = c
            .node(writer)
            .register(
                "api",
                &format!("api-{i}"),
                &format!("10.0.0.{i}:80"),
                30_000,
            )
            .unwrap();
        assert_eq!(r.status, 204, "{}", r.text());
        assert!(raft_index(&r) > 1);
        assert!(r.header("x-raft-term").unwrap().parse::<u64>().unwrap() >= 1);
        let listed = c.node(reader).instances("api").unwrap();
        let mine = listed.iter().find(|x| x["instance"] == format!("api-{i}"));
        let mine = mine.unwrap_or_else(|| panic!("api-{i} from {writer} not on {reader}"));
        assert_eq!(mine["address"], format!("10.0.0.{i}:80"));
        assert_eq!(mine["ttl_ms"], 30_000);
    }
    let names: Vec<String> = c
        .node(leader)
        .instances("api")
        .unwrap()
        .iter()
        .map(|x| x["instance"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!((names.len(), &names), (20, &sorted));
    for id in 1..=3 {
        let r = c.node(id).req("GET", "/services", b"").unwrap();
        assert_eq!(
            serde_json::from_slice::<Vec<String>>(&r.body).unwrap(),
            ["api"]
        );
    }
    let r = c
        .node(followers[0])
        .req("DELETE", "/services/api/api-3", b"")
        .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(c.node(followers[1]).lists("api", "api-3"), Some(false));
    let r = c
        .node(leader)
        .req("DELETE", "/services/api/api-3", b"")
        .unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(c.node(leader).instances("none").unwrap().is_empty());
    poll(PATIENCE, "one state digest on every replica", || {
        let digests: BTreeSet<(u64, String)> = (1..=3)
            .map(|id| {
                let s = c.node(id).status()?;
                Some((
                    s["applied_index"].as_u64()?,
                    s["state_digest"].as_str()?.to_string(),
                ))
            })
            .collect::<Option<_>>()?;
        (digests.len() == 1).then_some(())
    });
    for id in 1..=3 {
        assert_eq!(c.node(id).req("GET", "/health", b"").unwrap().status, 200);
    }
}

// Intent: an instance with a 500 ms TTL renewed every 150 ms (through every node in turn)
// stays registered for 2 s, over four TTLs: every linearizable read lists it and no watch sees
// it expire; once renewals stop it expires.
#[test]
fn renewals_keep_an_instance_alive_past_several_ttls() {
    let c = RegCluster::start(3, &[]);
    let leader = c.wait_leader();
    let watch = c.node(c.others(leader)[0]).watch(None);
    let started = Instant::now();
    let mut round = 0u64;
    while started.elapsed() < Duration::from_secs(2) {
        let via = round % 3 + 1;
        let r = c
            .node(via)
            .register("web", "w-1", "10.0.0.1:80", 500)
            .unwrap();
        assert_eq!(r.status, 204, "{}", r.text());
        let reader = (via % 3) + 1;
        assert_eq!(
            c.node(reader).lists("web", "w-1"),
            Some(true),
            "round {round}"
        );
        round += 1;
        std::thread::sleep(Duration::from_millis(150));
    }
    sync_watches(&c, leader, &[&watch]);
    let seen = about(&watch, "web", "w-1");
    assert!(seen.iter().all(|e| e.name == "registered"), "{seen:?}");
    assert_eq!(
        seen.len(),
        1,
        "renewals that change nothing are not events: {seen:?}"
    );
    let expired = watch.wait_until("w-1 to expire once renewals stop", |events| {
        events
            .iter()
            .find(|e| e.name == "expired" && e.is_about("web", "w-1"))
            .cloned()
    });
    assert!(expired.at >= started + Duration::from_secs(2));
    assert_eq!(c.node(leader).lists("web", "w-1"), Some(false));
}

// Intent: an instance whose renewals stop expires exactly once: every node's watch stream has
// exactly one `expired` event for it, all at the same raft index, after its registration; no
// node lists it afterwards.
#[test]
fn an_instance_that_stops_renewing_expires_exactly_once_everywhere() {
    let c = RegCluster::start(3, &[]);
    let leader = c.wait_leader();
    let watches: Vec<Watch> = (1..=3).map(|id| c.node(id).watch(None)).collect();
    let via = c.others(leader)[0];
    for _ in 0..3 {
        c.register_eventually(via, "cache", "c-1", "10.0.0.9:6379", 400);
    }
    for w in &watches {
        w.wait_until("c-1 to expire", |events| {
            events.iter().any(|e| e.name == "expired").then_some(())
        });
    }
    let refs: Vec<&Watch> = watches.iter().collect();
    sync_watches(&c, via, &refs);
    let mut indexes = BTreeSet::new();
    for w in &watches {
        let seen = about(w, "cache", "c-1");
        let names: Vec<&str> = seen.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["registered", "expired"], "{seen:?}");
        assert!(seen[0].index() < seen[1].index());
        indexes.insert(seen[1].index());
    }
    assert_eq!(indexes.len(), 1, "replicas expired c-1 at {indexes:?}");
    for id in 1..=3 {
        assert_eq!(c.node(id).lists("cache", "c-1"), Some(false));
    }
}

// Intent: a renewal racing its expiry never removes a live instance. Renewals of a 300 ms
// TTL arrive at intervals around the TTL (some just before the leader's deadline, some just
// after), so some expire and some race. Every expiry must come at least one TTL after the
// renewal it removed was sent (an expiry proposed before a renewal that commits first is a
// no-op); the instance's events alternate registered / expired; every registration is one of
// ours; and after the last renewal it is listed until it expires once.
#[test]
fn a_renewal_racing_its_expiry_never_removes_a_live_instance() {
    let c = RegCluster::start(3, &[]);
    let leader = c.wait_leader();
    let follower = c.others(leader)[0];
    let watch = c.node(follower).watch(None);
    let ttl = Duration::from_millis(300);
    let delays = [200u64, 260, 285, 300, 315, 340, 400];
    let mut renewals: Vec<(Instant, u64)> = Vec::new();
    for (k, delay) in delays.iter().cycle().take(14).enumerate() {
        let via = [leader, follower][k % 2];
        let sent = Instant::now();
        let r = c
            .node(via)
            .register("race", "r-1", "10.9.9.9:1", 300)
            .unwrap();
        assert_eq!(r.status, 204, "{}", r.text());
        renewals.push((sent, raft_index(&r)));
        std::thread::sleep(Duration::from_millis(*delay));
    }
    let (last_sent, last) = *renewals.last().unwrap();
    let listed = c.node(follower).lists("race", "r-1").unwrap();
    let events = watch.wait_until("the expiry after the last renewal", |events| {
        let done = events
            .iter()
            .any(|e| e.name == "expired" && e.index() > last);
        done.then(|| events.to_vec())
    });
    let mine: Vec<&SseEvent> = events
        .iter()
        .filter(|e| e.is_about("race", "r-1"))
        .collect();
    let ours: BTreeSet<u64> = renewals.iter().map(|(_, i)| *i).collect();
    for (n, e) in mine.iter().enumerate() {
        let want = if n % 2 == 0 { "registered" } else { "expired" };
        assert_eq!(e.name, want, "event {n} of {mine:?}");
        if e.name == "registered" {
            assert!(
                ours.contains(&e.index()),
                "a registration that is not ours: {e:?}"
            );
            continue;
        }
        let (sent, renewal) = renewals
            .iter()
            .rev()
            .find(|(_, i)| *i < e.index())
            .expect("an expiry after a renewal");
        assert!(
            e.at >= *sent + ttl,
            "expired at index {} only {:?} after renewal {renewal} was sent",
            e.index(),
            e.at - *sent
        );
    }
    let after_last = mine
        .iter()
        .filter(|e| e.name == "expired" && e.index() > last);
    assert_eq!(after_last.count(), 1, "{mine:?}");
    if !listed {
        assert!(
            Instant::now() >= last_sent + ttl,
            "missing right after renewal {last}"
        );
    }
    let expiries = mine.iter().filter(|e| e.name == "expired").count();
    eprintln!("{} renewals, {expiries} expiries", renewals.len());
}

// Intent: a watch that reconnects with Last-Event-ID, on another node, gets exactly the
// registry events it missed (register, re-register with a new address, deregister, expire),
// no duplicates, no gaps and no reset: the same frames as a watch that never disconnected.
#[test]
fn a_watch_resuming_with_last_event_id_gets_exactly_the_missed_events() {
    let c = RegCluster::start(3, &[]);
    let reference = c.node(1).watch(None);
    let first = c.node(2).watch(None);
    let leader = first.wait_until("the leader", |e| e.first().cloned());
    assert_eq!(leader.name, "leader", "{leader:?}");
    let reset = first.wait_until("the reset", |e| e.get(1).cloned());
    assert_eq!(reset.name, "reset", "{reset:?}");
    c.register_eventually(3, "s", "a", "1", 60_000);
    c.register_eventually(2, "s", "b", "2", 60_000);
    assert_eq!(
        c.node(1)
            .req("DELETE", "/services/s/a", b"")
            .unwrap()
            .status,
        204
    );
    let r = c.register_eventually(3, "t", "x", "3", 60_000);
    first.wait_index(raft_index(&r));
    let last = first.last_id().unwrap();
    drop(first);

    c.register_eventually(1, "s", "c", "4", 60_000);
    c.register_eventually(2, "s", "b", "2b", 60_000);
    assert_eq!(
        c.node(3)
            .req("DELETE", "/services/s/b", b"")
            .unwrap()
            .status,
        204
    );
    c.register_eventually(1, "e", "short", "5", 200);
    reference.wait_until("e/short to expire", |events| {
        events.iter().any(|e| e.name == "expired").then_some(())
    });
    let end = raft_index(&c.register_eventually(2, "t", "y", "6", 60_000));
    let want: Vec<(String, u64, String)> = reference
        .wait_index(end)
        .iter()
        .filter(|e| e.name != "leader" && e.name != "reset" && e.index() > last)
        .map(|e| (e.name.clone(), e.index(), e.data.to_string()))
        .collect();
    assert_eq!(want.len(), 6, "{want:?}");
    for node in [3, 2] {
        let resumed = c.node(node).watch(Some(last));
        resumed.wait_index(end);
        let events = resumed.events();
        assert_eq!(events[0].name, "leader", "{events:?}");
        let got: Vec<(String, u64, String)> = events
            .iter()
            .filter(|e| e.name != "leader")
            .map(|e| (e.name.clone(), e.index(), e.data.to_string()))
            .collect();
        assert_eq!(got, want, "resumed on node {node}");
    }
}

// Intent: a watch resuming from an index older than the node's bounded history (here 3
// events) gets a `reset` with the whole state instead of a gap, then live events; one resuming
// within the history gets just the newer events.
#[test]
fn a_watch_resuming_from_before_the_history_gets_a_reset() {
    let c = RegCluster::start(1, &["--watch-history", "3"]);
    let first = raft_index(&c.register_eventually(1, "s", "i-0", "a0", 60_000));
    let mut last = first;
    for i in 1..6 {
        last = raft_index(&c.register_eventually(1, "s", &format!("i-{i}"), "a", 60_000));
    }
    let old = c.node(1).watch(Some(first));
    let reset = old.wait_until("a reset", |e| {
        e.iter().find(|e| e.name != "leader").cloned()
    });
    assert_eq!(reset.name, "reset", "{reset:?}");
    assert_eq!(reset.index(), last);
    assert_eq!(reset.data["index"], last);
    assert_eq!(reset.data["services"]["s"].as_array().unwrap().len(), 6);
    assert_eq!(reset.data["services"]["s"][0]["address"], "a0");
    let next = raft_index(&c.register_eventually(1, "s", "i-6", "a", 60_000));
    let live = old.wait_index(next);
    assert_eq!(live.last().unwrap().name, "registered");
    let recent = c.node(1).watch(Some(last - 1));
    let events = recent.wait_index(next);
    let ids: Vec<(String, u64)> = events
        .iter()
        .filter(|e| e.name != "leader")
        .map(|e| (e.name.clone(), e.index()))
        .collect();
    let want = [
        ("registered".to_string(), last),
        ("registered".to_string(), next),
    ];
    assert_eq!(ids, want);
}

// Intent: kill -9 of the leader while instances (TTL 1.2 s) are renewed through a surviving
// node expires none of them: the new leader gives every instance a full TTL, so no watch on a
// survivor sees an `expired` event and every survivor still lists them all.
#[test]
fn kill_9_of_the_leader_expires_no_renewed_instance() {
    let mut c = RegCluster::start(3, &["--request-timeout-ms", "600"]);
    let leader = c.wait_leader();
    let survivors = c.others(leader);
    let watches: Vec<Watch> = survivors.iter().map(|id| c.node(*id).watch(None)).collect();
    let via = c.node(survivors[0]).client;
    let stop = Arc::new(AtomicBool::new(false));
    let new_leader_since = Arc::new(AtomicU64::new(u64::MAX));
    let origin = Instant::now();
    let renewers: Vec<_> = (0..5)
        .map(|i| {
            let (stop, since) = (stop.clone(), new_leader_since.clone());
            std::thread::spawn(move || renew_until(via, i, &stop, &since, origin))
        })
        .collect();
    poll(PATIENCE, "all five registered", || {
        let listed = c.node(survivors[1]).instances("svc")?;
        (listed.len() == 5).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    c.node_mut(leader).kill();
    let new = poll(PATIENCE, "a new leader", || {
        let l = c.node(survivors[0]).status()?["leader"].as_u64()?;
        (l != 0 && l != leader).then_some(l)
    });
    new_leader_since.store(origin.elapsed().as_millis() as u64, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(2500));
    stop.store(true, Ordering::SeqCst);
    for r in renewers {
        let renewed_after = r.join().unwrap();
        assert!(
            renewed_after > 3,
            "only {renewed_after} renewals after the new leader"
        );
    }
    let refs: Vec<&Watch> = watches.iter().collect();
    sync_watches(&c, new, &refs);
    for w in &watches {
        let expired: Vec<SseEvent> = w
            .registry_events()
            .into_iter()
            .filter(|e| e.name == "expired")
            .collect();
        assert!(expired.is_empty(), "expired after a failover: {expired:?}");
    }
    for id in &survivors {
        assert_eq!(c.node(*id).instances("svc").unwrap().len(), 5);
    }
}

/// Renews `svc/i-{i}` (TTL 1.2 s) through `via` every 200 ms until `stop`; returns how many
/// renewals succeeded after `since` (ms after `origin`: when the new leader was seen).
fn renew_until(
    via: std::net::SocketAddr,
    i: usize,
    stop: &AtomicBool,
    since: &AtomicU64,
    origin: Instant,
) -> u64 {
    let mut after = 0;
    let path = format!("/services/svc/i-{i}?ttl_ms=1200");
    while !stop.load(Ordering::SeqCst) {
        let sent = origin.elapsed().as_millis() as u64;
        let r = support::request(
            via,
            "PUT",
            &path,
            &[],
            b"10.0.0.1:1",
            Duration::from_secs(5),
        );
        if r.is_ok_and(|r| r.status == 204) {
            if sent > since.load(Ordering::SeqCst) {
                after += 1;
            }
            std::thread::sleep(Duration::from_millis(200));
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    after
}

// Intent: a watch on a follower starts with the current leader, and after kill -9 of that
// leader shows a new leader with a higher term.
#[test]
fn a_watch_on_a_follower_sees_the_new_leader_with_a_higher_term() {
    let mut c = RegCluster::start(3, &[]);
    let leader = c.wait_leader();
    let follower = c.others(leader)[0];
    let watch = c.node(follower).watch(None);
    let term = watch.wait_until("the current leader", |events| {
        let e = events
            .iter()
            .find(|e| e.name == "leader" && e.data["leader"] == leader)?;
        e.data["term"].as_u64()
    });
    assert_eq!(watch.events()[0].name, "leader");
    c.node_mut(leader).kill();
    let (new, new_term) = watch.wait_until("a new leader with a higher term", |events| {
        events.iter().find_map(|e| {
            let l = e.data["leader"].as_u64()?;
            let t = e.data["term"].as_u64()?;
            (e.name == "leader" && l != 0 && l != leader && t > term).then_some((l, t))
        })
    });
    assert!(new_term > term);
    let s = poll(PATIENCE, "the follower's status", || {
        c.node(follower).status()
    });
    assert!(s["term"].as_u64().unwrap() >= new_term);
    assert_ne!(new, leader);
}

// Intent: bad TTLs, bad names and paths, bad bodies, a huge body, wrong methods, a bad
// Last-Event-ID and bad membership requests get 4xx with one sentence each, and change
// nothing: the applied index, the state digest and the listings stay as they were.
#[test]
fn garbage_requests_get_4xx_and_change_nothing() {
    let c = RegCluster::start(1, &[]);
    let n = c.node(1);
    let index = raft_index(&c.register_eventually(1, "s", "i", "10.0.0.1:80", 60_000));
    // The engine may answer the proposer a moment before /status shows its index applied.
    let before = poll(PATIENCE, "the registration in /status", || {
        n.status()
            .filter(|s| s["applied_index"].as_u64() >= Some(index))
    });
    let long = "x".repeat(129);
    let huge = vec![b'a'; 5000];
    let cases: Vec<(&str, String, &[u8], u16)> = vec![
        ("PUT", "/services/s/i?ttl_ms=0".into(), b"a", 400),
        ("PUT", "/services/s/i?ttl_ms=abc".into(), b"a", 400),
        ("PUT", "/services/s/i?ttl_ms=-5".into(), b"a", 400),
        ("PUT", "/services/s/i?ttl_ms=".into(), b"a", 400),
        ("PUT", "/services/s/i?ttl_ms=3600001".into(), b"a", 400),
        (
            "PUT",
            "/services/s/i?ttl_ms=99999999999999999999999".into(),
            b"a",
            400,
        ),
        ("PUT", "/services//i".into(), b"a", 400),
        ("PUT", "/services/s/".into(), b"a", 400),
        ("PUT", "/services/a%20b/i".into(), b"a", 400),
        ("PUT", format!("/services/{long}/i"), b"a", 400),
        ("PUT", "/services/s/i/extra".into(), b"a", 404),
        ("PUT", "/services/s/i".into(), b"", 400),
        ("PUT", "/services/s/i".into(), b"   ", 400),
        ("PUT", "/services/s/i".into(), b"a\x01b", 400),
        ("PUT", "/services/s/i".into(), b"\xff\xfe", 400),
        ("PUT", "/services/s/i".into(), &huge, 413),
        ("POST", "/services/s/i".into(), b"a", 405),
        ("GET", "/services/s/i".into(), b"", 405),
        ("PATCH", "/services".into(), b"", 405),
        ("DELETE", "/services/s".into(), b"", 405),
        ("DELETE", "/services//i".into(), b"", 400),
        ("GET", "/services/s?consistency=weird".into(), b"", 400),
        ("GET", "/services/".into(), b"", 400),
        ("GET", "/nope".into(), b"", 404),
        ("GET", "/".into(), b"", 404),
        ("POST", "/watch".into(), b"", 405),
        ("POST", "/2".into(), b"not a url", 400),
        ("POST", "/0".into(), b"http://127.0.0.1:1", 400),
        ("DELETE", "/0".into(), b"", 400),
        ("DELETE", "/9".into(), b"", 409),
        ("GET", "/7".into(), b"", 405),
    ];
    for (method, path, body, want) in &cases {
        let r = n.req(method, path, body).unwrap();
        assert_eq!(r.status, *want, "{method} {path}: {}", r.text());
        let sentence = r.text();
        assert!(
            sentence.ends_with('\n') && sentence.trim().lines().count() == 1,
            "{method} {path}: {sentence:?}"
        );
        if r.status == 405 {
            assert!(r.header("allow").is_some(), "{method} {path}");
        }
    }
    let r = n
        .req_with("GET", "/watch", &[("Last-Event-ID", "abc")], b"")
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    let after = n.status().unwrap();
    assert_eq!(after["applied_index"], before["applied_index"]);
    assert_eq!(after["state_digest"], before["state_digest"]);
    let listed = n.instances("s").unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["address"], "10.0.0.1:80");
    let services = n
        .req("GET", "/services?consistency=serializable", b"")
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Vec<String>>(&services.body).unwrap(),
        ["s"]
    );
}

// Intent: `POST /{id}` adds a node that joins with --join, catches up with the registry and
// becomes a voter; `DELETE /{id}` removes it again, and the removed node exits 0.
#[test]
fn membership_changes_add_and_remove_a_node() {
    let mut c = RegCluster::start(1, &[]);
    c.register_eventually(1, "s", "i", "10.0.0.1:80", 60_000);
    let (id, url) = c.prepare_joiner();
    let r = c
        .node(1)
        .req("POST", &format!("/{id}"), url.as_bytes())
        .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    c.node_mut(id).start();
    poll(PATIENCE, "the new node to catch up", || {
        let r = c
            .node(id)
            .req("GET", "/services/s?consistency=serializable", b"")
            .ok()?;
        (r.status == 200 && r.text().contains("10.0.0.1:80")).then_some(())
    });
    assert_eq!(c.node(id).lists("s", "i"), Some(true));
    // A learner first, promoted by the leader once it started and caught up.
    poll(PATIENCE, "the new node to be promoted to voter", || {
        let s = c.node(1).status()?;
        (s["voters"].as_array()?.len() == 2).then_some(())
    });
    let r = c
        .node(1)
        .req("POST", &format!("/{id}"), url.as_bytes())
        .unwrap();
    assert_eq!(r.status, 409, "{}", r.text());
    let r = c.node(1).req("DELETE", &format!("/{id}"), b"").unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(c.node_mut(id).wait_exit(PATIENCE), Some(0));
}

// Intent: the engine's backups work for the registry as for the KV: `GET /snapshot` from a
// live member, `registry snapshot status` checks it, and `registry snapshot restore` into a
// fresh member gives a registry that lists what was registered before the backup.
#[test]
fn a_backup_of_the_registry_restores_into_a_new_member() {
    let c = RegCluster::start(1, &[]);
    c.register_eventually(1, "s", "i", "10.0.0.1:80", 600_000);
    let r = c.node(1).req("GET", "/snapshot", b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let file = c.tmp.path().join("registry.rxb");
    std::fs::write(&file, &r.body).unwrap();
    let path = file.to_str().unwrap();
    let out = std::process::Command::new(registry_support::binary())
        .args(["snapshot", "status", "-w", "json", path])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["index"].as_u64(), Some(raft_index(&r)));

    let mut restored = RegCluster::new(1, &[]);
    let url = restored.node(1).peer_url.clone();
    let out = std::process::Command::new(registry_support::binary())
        .args(["snapshot", "restore", path, "--id", "1", "--cluster", &url])
        .args(["--data-dir", "registry-1"])
        .current_dir(restored.tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    restored.node_mut(1).start();
    restored.wait_leader();
    poll(
        PATIENCE,
        "the restored registry to list the instance",
        || restored.node(1).lists("s", "i").filter(|listed| *listed),
    );
}
