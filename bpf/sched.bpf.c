// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Run-queue latency and D-state (uninterruptible sleep) duration.
 *
 * One object for both because they share their hooks: a separate D-state
 * probe would pay for a second program on sched_switch, the hottest
 * tracepoint of the kernel.
 *
 *   run-queue: runnable (wakeup, new task, or preempted) -> switched in,
 *              in two histograms by how the wait began: woken from sleep
 *              (what a request-serving thread waits after its wakeup) or
 *              requeued while still runnable (preempted or yielded, what CPU
 *              hogs wait); user space adds them up for the node-wide one
 *   D-state:   switched out with TASK_UNINTERRUPTIBLE set -> woken
 *
 * Two ways to time them. Where the kernel keeps sched_info (most kernels),
 * at sched_switch alone from its own per-task accounting
 * (on_switch_sched_info): no program on sched_wakeup, the hotter half of the
 * path. Elsewhere from sched_wakeup (the start) to sched_switch (the end), as
 * runqlat does (on_wakeup, on_switch). And two variants of each program:
 * tp_btf with task-local storage (the default: no bounded map, direct loads
 * from task_struct) and raw_tp with a pid-keyed hash for kernels without
 * tp_btf or task storage. User space picks before load by probing the
 * kernel (src/probes/sched.rs) and disables the rest.
 */
#include "ksense.h"
#include "workload.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Not in BTF: these are #defines in include/linux/sched.h. */
#define KS_TASK_RUNNING 0x0000
#define KS_TASK_UNINTERRUPTIBLE 0x0002
#define KS_TASK_NOLOAD 0x0400

/* Keys of sched_hists. */
enum ks_sched_hist { HIST_RUNQ_REQUEUE = 0, HIST_DSTATE = 1, HIST_RUNQ_WAKEUP = 2, HIST_SCHED_MAX };
/* Never read: puts the enum in BTF for the skeleton (see ks_drop_reasons). */
const volatile enum ks_sched_hist ks_sched_hists = HIST_SCHED_MAX;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HIST_SCHED_MAX);
	__type(key, __u32);
	__type(value, struct ks_hist);
} sched_hists SEC(".maps");

/* Per-workload (bpf/workload.h). */
struct ks_cgroup_hists cg_runq SEC(".maps");
struct ks_cgroup_hists cg_dstate SEC(".maps");
/* The run-queue waits' fast path (bpf/workload.h): most waits land here. */
struct ks_slot_ids cg_runq_slot_ids SEC(".maps");
struct ks_slot_owners cg_runq_slot_owners SEC(".maps");
struct ks_slot_hists cg_runq_slots SEC(".maps");

/*
 * When the task started waiting; 0 = not waiting. Some kernels do not
 * deliver every sched_switch or sched_wakeup to the programs (measured on
 * the VM kernel of tests/README.md: 2-3 % of one task's switch-ins): a start
 * whose end never arrives must not become a wait spanning the task's next
 * sleep. `csw`, the task's switch-out count when the start was taken, tells:
 * if the task switched out since, it ran in between, and the start is stale.
 */
struct task_ts {
	__u64 runq;
	__u64 dstate;
	__u32 woken; /* the run-queue wait began at a wakeup */
	__u32 csw;   /* nvcsw + nivcsw (low 32 bits) when runq or dstate was set */
	__u64 cg;    /* attribution: the cgroup of cg_slot, as last looked up */
	__u32 cg_slot;
	__u32 own;    /* sched_info waits: this wait is not in sched_info, time it from runq */
	__u64 delay0; /* sched_info waits: sched_info.run_delay at the switch-out */
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_ts);
} task_ts SEC(".maps");

/*
 * raw_tp fallback only (its task pointers are not BTF pointers, so no task
 * storage). An entry goes at the task's switch-in; one whose switch-in never
 * came (above) and whose task then exited would stay: LRU, so such leftovers
 * make room rather than fill the map and drop every new wait.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct task_ts);
} pid_ts SEC(".maps");

/*
 * `btf` is a compile-time constant at every call site: tp_btf programs load
 * task fields directly, raw_tp programs must go through probe reads.
 */
static __always_inline __u32 task_pid(struct task_struct *t, bool btf)
{
	return btf ? t->pid : BPF_CORE_READ(t, pid);
}

