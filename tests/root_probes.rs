//! The BPF programs in the running kernel, checked against ground truth the
//! kernel or the test itself knows. Needs root.

mod common;

use std::time::{Duration, Instant};

use ksense::probes::{kernel, AttachMode, Options, Probes, SchedWaits, SOFTIRQ_VECTORS};
use ksense::signals::histogram::Histogram;
use ksense::signals::{buckets, Snapshot};

/// The growth of one signal between two snapshots.
fn delta(after: &Snapshot, before: &Snapshot, signal: &str) -> Histogram {
    let get = |s: &Snapshot| s.signal(signal).unwrap_or_else(|| panic!("no signal {signal}")).clone();
    get(after).delta(&get(before))
}

fn softirq(vector: &str) -> String {
    format!("softirq_{}", vector.to_ascii_lowercase())
}

/// `mode`: auto, tp_btf or raw_tp, as `--bpf.attach` takes it (tp_btf times
/// waits from sched_info where the kernel keeps it), or tp_btf_monotonic:
/// tp_btf timing waits with the monotonic clock, as where the scheduler's
/// clock is not stable across CPUs, or tp_btf_wakeup: tp_btf timing waits
/// from sched_wakeup, as where the kernel keeps no sched_info.
fn attach(mode: &str) -> Probes {
    let mut s = kernel::probe();
    if mode == "tp_btf_monotonic" {
        s.sched_clock = Err("forced by the test".into());
    }
    if mode == "tp_btf_wakeup" {
        s.sched_info = Err("forced by the test".into());
    }
    let requested = match mode {
        "tp_btf" | "tp_btf_monotonic" | "tp_btf_wakeup" => Some(AttachMode::TpBtf),
        "raw_tp" => Some(AttachMode::RawTp),
        _ => None,
    };
    Probes::attach(AttachMode::choose(requested, &s).unwrap(), &s, &[]).unwrap()
}

fn slot_of_seconds(s: f64) -> usize {
    buckets::slot_of(buckets::kernel_bounds(), (s * 1e9) as u64)
}

/// Observations of `h` in the buckets from the one holding `lo` seconds to
/// the one holding `hi`: a sleep of `lo` ends late by its wakeup's run-queue
/// wait, several milliseconds on a busy host, past its bucket's upper bound
/// (5 % above 0.1 s and 0.2 s).
fn waits_between(h: &Histogram, lo: f64, hi: f64) -> u64 {
    h.slots[slot_of_seconds(lo)..=slot_of_seconds(hi)].iter().sum()
}

/// Upper bound of everything in `h` except one observation in `slot`.
fn others_upper_bound(h: &Histogram, slot: usize) -> f64 {
    let mut total = 0.0;
    for (s, &c) in h.slots.iter().enumerate() {
        let c = if s == slot { c.saturating_sub(1) } else { c };
        if c > 0 {
            let ub =
                buckets::slot_index(s).map(buckets::upper_bound_seconds).unwrap_or(buckets::zero_threshold_seconds());
            total += c as f64 * ub;
        }
    }
    total
}

/// A vfork child that sleeps 200 ms leaves its parent in D state (vfork waits
/// killable, i.e. TASK_UNINTERRUPTIBLE | TASK_WAKEKILL) for that long.
fn vfork_sleep(ms: u64) {
    let ts = libc::timespec { tv_sec: 0, tv_nsec: (ms * 1_000_000) as i64 };
    // SAFETY: the child only calls async-signal-safe nanosleep and _exit, and
    // touches no memory of the parent.
    unsafe {
        // vfork is deprecated in libc for its misuse; here it is the point:
        // the parent waits in D state while the child runs.
        #[allow(deprecated)]
        let pid = libc::vfork();
        if pid == 0 {
            libc::nanosleep(&ts, std::ptr::null_mut());
            libc::_exit(0);
        }
        assert!(pid > 0, "vfork failed");
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
    }
}

