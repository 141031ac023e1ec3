/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Shared by every ksense probe: the histogram layout, the bucket search and
 * the drop counters. User space (src/probes/buckets.rs) mirrors the layout.
 */
#ifndef KSENSE_H
#define KSENSE_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "core_fixes.bpf.h"

/*
 * Buckets: slot 0 is the zero bucket, slot s >= 1 holds values v (in ns) with
 * bound[s-1] < v <= bound[s]. The bounds are floor(2^(i/4) s) in ns, i.e. the
 * bounds of a Prometheus native histogram of schema 2 (and an OTLP exponential
 * histogram of scale 2), so user space never re-buckets. The last bound is
 * U64_MAX: every value lands somewhere, nothing overflows.
 */
#define KS_SLOTS 256

struct ks_hist {
	__u64 slots[KS_SLOTS];
	__u64 sum_ns;
};

/* Why a drop counter moved; indexes the per-CPU `ks_drops` array. */
enum ks_drop {
	KS_DROP_TASK_STORAGE = 0, /* task storage could not be allocated */
	KS_DROP_MAP_FULL = 1,     /* the raw_tp fallback's pid hash is full */
	KS_DROP_CGROUP_MAP_FULL = 2, /* no room for a cgroup in a per-workload map */
	KS_DROP_START_UNSEEN = 3, /* switched in, but the wakeup or switch-out that began its wait never arrived */
	KS_DROP_END_UNSEEN = 4,   /* a wait whose switch-in never arrived: the task ran unseen, the wait is discarded */
	KS_DROP_SOCK_STORAGE = 5, /* no room for a connection's request state: its requests are not measured */
	KS_DROP_MAX = 6,
};

/*
 * Never read by the programs: a global of the enum's type puts it in the
 * object's BTF, so the skeleton generates it for user space (src/probes)
 * and its values are not copied by hand.
 */
const volatile enum ks_drop ks_drop_reasons = KS_DROP_MAX;

/* Filled by user space before load (rodata), so there is one source of truth. */
const volatile __u64 ks_bounds[KS_SLOTS] = {};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KS_DROP_MAX);
	__type(key, __u32);
	__type(value, __u64);
} ks_drops SEC(".maps");

/*
 * Branch-free-ish binary search: counts the bounds below v, which is the slot
 * whose bound is the first >= v (Prometheus `le` semantics: a value equal to a
 * bound lands in that bound's bucket). 8 compares for 256 slots; clang 14
 * cannot compile __builtin_clzll for BPF, and a log2 would still need a table.
 */
static __always_inline __u32 ks_slot(__u64 v)
{
	__u32 i = 0;

#pragma unroll
	for (__u32 step = KS_SLOTS / 2; step > 0; step >>= 1)
		if (v > ks_bounds[i + step - 1])
			i += step;
	return i & (KS_SLOTS - 1);
}

/* Returns the slot, so a per-workload breakdown need not search again. */
static __always_inline __u32 ks_observe(void *hists, __u32 key, __u64 v)
{
	struct ks_hist *h = bpf_map_lookup_elem(hists, &key);
	__u32 s = ks_slot(v);

	if (h) {
		/*
		 * Per-CPU value, no atomics: the kernel never re-enters a
		 * program on its CPU. Two programs can write one histogram
		 * only in the requests family (a socket call, and a reset
		 * arriving in a softirq that closes a server's connection):
		 * a reset landing between the other's load and store loses
		 * one count, too rare to put atomics on every request.
		 */
		h->slots[s]++;
		h->sum_ns += v;
	}
	return s;
}

static __always_inline void ks_drop(__u32 reason)
{
	__u64 *c = bpf_map_lookup_elem(&ks_drops, &reason);

	if (c)
		*c += 1;
}

#endif /* KSENSE_H */