static __always_inline bool task_on_cpu(struct task_struct *t, bool btf)
{
	return btf ? t->on_cpu : BPF_CORE_READ(t, on_cpu);
}

/* Switch-outs so far; at sched_switch, prev's already counts this one. */
static __always_inline __u32 task_csw(struct task_struct *t, bool btf)
{
	return btf ? t->nvcsw + t->nivcsw : BPF_CORE_READ(t, nvcsw) + BPF_CORE_READ(t, nivcsw);
}

static __always_inline struct task_ts *ts_get(struct task_struct *t, __u32 pid,
					      bool btf, bool create)
{
	struct task_ts *ts;

	if (btf) {
		ts = bpf_task_storage_get(&task_ts, t, 0,
					  create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
		if (!ts && create)
			ks_drop(KS_DROP_TASK_STORAGE);
		return ts;
	}
	ts = bpf_map_lookup_elem(&pid_ts, &pid);
	if (ts || !create)
		return ts;
	struct task_ts zero = {};
	if (bpf_map_update_elem(&pid_ts, &pid, &zero, BPF_NOEXIST) == 0)
		return bpf_map_lookup_elem(&pid_ts, &pid);
	ts = bpf_map_lookup_elem(&pid_ts, &pid); /* lost a race: fine */
	if (!ts)
		ks_drop(KS_DROP_MAP_FULL);
	return ts;
}

/*
 * The clock of waits. On tp_btf, where user space found the scheduler's clock
 * stable (ks_rq_clock), the scheduler's own: the rq->clock of the task's run
 * queue, which the scheduler has just updated at both hooks (__schedule at
 * sched_switch; the wakeup, before enqueueing, at sched_wakeup), and which
 * schedstat's run_delay is measured with. A load from a line the scheduler
 * has just written, where bpf_ktime_get_ns() cost 35-48 ns on this VM (2026-12), half
 * of sched_switch (bench/README "What bounds the cost"). Like schedstat, a
 * wakeup that preempts the running task and the switch that follows share one
 * clock update, so such a wait reads the time until that update, not the
 * switch. Elsewhere (raw_tp, no fair-group scheduling, an unstable clock) the
 * monotonic clock; one program set uses one clock for both ends of a wait.
 */
const volatile bool ks_rq_clock = false;

static __always_inline __u64 clock_of(struct task_struct *t, bool btf)
{
	/* Never one clock for a stamp and the other for its end: a task on a
	 * run queue always has its cfs_rq, so the loads do not fault (a fault
	 * would read 0: a stamp of 0 is "not waiting"). */
	if (btf && ks_rq_clock && bpf_core_field_exists(struct sched_entity, cfs_rq) &&
	    bpf_core_field_exists(struct cfs_rq, rq))
		return t->se.cfs_rq->rq->clock;
	return bpf_ktime_get_ns();
}

static __always_inline __u64 since(__u64 now, __u64 start)
{
	/* Clocks of two CPUs may disagree by a hair: never wrap around. */
	return now > start ? now - start : 0;
}

/* One histogram update per event: the node-wide sums are built in user space. */
static __always_inline void record_dstate(struct task_struct *t, __u64 slept, bool btf)
{
	/* per-workload breakdown: bpf/workload.h */
	struct ks_whist *wh = ks_workloads ? ks_workload_hist(&cg_dstate, ks_task_cgroup(t, btf)) : NULL;
	__u32 slot = ks_observe(&sched_hists, HIST_DSTATE, slept);

	if (wh)
		ks_workload_add(wh, slot, slept);
}

/* `ts` caches t's slot in the fast path; NULL: no storage, the hash only. */
static __always_inline void record_wait(struct task_struct *t, struct task_ts *ts, bool woken,
					__u64 waited, bool btf)
{
	/* per-workload breakdown: bpf/workload.h */
	struct ks_whist *wh = NULL;

	if (ks_workloads) {
		__u64 cg = ks_task_cgroup(t, btf);

		if (ts)
			wh = ks_slot_hist(&cg_runq_slot_ids, &cg_runq_slot_owners, &cg_runq_slots, cg,
					  &ts->cg, &ts->cg_slot);
		if (!wh)
			wh = ks_workload_hist(&cg_runq, cg);
	}
	__u32 slot = ks_observe(&sched_hists, woken ? HIST_RUNQ_WAKEUP : HIST_RUNQ_REQUEUE, waited);
	if (wh)
		ks_workload_add(wh, slot, waited);
}

static __always_inline int on_switch(bool preempt, struct task_struct *prev,
				     struct task_struct *next, bool btf)
{
	/*
	 * The clock is read only when a stamp or a wait needs it: most
	 * switches (prev going to sleep, next the idle task or not waiting)
	 * need it once or not at all.
	 */
	__u64 now = 0;
	struct task_ts *ts;
	__u32 pid;

	pid = task_pid(prev, btf);
	if (pid) { /* pid 0: the idle task never waits for anything */
		__u32 state = ks_task_state(prev, btf);

		/* Preempted (even mid-way into a sleep) or yielded: still queued. */
		if (preempt || state == KS_TASK_RUNNING) {
			ts = ts_get(prev, pid, btf, true);
			if (ts) {
				now = clock_of(prev, btf);
				ts->runq = now;
				ts->woken = 0;
				ts->dstate = 0; /* it was running: no D sleep can be under way */
				ts->csw = task_csw(prev, btf);
			}
		} else if ((state & KS_TASK_UNINTERRUPTIBLE) &&
			   !(state & KS_TASK_NOLOAD)) {
			/* Test the bit: TASK_KILLABLE sleeps count, TASK_IDLE does not. */
			ts = ts_get(prev, pid, btf, true);
			if (ts) {
				now = clock_of(prev, btf);
				ts->dstate = now;
				ts->runq = 0;
				ts->csw = task_csw(prev, btf);
			}
		}
	}

	pid = task_pid(next, btf);
	if (!pid)
		return 0;
	ts = ts_get(next, pid, btf, false);
	if (!ts)
		return 0; /* never seen waiting: its wait began before ksense */
	/* It runs: whatever D sleep was recorded ended at a wakeup not delivered. */
	ts->dstate = 0;
	if (!ts->runq) {
		ks_drop(KS_DROP_START_UNSEEN);
		goto done;
	}
	if (ts->csw != task_csw(next, btf)) {
		ks_drop(KS_DROP_END_UNSEEN);
		ts->runq = 0;
		goto done;
	}
	if (!now)
		now = clock_of(next, btf); /* prev's run queue and next's: this CPU's */
	record_wait(next, ts, ts->woken, since(now, ts->runq), btf);
	ts->runq = 0;
done:
	if (!btf)
		bpf_map_delete_elem(&pid_ts, &pid); /* keep the bounded map small */
	return 0;
}

static __always_inline int on_wakeup(struct task_struct *p, bool new_task, bool btf)
{
	__u32 pid = task_pid(p, btf);
	struct task_ts *ts;
	__u64 now;

	/*
	 * Woken before it got off the CPU (ttwu_runnable): no wait in the queue
	 * starts, and no D-state sleep can be running either, since one starts
	 * at switch-out and try_to_wake_up waits for on_cpu to clear before
	 * waking a task that has switched out. Checked first: it saves the
	 * storage lookup. It also keeps clock_of() away from the wakeups that
	 * update no run-queue clock: those of a task still on a CPU, current
	 * included.
	 */
	if (!pid || task_on_cpu(p, btf))
		return 0;
	ts = ts_get(p, pid, btf, true);
	if (!ts)
		return 0;
	now = clock_of(p, btf); /* its run queue from now on: the wakeup placed it */
	__u32 csw = task_csw(p, btf);
	/* A start the task has switched out since: its end was not delivered. */
	if ((ts->runq || ts->dstate) && ts->csw != csw) {
		if (ts->runq)
			ks_drop(KS_DROP_END_UNSEEN);
		ts->runq = 0;
		ts->dstate = 0;
	}
	if (!new_task && ts->dstate) {
		record_dstate(p, since(now, ts->dstate), btf);
		ts->dstate = 0;
	}
	/* Keep a valid earlier start: a task preempted mid-way into a sleep is still queued. */
	if (!ts->runq) {
		ts->runq = now;
		ts->woken = 1;
		ts->csw = csw;
	}
	return 0;
}

/*
 * Waits from the kernel's own accounting, at sched_switch alone, where user
 * space found it usable (ks_sched_info: tp_btf, CONFIG_SCHED_INFO in BTF, the
 * scheduler's clock stable). sched_info is what /proc/<pid>/schedstat
 * reports: run_delay, the time the task has waited on run queues so far, and
 * last_queued, when its current wait began (0: none counted), both on
 * rq->clock. The tp_btf sched_switch fires before context_switch() runs
 * sched_info_switch(), so next's wait is still pending there: run_delay +
 * (now - last_queued), less run_delay at its last switch-out. A wait split by
 * a migration is whole (the dequeue folds its first part into run_delay). The
 * D-state sleep is then the time since the switch-out less the wait. The
 * sched_wakeup programs are not loaded: a wakeup costs nothing, and the
 * clock is read once per switch.
 */
const volatile bool ks_sched_info = false;

static __always_inline int on_switch_sched_info(bool preempt, struct task_struct *prev,
						struct task_struct *next)
{
	if (!bpf_core_field_exists(struct task_struct, sched_info))
		return 0; /* never loaded so: user space checked; keeps the verifier off the loads */
	__u64 now = clock_of(prev, true);
	struct task_ts *ts;
	__u32 pid = prev->pid;

	if (pid) {
		__u32 state = ks_task_state(prev, true);
		bool queued = preempt || state == KS_TASK_RUNNING;

		ts = ts_get(prev, pid, true, true);
		if (ts) {
			/* A switch-out still pending: the switch-in after it was not delivered. */
			if (ts->runq)
				ks_drop(KS_DROP_END_UNSEEN);
			ts->runq = now; /* the switch-out: nonzero while one is pending */
			ts->woken = !queued;
			/* Test the bit: TASK_KILLABLE sleeps count, TASK_IDLE does not. */
			ts->dstate = !queued && (state & KS_TASK_UNINTERRUPTIBLE) && !(state & KS_TASK_NOLOAD) ? now : 0;
			/* sched_info_depart() re-queues only a TASK_RUNNING task: one
			 * preempted mid-way into a sleep waits uncounted there. */
			ts->own = queued && state != KS_TASK_RUNNING;
			ts->delay0 = prev->sched_info.run_delay;
			ts->csw = task_csw(prev, true);
		}
	}

	pid = next->pid;
	if (!pid)
		return 0;
	__u64 lq = next->sched_info.last_queued;
	__u64 delay = next->sched_info.run_delay + (lq ? since(now, lq) : 0);
	__u64 waited;
	__u32 woken = 1;

	ts = ts_get(next, pid, true, false);
	if (!ts) {
		if (next->sched_info.pcount)
			return 0; /* never seen switching out: its wait began before ksense */
		/* A new task's first run: sched_info, zeroed at fork, holds its
		 * whole wait since wake_up_new_task(). Storage for attribution. */
		ts = ts_get(next, pid, true, true);
		waited = delay;
	} else {
		if (!ts->runq) {
			ks_drop(KS_DROP_START_UNSEEN);
			return 0;
		}
		if (ts->csw != task_csw(next, true)) {
			ks_drop(KS_DROP_END_UNSEEN);
			ts->runq = 0;
			ts->dstate = 0;
			return 0;
		}
		waited = ts->own ? since(now, ts->runq) : since(delay, ts->delay0);
		woken = ts->woken;
		if (ts->dstate) {
			record_dstate(next, since(since(now, ts->dstate), waited), true);
			ts->dstate = 0;
		}
		ts->runq = 0;
	}
	record_wait(next, ts, woken, waited, true);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(tp_sched_switch, bool preempt, struct task_struct *prev,
	     struct task_struct *next)
{
	if (ks_sched_info)
		return on_switch_sched_info(preempt, prev, next);
	return on_switch(preempt, prev, next, true);
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(tp_sched_wakeup, struct task_struct *p)
{
	return on_wakeup(p, false, true);
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(tp_sched_wakeup_new, struct task_struct *p)
{
	return on_wakeup(p, true, true);
}

SEC("raw_tp/sched_switch")
int BPF_PROG(raw_sched_switch, bool preempt, struct task_struct *prev,
	     struct task_struct *next)
{
	return on_switch(preempt, prev, next, false);
}

SEC("raw_tp/sched_wakeup")
int BPF_PROG(raw_sched_wakeup, struct task_struct *p)
{
	return on_wakeup(p, false, false);
}

SEC("raw_tp/sched_wakeup_new")
int BPF_PROG(raw_sched_wakeup_new, struct task_struct *p)
{
	return on_wakeup(p, true, false);
}