fn dstate_vfork(mode: &str) {
    let p = attach(mode);
    let before = p.snapshot().unwrap();
    vfork_sleep(200);
    let after = p.snapshot().unwrap();
    let d = delta(&after, &before, "dstate");
    let slot = slot_of_seconds(0.2);
    assert!(waits_between(&d, 0.2, 0.3) >= 1, "{mode}: no D-state observation of 0.2-0.3 s: {:?}", d.native());
    let sum = d.sum_seconds();
    let slack = others_upper_bound(&d, slot);
    // At least the child's 0.2 s sleep, less 0.1 %: the scheduler's clock (tp_btf
    // times waits with it) runs at the TSC's rate, the sleep at NTP's (<= 500 ppm apart).
    assert!(sum >= 0.2 * 0.999, "{mode}: D-state sum grew by {sum} s, expected >= 0.2 s");
    // The vfork wait itself is 0.2 s plus wakeup latency; the rest is other tasks.
    assert!(sum <= 0.2 + 0.05 + slack, "{mode}: D-state sum grew by {sum} s (other observations allow {slack} s)");
}

#[test]
fn root_dstate_vfork_200ms_tp_btf() {
    require_root!();
    dstate_vfork("tp_btf");
}

#[test]
fn root_dstate_vfork_200ms_tp_btf_wakeup() {
    require_root!();
    dstate_vfork("tp_btf_wakeup");
}

#[test]
fn root_dstate_vfork_200ms_raw_tp() {
    require_root!();
    dstate_vfork("raw_tp");
}

/// run_delay (ns) of every thread on the node, by (pid, tid): the kernel's
/// own account of run-queue waits, the ground truth of a node-wide histogram.
fn all_run_delays() -> std::collections::HashMap<(u32, u32), u64> {
    let mut m = std::collections::HashMap::new();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(tasks) = std::fs::read_dir(p.path().join("task")) else { continue };
        for t in tasks.flatten() {
            let Ok(tid) = t.file_name().to_string_lossy().parse::<u32>() else { continue };
            // Threads may exit while we walk: skip them.
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                if let Some(v) = s.split_whitespace().nth(1).and_then(|v| v.parse().ok()) {
                    m.insert((pid, tid), v);
                }
            }
        }
    }
    m
}

/// Threads pinned to one CPU contend; the histogram's sum must agree with the
/// growth of every thread's schedstat run_delay over the same window.
fn runqueue_vs_schedstat(mode: &str) {
    let p = attach(mode);
    let n = 3;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let stop = stop.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                // SAFETY: a zeroed cpu_set_t with CPU 0 set; gettid has no arguments.
                unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(0, &mut set);
                    assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0);
                    tx.send(libc::gettid()).unwrap();
                }
                let mut x = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
                std::hint::black_box(x);
            })
        })
        .collect();
    let _tids: Vec<i32> = (0..n).map(|_| rx.recv().unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    // The histogram's window holds schedstat's: a slow walk of /proc (a busy
    // host) then adds to the histogram, under the loose upper bound, never to
    // the truth the strict lower bound compares with.
    let s0 = p.snapshot().unwrap();
    let d0 = all_run_delays();
    std::thread::sleep(Duration::from_secs(2));
    let d1 = all_run_delays();
    let s1 = p.snapshot().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    // Threads born in the window start from 0; those that died are lost (few).
    let truth = d1.iter().map(|(k, v)| v - d0.get(k).copied().unwrap_or(0).min(*v)).sum::<u64>() as f64 / 1e9;
    let hist = delta(&s1, &s0, "runqueue").sum_seconds();
    // 3 spinners on one CPU for 2 s wait ~4 s in all.
    assert!(truth > 2.0, "{mode}: contention too weak: schedstat run_delay grew {truth} s");
    // Both count a wait at switch-in; the walks of /proc are not instant, so
    // waits landing while we walk may fall on either side. A thread that
    // exited in the window took its run_delay with it (no /proc/schedstat
    // here for a per-CPU total), so under churn only the lower bound is tight.
    let churn = d0.keys().filter(|k| !d1.contains_key(k)).count() + d1.keys().filter(|k| !d0.contains_key(k)).count();
    let rel = (hist - truth) / truth;
    eprintln!(
        "{mode}: histogram sum {hist:.4} s, schedstat run_delay {truth:.4} s ({:+.2}%), {churn} threads came or went",
        rel * 100.0
    );
    // Above: ksense also counts the wait of a task preempted mid-way into a
    // sleep and left queued behind the spinners, which schedstat does not
    // (sched_info_depart queues only TASK_RUNNING tasks); the likely cause
    // of the excess seen in 2 of about 25 runs (+6 % and +13 %, no churn),
    // not proven. The lower bound is the strict one: it catches lost waits.
    let upper = if churn == 0 { 0.15 } else { 0.5 };
    assert!(
        rel > -0.02 && rel < upper,
        "{mode}: histogram sum {hist} s vs schedstat run_delay {truth} s ({:+.1}%, churn {churn})",
        rel * 100.0
    );
}

