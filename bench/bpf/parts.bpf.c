// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The parts of ksense's sched_switch program, one program each, on the same
 * tracepoint as the floor: what the clock, a task-storage lookup and the
 * bucket search with its histogram update cost alone. bench/cost subtracts
 * the floor and prints them beside the whole: what bounds ksense's cost.
 */
#include "ksense.h"
#include "workload.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Keeps each part's result alive, so the compiler cannot drop the work. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sink SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} parts_ts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ks_hist);
} parts_hist SEC(".maps");

static __always_inline void keep(__u64 v)
{
	__u32 k = 0;
	__u64 *s = bpf_map_lookup_elem(&sink, &k);

	if (s)
		*s += v;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(parts_clock, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	keep(bpf_ktime_get_ns());
	return 0;
}

/* The scheduler's own clock instead: the rq->clock of next's CPU, which
 * __schedule has just updated (or skipped updating right after a wakeup
 * did), as schedstat's run_delay reads it. Through the task's cfs_rq (this
 * kernel's kallsyms has no data symbols, so the per-CPU `runqueues` cannot
 * be named as a ksym). */
SEC("tp_btf/sched_switch")
int BPF_PROG(parts_rq_clock, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	keep(next->se.cfs_rq->rq->clock);
	return 0;
}

/* As ksense looks up a task's start: the entry exists after the first switch. */
SEC("tp_btf/sched_switch")
int BPF_PROG(parts_storage, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	__u64 *v = bpf_task_storage_get(&parts_ts, next, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (v)
		*v += 1;
	return 0;
}

/* A value that varies from switch to switch, as waits do. */
SEC("tp_btf/sched_switch")
int BPF_PROG(parts_search, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	__u64 v = ((__u64)next->pid * 2654435761u) & 0xffffff;

	keep(ks_observe(&parts_hist, 0, v));
	return 0;
}

/*
 * What attribution adds (bpf/workload.h): the cgroup id read, then the same
 * read followed by the per-CPU hash lookup ksense does, then the alternative
 * of cgroup-local storage holding an index into a per-CPU array.
 */
SEC("tp_btf/sched_switch")
int BPF_PROG(parts_cgroup_id, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	keep(ks_task_cgroup(next, true));
	return 0;
}

struct ks_cgroup_hists parts_cg_hash SEC(".maps");

SEC("tp_btf/sched_switch")
int BPF_PROG(parts_cgroup_hash, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	struct ks_whist *h = ks_workload_hist(&parts_cg_hash, ks_task_cgroup(next, true));

	if (h)
		h->slots[1]++;
	return 0;
}

struct {
	__uint(type, BPF_MAP_TYPE_CGRP_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u32);
} parts_cg_index SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct ks_whist);
} parts_cg_array SEC(".maps");

__u32 parts_next_index = 0;

SEC("tp_btf/sched_switch")
int BPF_PROG(parts_cgroup_storage, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	__u32 *i = bpf_cgrp_storage_get(&parts_cg_index, next->cgroups->dfl_cgrp, 0, 0);

	if (!i) {
		i = bpf_cgrp_storage_get(&parts_cg_index, next->cgroups->dfl_cgrp, 0,
					 BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (!i)
			return 0;
		*i = parts_next_index++ & 1023; /* a bench: a lost race only shares a slot */
	}
	__u32 k = *i;
	struct ks_whist *h = bpf_map_lookup_elem(&parts_cg_array, &k);

	if (h)
		h->slots[1]++;
	return 0;
}
