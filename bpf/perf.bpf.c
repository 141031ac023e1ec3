// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Performance counters (cycles, instructions, cache misses, or software
 * events) per workload, by the cgroup of the task that ran.
 *
 * User space opens one counting event per CPU and per configured event
 * (perf_event_open, system-wide on that CPU) and puts them in the
 * perf_evN arrays. At each sched_switch this program reads the CPU's
 * counters and gives what they counted since the last switch on this CPU
 * to the task switching out, that is to its cgroup. This is what perf's
 * `--bpf-counters --for-each-cgroup` does, and why: perf_event_open's own
 * cgroup mode needs an event per cgroup, per CPU and per counter, each
 * scheduled in and out at every cgroup switch; here the count is fixed
 * (CPUs x events), counts every cgroup from its first switch, and needs
 * no privilege after start.
 *
 * The counters are read only when the switch changes the CPU's cgroup: a
 * stretch of tasks of one cgroup is that cgroup's, however many switches
 * it holds, so a busy server switching among its own threads costs no read.
 * Node-wide totals need no program: user space reads the events' fds. This
 * one is loaded only for per-workload attribution.
 *
 * A counter shared with other users is multiplexed: the delta is scaled
 * by enabled/running time over the same stretch, as perf scales.
 */
#include "ksense.h"
#include "workload.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Events counted at once; user space fills the first ks_perf_n arrays. */
#define KS_PERF_MAX 4

const volatile __u32 ks_perf_n = 0;

/* CPU -> perf event fd; libbpf sizes each to the possible CPUs. */
struct ks_perf_events {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
};
struct ks_perf_events perf_ev0 SEC(".maps");
struct ks_perf_events perf_ev1 SEC(".maps");
struct ks_perf_events perf_ev2 SEC(".maps");
struct ks_perf_events perf_ev3 SEC(".maps");

/* This CPU's reading when its current stretch began, per event, and the
 * cgroup the stretch belongs to. */
struct perf_last {
	struct bpf_perf_event_value v[KS_PERF_MAX];
	__u64 cg;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct perf_last);
} perf_last SEC(".maps");

struct ks_cgroup_counts cg_perf0 SEC(".maps");
struct ks_cgroup_counts cg_perf1 SEC(".maps");
struct ks_cgroup_counts cg_perf2 SEC(".maps");
struct ks_cgroup_counts cg_perf3 SEC(".maps");

/*
 * Event `i` on this CPU: its delta since `last`, scaled for multiplexing,
 * added to cgroup `cg`'s count.
 */
static __always_inline void account(void *events, void *cgmap, __u32 i, struct bpf_perf_event_value *last, __u64 cg)
{
	struct bpf_perf_event_value v = {};
	__u64 d, de, dr;

	if (i >= ks_perf_n || bpf_perf_event_read_value(events, BPF_F_CURRENT_CPU, &v, sizeof(v)))
		return;
	/* The first reading on this CPU, or a counter that was reset: no delta. */
	if (last->enabled && v.counter >= last->counter && v.running > last->running) {
		d = v.counter - last->counter;
		de = v.enabled - last->enabled;
		dr = v.running - last->running;
		if (de > dr) { /* multiplexed: ran dr of de ns */
			/* (d % dr) * de < dr * de must fit in 64 bits: past ~4 s of a stretch
			 * it would not. Only the ratio counts: both are halved until de fits
			 * in 32 bits (shifts, not a log2: clang 14 crashes on clzll). */
			if (de >> 32) { de >>= 16; dr >>= 16; }
			if (de >> 32) { de >>= 8; dr >>= 8; }
			if (de >> 32) { de >>= 4; dr >>= 4; }
			if (de >> 32) { de >>= 2; dr >>= 2; }
			if (de >> 32) { de >>= 1; dr >>= 1; }
			if (de >> 32) { de >>= 1; dr >>= 1; }
			if (dr) /* ran less than 2^-32 of the stretch: its count is left as it is */
				d = d / dr * de + (d % dr) * de / dr;
		}
		if (d)
			ks_workload_count(cgmap, cg, d);
	}
	*last = v;
}

static __always_inline int on_switch(struct task_struct *prev, struct task_struct *next, bool btf)
{
	__u32 zero = 0;
	struct perf_last *l = bpf_map_lookup_elem(&perf_last, &zero);
	__u64 cg, to;

	if (!l || !ks_workloads)
		return 0;
	cg = ks_task_cgroup(prev, btf);
	to = ks_task_cgroup(next, btf);
	/* Same cgroup on: the stretch goes on (l->cg is 0 only at first). */
	if (to == cg && l->cg == cg)
		return 0;
	l->cg = to;
	account(&perf_ev0, &cg_perf0, 0, &l->v[0], cg);
	account(&perf_ev1, &cg_perf1, 1, &l->v[1], cg);
	account(&perf_ev2, &cg_perf2, 2, &l->v[2], cg);
	account(&perf_ev3, &cg_perf3, 3, &l->v[3], cg);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(tp_perf_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	return on_switch(prev, next, true);
}

SEC("raw_tp/sched_switch")
int BPF_PROG(raw_perf_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	return on_switch(prev, next, false);
}