#[test]
fn root_runqueue_sum_matches_schedstat_tp_btf() {
    require_root!();
    runqueue_vs_schedstat("tp_btf");
}

#[test]
fn root_runqueue_sum_matches_schedstat_tp_btf_monotonic_clock() {
    require_root!();
    runqueue_vs_schedstat("tp_btf_monotonic");
}

#[test]
fn root_runqueue_sum_matches_schedstat_tp_btf_wakeup() {
    require_root!();
    runqueue_vs_schedstat("tp_btf_wakeup");
}

#[test]
fn root_runqueue_sum_matches_schedstat_raw_tp() {
    require_root!();
    runqueue_vs_schedstat("raw_tp");
}

fn pin_to_cpu0() -> i32 {
    // SAFETY: a zeroed cpu_set_t with CPU 0 set; gettid has no arguments.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0);
        libc::gettid()
    }
}

fn thread_run_delay(tid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).unwrap();
    s.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Two spinners and a thread that sleeps 1 ms at a time share CPU 0. The
/// spinners only ever wait requeued (preempted), the sleeper only after its
/// wakeups: each part of the split must hold at least its own threads' waits
/// (schedstat run_delay), whatever the rest of the node adds. Swapping the
/// two, or losing the mark, fails one of the bounds.
fn runqueue_wakeup_split(mode: &str) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let p = attach(mode);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let mut handles = Vec::new();
    for sleeper in [false, false, true] {
        let (stop, tx) = (stop.clone(), tx.clone());
        handles.push(std::thread::spawn(move || {
            tx.send((sleeper, pin_to_cpu0())).unwrap();
            let mut x = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if sleeper {
                    std::thread::sleep(Duration::from_millis(1));
                } else {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
            }
            std::hint::black_box(x);
        }));
    }
    let tids: Vec<(bool, i32)> = (0..3).map(|_| rx.recv().unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let delays = |want: bool| tids.iter().filter(|t| t.0 == want).map(|t| thread_run_delay(t.1)).sum::<u64>();
    // The snapshots enclose the schedstat reads (s0, d0, ..., d1, s1), as the comment below says.
    let s0 = p.snapshot().unwrap();
    let (spin0, sleep0) = (delays(false), delays(true));
    std::thread::sleep(Duration::from_secs(2));
    let (spin1, sleep1) = (delays(false), delays(true));
    let s1 = p.snapshot().unwrap();
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let wakeup = delta(&s1, &s0, "runqueue_wakeup").sum_seconds();
    let requeue = delta(&s1, &s0, "runqueue").sum_seconds() - wakeup;
    let (spin, sleep) = ((spin1 - spin0) as f64 / 1e9, (sleep1 - sleep0) as f64 / 1e9);
    eprintln!("{mode}: requeue waits {requeue:.4} s (spinners' run_delay {spin:.4} s), wakeup waits {wakeup:.4} s (sleeper's {sleep:.4} s)");
    assert!(
        spin > 0.5 && sleep > 0.001,
        "{mode}: contention too weak: spinners waited {spin} s, the sleeper {sleep} s"
    );
    // The snapshots enclose the schedstat reads, so only a wait straddling a
    // read may fall outside: 2% and 1 ms of slack.
    assert!(requeue >= spin * 0.98 - 0.001, "{mode}: requeue waits {requeue} s < the spinners' own {spin} s");
    assert!(wakeup >= sleep * 0.98 - 0.001, "{mode}: wakeup waits {wakeup} s < the sleeper's own {sleep} s");
    assert!(
        wakeup < requeue,
        "{mode}: wakeup waits {wakeup} s should be far below the spinners' requeue waits {requeue} s"
    );
}

#[test]
fn root_runqueue_wakeup_and_requeue_split_tp_btf() {
    require_root!();
    runqueue_wakeup_split("tp_btf");
}

#[test]
fn root_runqueue_wakeup_and_requeue_split_tp_btf_wakeup() {
    require_root!();
    runqueue_wakeup_split("tp_btf_wakeup");
}

