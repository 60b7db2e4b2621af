//! Nemesis: real `raftexample` clusters (3 and 5 nodes) under `check`'s workload while faults
//! are injected one at a time (kill -9 of the leader, a follower, everyone; SIGSTOP/SIGCONT;
//! partitions isolating the leader, minority/majority splits, one-way partitions and slow
//! links through the fault proxies; leader transfer; removal and re-addition under a new ID),
//! healing in between. After the faults every history must be linearizable, every
//! acknowledged write present, and every replica at the same applied index with the same state
//! digest.
//!
//! - `nemesis_short`: the CI run (about 1.5 minutes on 2 cores in a debug build).
//! - `nemesis_long`: runs only with `NEMESIS_ROUNDS` set; otherwise it prints how to run it:
//!   `NEMESIS_ROUNDS=200 cargo test --release --test nemesis nemesis_long -- --nocapture`
//!   (`NEMESIS_SEED=<n>` replays a schedule).
//! - `checker_catches_unsafe_local_reads`: the checker self-test against the broken
//!   `--unsafe-local-reads` mode, with the same scenario on a correct cluster as control.
//!
//! # Layout
//! - `nemesis/http.rs`: a tiny blocking HTTP client with the outcome classes.
//! - `nemesis/cluster.rs`: processes, proxies, client slots, health and convergence waits.
//! - `nemesis/faults.rs`: the fault kinds and one round of each; a seeded generator.
//! - `nemesis/verify.rs`: write-once keys, final reads, lost acknowledged writes.
//!
//! The tests of this file take a global lock, so they never compete for the two cores.

#[path = "nemesis/cluster.rs"]
mod cluster;
#[path = "nemesis/faults.rs"]
mod faults;
#[path = "nemesis/http.rs"]
mod http;
#[path = "nemesis/stale.rs"]
mod stale;
#[path = "support/mod.rs"]
mod support;
#[path = "nemesis/verify.rs"]
mod verify;

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use check::{check_history_with, CheckArgs, CheckLimits, Verdict};