#[test]
fn root_runqueue_wakeup_and_requeue_split_raw_tp() {
    require_root!();
    runqueue_wakeup_split("raw_tp");
}

fn proc_softirqs() -> Vec<u64> {
    let text = std::fs::read_to_string("/proc/softirqs").unwrap();
    SOFTIRQ_VECTORS
        .iter()
        .map(|v| {
            let line = text.lines().find(|l| l.trim_start().starts_with(&format!("{v}:"))).unwrap();
            line.split_whitespace().skip(1).map(|c| c.parse::<u64>().unwrap()).sum()
        })
        .collect()
}

/// Some loopback traffic and timers so that several vectors fire.
fn softirq_load(d: Duration) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let _ = std::io::copy(&mut s, &mut std::io::sink());
    });
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    let buf = vec![7u8; 64 * 1024];
    let t0 = Instant::now();
    while t0.elapsed() < d {
        std::io::Write::write_all(&mut c, &buf).unwrap();
        std::thread::sleep(Duration::from_micros(200));
    }
    drop(c);
    t.join().unwrap();
}

fn softirq_counts(mode: &str) {
    let p = attach(mode);
    // Histogram window encloses the /proc window: hist >= proc, by a little.
    let s0 = p.snapshot().unwrap();
    let c0 = proc_softirqs();
    softirq_load(Duration::from_secs(1));
    let c1 = proc_softirqs();
    let s1 = p.snapshot().unwrap();
    let mut busy = 0;
    for (i, v) in SOFTIRQ_VECTORS.iter().enumerate() {
        let truth = c1[i] - c0[i];
        let got = delta(&s1, &s0, &softirq(v)).count();
        let slack = 20 + truth / 50;
        assert!(
            got + slack >= truth && got <= truth + slack,
            "{mode}: {v}: histogram counted {got}, /proc/softirqs {truth}"
        );
        busy += usize::from(truth > 50);
    }
    assert!(busy >= 2, "{mode}: too few busy vectors to compare");
}

#[test]
fn root_softirq_counts_match_proc_softirqs_tp_btf() {
    require_root!();
    softirq_counts("tp_btf");
}

#[test]
fn root_softirq_counts_match_proc_softirqs_raw_tp() {
    require_root!();
    softirq_counts("raw_tp");
}

fn close(a: u64, b: u64, rel: f64, what: &str) {
    let (fa, fb) = (a as f64, b as f64);
    assert!((fa - fb).abs() <= rel * fa.max(fb) + 20.0, "{what}: {a} vs {b} (the first attachment, then the second)");
}

/// `n` request/response round trips over one loopback TCP connection: each
/// ACK of new data is one RTT sample.
fn ping_pong(n: usize) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut b = [0u8; 64];
        while c.read_exact(&mut b).is_ok() {
            c.write_all(&b).unwrap();
        }
    });
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    let mut b = [1u8; 64];
    for _ in 0..n {
        c.write_all(&b).unwrap();
        c.read_exact(&mut b).unwrap();
    }
    drop(c);
    server.join().unwrap();
}

/// The clock the programs time waits with, told apart by what only the
/// scheduler's clock does: a sleeper woken onto an idle CPU preempts the idle
/// task, and the switch after it reuses the wakeup's clock update, so on
/// `rq->clock` its waits read 0 ns (as schedstat's do); on the monotonic clock
/// they read the microseconds until the switch. Both program sets attached at
/// once, on the same wakeups.
#[test]
fn root_waits_are_timed_with_the_scheduler_clock_where_it_is_stable() {
    require_root!();
    let s = kernel::probe();
    let (rq, mono) = (attach("tp_btf"), attach("tp_btf_monotonic"));
    let zero = |p: &Probes| p.snapshot().unwrap().signal("runqueue").unwrap().slots[0];
    let (rq0, mono0) = (zero(&rq), zero(&mono));
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (rq_zero, mono_zero) = (zero(&rq) - rq0, zero(&mono) - mono0);
    eprintln!("waits of 0-1 ns in 0.5 s: scheduler's clock {rq_zero}, monotonic {mono_zero} ({:?})", s.sched_clock);
    assert!(mono_zero <= 5, "the monotonic clock read {mono_zero} waits of 0-1 ns");
    if s.sched_clock.is_ok() {
        assert!(rq_zero >= 25, "{rq_zero} waits of 0-1 ns: the tp_btf programs do not read rq->clock");
    } else {
        assert!(rq_zero <= 5, "{rq_zero} waits of 0-1 ns where the scheduler's clock is not used");
    }
}

/// Snapshots of `a` and `b` before and after the same load: softirqs, two
/// 100 ms vfork (D-state) sleeps, 300 loopback round trips.
fn side_by_side(a: &Probes, b: &Probes) -> [Snapshot; 4] {
    let (a0, b0) = (a.snapshot().unwrap(), b.snapshot().unwrap());
    let t = std::thread::spawn(|| softirq_load(Duration::from_millis(1500)));
    vfork_sleep(100);
    vfork_sleep(100);
    ping_pong(300);
    t.join().unwrap();
    [a0, b0, a.snapshot().unwrap(), b.snapshot().unwrap()]
}

/// Where the kernel keeps sched_info, tp_btf times waits at sched_switch
/// alone: the wakeup programs are not loaded, and the waits and D-state
/// sleeps are those the wakeup programs see, side by side.
#[test]
fn root_sched_info_and_wakeup_waits_agree() {
    require_root!();
    let s = kernel::probe();
    let names = |p: &Probes| p.programs.iter().map(|p| p.name).collect::<Vec<_>>();
    let b = attach("tp_btf_wakeup");
    assert!(names(&b).contains(&"sched_wakeup"), "{:?}", names(&b));
    if let Err(e) = &s.sched_info {
        // Asked for where it cannot be: a clear error, never a silent fallback.
        let opts = Options { sched_waits: SchedWaits::SchedInfo, ..Options::default() };
        let err = Probes::attach_with(AttachMode::TpBtf, &s, &[], opts).unwrap_err().to_string();
        assert!(err.contains("--bpf.sched-waits") && err.contains(e.as_str()), "{err}");
        assert!(std::env::var_os("CI").is_none(), "CI's kernel should keep sched_info: {e}");
        eprintln!("skipped the comparison: no sched_info here ({e})");
        return;
    }
    let a = attach("tp_btf");
    assert!(!names(&a).iter().any(|n| n.starts_with("sched_wakeup")), "{:?}", names(&a));
    // A sleep that began before the second attachment is the first's alone:
    // let those end before the window opens.
    std::thread::sleep(Duration::from_secs(1));
    let [a0, b0, a1, b1] = side_by_side(&a, &b);
    for signal in ["runqueue", "runqueue_wakeup", "dstate"] {
        let (x, y) = (delta(&a1, &a0, signal), delta(&b1, &b0, signal));
        eprintln!(
            "{signal}: sched_info {} waits, {:.6} s; wakeup {} waits, {:.6} s",
            x.count(),
            x.sum_seconds(),
            y.count(),
            y.sum_seconds()
        );
        close(x.count(), y.count(), 0.05, &format!("{signal} count"));
        // Sums: the two ends are the same clock updates, bar the wakeups that
        // preempt (sched_info's wait then ends at the switch's update).
        let (xs, ys) = (x.sum_seconds(), y.sum_seconds());
        assert!((xs - ys).abs() <= 0.10 * ys.max(xs) + 0.002, "{signal} sum: sched_info {xs} s, wakeup {ys} s");
    }
    assert!(waits_between(&delta(&a1, &a0, "dstate"), 0.1, 0.15) >= 2, "sched_info missed the 100 ms vfork waits");
}