use cluster::Cluster;
use faults::{inject, Kind, Rng};
use verify::{final_reads, lost_acknowledged, verify_write_once, WriteOnce};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// `NEMESIS_SEED` if set, else one from the clock (printed, so a run can be replayed).
fn seed() -> u64 {
    std::env::var("NEMESIS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// Figures of one or more phases.
#[derive(Debug, Default)]
struct Totals {
    phases: usize,
    rounds: usize,
    faults: BTreeMap<&'static str, usize>,
    ops: usize,
    indeterminate: usize,
    not_applied: usize,
    violations: usize,
    unknown_keys: usize,
    lost_acked: usize,
    wo_total: usize,
    wo_acked: usize,
    wo_lost: usize,
    wo_phantom: usize,
    wo_indeterminate: usize,
    wo_divergent: usize,
    failures: Vec<String>,
}

impl Totals {
    fn print(&self, title: &str, elapsed: Duration) {
        let share = |n: usize, of: usize| {
            if of == 0 {
                0.0
            } else {
                100.0 * n as f64 / of as f64
            }
        };
        println!(
            "==== nemesis summary: {title} ({:.0}s) ====",
            elapsed.as_secs_f64()
        );
        println!("phases: {}  fault rounds: {}", self.phases, self.rounds);
        for (kind, n) in &self.faults {
            println!("  {kind:<24} {n}");
        }
        println!(
            "operations: {}  indeterminate: {} ({:.2}%)  known not applied: {} ({:.2}%)",
            self.ops,
            self.indeterminate,
            share(self.indeterminate, self.ops),
            self.not_applied,
            share(self.not_applied, self.ops)
        );
        println!(
            "violations: {}  unknown keys: {}  acknowledged writes lost: {}",
            self.violations,
            self.unknown_keys,
            self.lost_acked + self.wo_lost
        );
        println!(
            "write-once keys: {} written, {} acknowledged, {} lost, {} indeterminate \
             ({:.2}%), {} not-applied yet visible, {} divergent",
            self.wo_total,
            self.wo_acked,
            self.wo_lost,
            self.wo_indeterminate,
            share(self.wo_indeterminate, self.wo_total),
            self.wo_phantom,
            self.wo_divergent
        );
        for f in &self.failures {
            println!("FAILURE: {f}");
        }
    }

    fn assert_clean(&self) {
        assert!(
            self.failures.is_empty(),
            "nemesis found {} failure(s):\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
        assert_eq!(self.violations, 0);
        assert_eq!(self.unknown_keys, 0);
        assert_eq!(self.lost_acked + self.wo_lost + self.wo_phantom, 0);
    }
}

/// Runs one cluster of `nodes` through `schedule` under the workload and verifies it; adds
/// the figures to `totals` (failures included) and returns whether it was clean.
fn run_phase(
    rt: &tokio::runtime::Runtime,
    nodes: usize,
    schedule: &[Kind],
    seed: u64,
    totals: &mut Totals,
) -> bool {
    run_phase_with(rt, nodes, schedule, seed, totals, false)
}

/// [`run_phase`], with the members speaking mutual TLS to each other when `tls`.
fn run_phase_with(
    rt: &tokio::runtime::Runtime,
    nodes: usize,
    schedule: &[Kind],
    seed: u64,
    totals: &mut Totals,
    tls: bool,
) -> bool {
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    println!(
        "nemesis: phase {} with {nodes} nodes, {} rounds, seed {seed}",
        totals.phases + 1,
        schedule.len()
    );
    let mut c = Cluster::start_with(rt.handle(), nodes, &[], tls);
    let mut args = CheckArgs::new(c.endpoints());
    args.duration = Duration::from_secs(24 * 3600);
    args.clients = 2 * nodes + 2;
    args.keys = 16;
    args.deletes = true;
    args.timeout = Duration::from_secs(4);
    args.seed = Some(rng.next_u64());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let workload = rt.spawn(async move { check::run_workload(&args, stop_rx).await });
    let wo = WriteOnce::start(c.slot_addrs(), format!("{:x}", rng.next_u64() as u32));
    wo.wait_progress(5, &c);

    for (round, kind) in schedule.iter().enumerate() {
        c.wait_healthy();
        let t = Instant::now();
        let what = inject(&mut c, *kind, &mut rng);
        c.heal();
        c.revive_all();
        let leader = c.wait_healthy();
        *totals.faults.entry(kind.name()).or_default() += 1;
        totals.rounds += 1;
        println!(
            "nemesis: round {:>3} {:<24} {what}; healthy again, leader {leader} ({:.1}s)",
            round + 1,
            kind.name(),
            t.elapsed().as_secs_f64()
        );
    }
    // The cluster serves writes after the last fault.
    wo.wait_progress(5, &c);
    let _ = stop_tx.send(true);
    let mut history = rt
        .block_on(workload)
        .expect("workload task")
        .expect("workload ran");
    let writes = wo.stop();

    c.heal();
    c.revive_all();
    c.wait_healthy();
    let (applied, digest) = c.wait_converged();
    let workload_ops = history.ops.clone();
    let counts = history.counts();
    let finals = final_reads(&c, &mut history);
    let lost = lost_acknowledged(&workload_ops, &finals);
    let checking = Instant::now();
    let report = check_history_with(
        &history,
        &CheckLimits {
            timeout: Duration::from_secs(300),
            ..CheckLimits::default()
        },
    );
    let check_secs = checking.elapsed().as_secs_f64();
    let wo_report = verify_write_once(&c, &writes);
    let alarms = c.log_alarms();

    totals.phases += 1;
    totals.ops += counts.ops;
    totals.indeterminate += counts.indeterminate;
    totals.not_applied += counts.unavailable;
    totals.violations += report.violations.len();
    totals.unknown_keys += report.unknown_keys.len();
    totals.lost_acked += lost.len();
    totals.wo_total += wo_report.total;
    totals.wo_acked += wo_report.acked;
    totals.wo_lost += wo_report.lost.len();
    totals.wo_phantom += wo_report.phantom.len();
    totals.wo_indeterminate += wo_report.indeterminate;
    totals.wo_divergent += wo_report.divergent.len();

    println!("nemesis: {}", report.summary_line());
    println!(
        "nemesis: phase {} done in {:.0}s: converged at applied index {applied} digest \
         {digest}; check took {check_secs:.1}s; write-once {} acked, {} indeterminate ({} \
         present), {} not applied",
        totals.phases,
        started.elapsed().as_secs_f64(),
        wo_report.acked,
        wo_report.indeterminate,
        wo_report.indeterminate_present,
        wo_report.not_applied
    );
    let mut failures = Vec::new();
    if report.verdict() != Verdict::Linearizable {
        failures.push(format!("{}\n{}", report.summary_line(), report.details()));
    }
    if !lost.is_empty() {
        failures.push(format!("acknowledged writes lost:\n{}", lost.join("\n")));
    }
    if !wo_report.lost.is_empty() {
        failures.push(format!(
            "acknowledged write-once keys lost:\n{}",
            wo_report.lost.join("\n")
        ));
    }
    if !wo_report.phantom.is_empty() {
        failures.push(format!(
            "writes known not applied are visible:\n{}",
            wo_report.phantom.join("\n")
        ));
    }
    if !alarms.is_empty() {
        failures.push(format!(
            "node logs show panics or critical errors:\n{}",
            alarms.join("\n")
        ));
    }
    if !wo_report.divergent.is_empty() {
        failures.push(format!(
            "replicas disagree on indeterminate writes: {:?}",
            wo_report.divergent
        ));
    }
    if failures.is_empty() {
        return true;
    }
    let kept = c.keep();
    for f in failures {
        totals.failures.push(format!(
            "phase {} ({nodes} nodes, seed {seed}, files in {}): {f}",
            totals.phases,
            kept.display()
        ));
    }
    false
}

/// `rounds` kinds: every kind in turn, each pass in a fresh random order.
fn cycle(rng: &mut Rng, kinds: &[Kind], rounds: usize) -> Vec<Kind> {
    let mut out = Vec::with_capacity(rounds);
    while out.len() < rounds {
        let mut pass = kinds.to_vec();
        rng.shuffle(&mut pass);
        out.extend(pass.into_iter().take(rounds - out.len()));
    }
    out
}

// Intent: the CI nemesis run. A 3-node cluster goes through every fault kind three times and
// a 5-node cluster through every kind once, all under the checker's workload; afterwards the
// histories must be linearizable, no acknowledged write lost, no write known not applied
// visible, and all replicas identical.
#[test]
fn nemesis_short() {
    let _serial = serial();
    let started = Instant::now();
    let seed = seed();
    println!("nemesis_short: seed {seed} (replay with NEMESIS_SEED={seed})");
    let mut rng = Rng::new(seed);
    let rt = runtime();
    let mut totals = Totals::default();
    let three = cycle(&mut rng, &Kind::ALL, 3 * Kind::ALL.len());
    let five = cycle(&mut rng, &Kind::ALL, Kind::ALL.len());
    if run_phase(&rt, 3, &three, rng.next_u64(), &mut totals) {
        run_phase(&rt, 5, &five, rng.next_u64(), &mut totals);
    }
    totals.print("nemesis_short", started.elapsed());
    totals.assert_clean();
}

// Intent: the same faults (every kind once, 3 nodes) while the members speak mutual TLS to
// each other (https:// peer URLs through the proxies, --peer-client-cert-auth, a certificate
// per member ID, replacements included): still no linearizability violation and no lost
// acknowledged write.
#[test]
fn nemesis_short_over_mutual_tls() {
    let _serial = serial();
    let started = Instant::now();
    let seed = seed();
    println!("nemesis_short_over_mutual_tls: seed {seed} (replay with NEMESIS_SEED={seed})");
    let mut rng = Rng::new(seed);
    let rt = runtime();
    let mut totals = Totals::default();
    let schedule = cycle(&mut rng, &Kind::ALL, Kind::ALL.len());
    run_phase_with(&rt, 3, &schedule, rng.next_u64(), &mut totals, true);
    totals.print("nemesis_short_over_mutual_tls", started.elapsed());
    totals.assert_clean();
}

// Intent: the CA and every member's certificate are replaced on disk and every member gets
// SIGHUP; then every peer connection is cut through the proxies, so no pooled keep-alive
// connection can hide a failed reload: the members dial and accept again with the new
// certificates only, and the cluster keeps committing.
#[test]
fn sighup_rotation_over_mutual_tls_survives_cutting_every_connection() {
    let _serial = serial();
    let rt = runtime();
    let mut c = Cluster::start_with(rt.handle(), 3, &[], true);
    let put = |c: &Cluster, key: &str| {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = c.ids().into_iter().any(|id| {
                c.req(id, "PUT", &format!("/{key}"), b"v", Duration::from_secs(2))
                    .reply()
                    .is_some_and(|r| r.status == 204)
            });
            if ok {
                return;
            }
            assert!(Instant::now() < end, "no write committed: {}", c.dump());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    put(&c, "before");
    c.rotate_certificates();
    let end = Instant::now() + Duration::from_secs(10);
    while !c
        .ids()
        .iter()
        .all(|id| c.log_of(*id).contains("SIGHUP: peer certificate reloaded"))
    {
        assert!(
            Instant::now() < end,
            "not every member reloaded: {}",
            c.dump()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    c.cut_every_connection(Duration::from_millis(300));
    put(&c, "after-rotation");
    c.wait_converged();
    for alarm in c.log_alarms() {
        assert!(!alarm.contains("NOT reloaded"), "{alarm}");
    }
}

// Intent: the long nemesis run (>= 200 fault rounds for the report), alternating 3- and
// 5-node clusters of at most 25 rounds each, every fault kind in turn. It runs only when
// NEMESIS_ROUNDS is set, since it takes many minutes; without it the test prints the command.
#[test]
fn nemesis_long() {
    let Some(rounds) = std::env::var("NEMESIS_ROUNDS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
    else {
        println!(
            "nemesis_long: skipped; run it with\n  NEMESIS_ROUNDS=200 cargo test --release \
             --test nemesis nemesis_long -- --nocapture\n(NEMESIS_SEED=<n> replays a schedule)"
        );
        return;
    };
    let _serial = serial();
    let started = Instant::now();
    let seed = seed();
    println!("nemesis_long: {rounds} rounds, seed {seed} (replay with NEMESIS_SEED={seed})");
    let mut rng = Rng::new(seed);
    let rt = runtime();
    let mut totals = Totals::default();
    let mut nodes = 3;
    while totals.rounds < rounds {
        let n = (rounds - totals.rounds).min(25);
        let schedule = cycle(&mut rng, &Kind::ALL, n);
        if !run_phase(&rt, nodes, &schedule, rng.next_u64(), &mut totals) {
            break;
        }
        nodes = if nodes == 3 { 5 } else { 3 };
    }
    totals.print("nemesis_long", started.elapsed());
    totals.assert_clean();
}

// Intent: the checker self-test. With the test-only `--unsafe-local-reads` flag the isolated
// old leader keeps answering linearizable reads from its frozen state while the majority
// acknowledges newer writes: the checker MUST report a violation. The same scenario on a
// correct cluster (the control) MUST be linearizable, so the violation is the flag's doing.
#[test]
fn checker_catches_unsafe_local_reads() {
    let _serial = serial();
    let rt = runtime();
    let (broken, reads) = stale::stale_read_scenario(rt.handle(), &["--unsafe-local-reads"]);
    println!(
        "unsafe-local-reads: {reads} reads answered; {}",
        broken.summary_line()
    );
    assert_eq!(
        broken.verdict(),
        Verdict::Violation,
        "the checker missed the stale reads: {}",
        broken.summary_line()
    );
    let (control, reads) = stale::stale_read_scenario(rt.handle(), &[]);
    println!(
        "control: {reads} reads answered; {}",
        control.summary_line()
    );
    assert_eq!(
        control.verdict(),
        Verdict::Linearizable,
        "the correct cluster failed the same scenario: {}\n{}",
        control.summary_line(),
        control.details()
    );
}