/// The forced raw_tp path attaches and sees what tp_btf sees, side by side.
#[test]
fn root_raw_tp_and_tp_btf_agree() {
    require_root!();
    // Held for the run-time statistics checked at the end (off by default).
    let _stats = kernel::enable_stats().expect("BPF_ENABLE_STATS");
    let a = attach("tp_btf");
    let b = attach("raw_tp");
    assert_eq!(a.mode, AttachMode::TpBtf);
    assert_eq!(b.mode, AttachMode::RawTp);
    assert!(b.programs.iter().all(|p| p.attached), "{:?}", b.programs);
    let [a0, b0, a1, b1] = side_by_side(&a, &b);
    let da = |x: &Snapshot, y: &Snapshot| (delta(x, y, "runqueue"), delta(x, y, "dstate"));
    let ((ra, dsa), (rb, dsb)) = (da(&a1, &a0), da(&b1, &b0));
    assert!(ra.count() > 1000, "too little scheduling to compare: {}", ra.count());
    close(ra.count(), rb.count(), 0.05, "run-queue count");
    close(dsa.count(), dsb.count(), 0.05, "D-state count");
    assert!(waits_between(&dsb, 0.1, 0.15) >= 2, "raw_tp missed the 100 ms vfork waits");
    for v in SOFTIRQ_VECTORS {
        close(delta(&a1, &a0, &softirq(v)).count(), delta(&b1, &b0, &softirq(v)).count(), 0.05, v);
    }
    let (rtt_a, rtt_b) = (delta(&a1, &a0, "tcp_rtt").count(), delta(&b1, &b0, "tcp_rtt").count());
    assert!(rtt_a >= 300, "the ping-pong's RTT samples: {rtt_a}");
    close(rtt_a, rtt_b, 0.05, "TCP RTT samples");
    for p in [&a, &b] {
        for (name, attached, st) in p.program_stats().unwrap() {
            assert!(attached, "{name} not attached");
            // The others wait for rare events: a new task, a retransmission, a drop.
            if ["sched_switch", "sched_wakeup", "softirq_entry", "softirq_exit", "tcp_probe"].contains(&name) {
                assert!(st.run_cnt > 0 && st.run_time_ns > 0, "{name}: no run-time statistics: {st:?}");
            }
        }
    }
}

/// A per-CPU array read in one batch, key by key, and one key at a time:
/// the same sums, whatever the value size (rounded up to 8 bytes per CPU by
/// the kernel) and however far past the array's end the caller asks.
#[test]
fn root_percpu_array_batch_and_key_reads_agree() {
    require_root!();
    use ksense::probes::reader::PercpuArray;
    use libbpf_rs::libbpf_sys as sys;
    use std::os::fd::{FromRawFd, OwnedFd};
    let cpus = unsafe { sys::libbpf_num_possible_cpus() } as usize;
    for (value_size, entries) in [(8u32, 6u32), (12, 3), (24, 10)] {
        // SAFETY: plain map creation; the fd is ours to own.
        let fd = unsafe {
            sys::bpf_map_create(
                sys::BPF_MAP_TYPE_PERCPU_ARRAY,
                std::ptr::null(),
                4,
                value_size,
                entries,
                std::ptr::null(),
            )
        };
        assert!(fd >= 0, "bpf_map_create: {}", std::io::Error::from_raw_os_error(-fd));
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let stride = (value_size as usize).next_multiple_of(8);
        // Value of key k on CPU c: bytes (k * 31 + c * 7 + byte index) as u8.
        for k in 0..entries {
            let mut v = vec![0u8; stride * cpus];
            for c in 0..cpus {
                for b in 0..value_size as usize {
                    v[c * stride + b] = (k as usize * 31 + c * 7 + b) as u8;
                }
            }
            let rc = unsafe {
                sys::bpf_map_update_elem(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    (&k as *const u32).cast(),
                    v.as_ptr().cast(),
                    0,
                )
            };
            assert_eq!(rc, 0, "update key {k}");
        }
        let batched = PercpuArray::new(fd.try_clone().unwrap(), value_size as usize, entries).unwrap();
        let by_key = PercpuArray::new(fd, value_size as usize, entries).unwrap().key_by_key();
        let collect = |a: &PercpuArray, n: u32| {
            // A dirty buffer: nothing of it may show.
            let mut buf = vec![0xa5u8; 3];
            let mut got: Vec<(u32, Vec<u8>)> = Vec::new();
            a.read_first(n, &mut buf, |k, v| got.push((k, v.to_vec()))).unwrap();
            got
        };
        let want: Vec<(u32, Vec<u8>)> = (0..entries)
            .flat_map(|k| {
                (0..cpus)
                    .map(move |c| (k, (0..value_size as usize).map(|b| (k as usize * 31 + c * 7 + b) as u8).collect()))
            })
            .collect();
        for n in [1, entries, entries + 5] {
            let w: Vec<_> = want.iter().filter(|(k, _)| *k < n).cloned().collect();
            assert_eq!(collect(&batched, n), w, "batched, value_size {value_size}, n {n}");
            assert_eq!(collect(&by_key, n), w, "key by key, value_size {value_size}, n {n}");
        }
    }
}
