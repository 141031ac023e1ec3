// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Softirq handling time per vector: softirq_entry -> softirq_exit on one CPU.
 * Softirqs do not nest on a CPU, so one start slot per CPU is enough.
 * tp_btf and raw_tp variants, as in sched.bpf.c; only the attach type differs.
 */
#include "ksense.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define KS_NR_SOFTIRQS 10 /* HI .. RCU; NR_SOFTIRQS is an enum value in BTF, fixed since 4.x */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KS_NR_SOFTIRQS);
	__type(key, __u32);
	__type(value, struct ks_hist);
} softirq_hists SEC(".maps");

struct softirq_start {
	__u64 ts;
	__u32 vec;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct softirq_start);
} softirq_start SEC(".maps");

static __always_inline int on_entry(__u32 vec)
{
	__u32 zero = 0;
	struct softirq_start *s = bpf_map_lookup_elem(&softirq_start, &zero);

	if (!s)
		return 0;
	s->ts = bpf_ktime_get_ns();
	s->vec = vec;
	return 0;
}

static __always_inline int on_exit(__u32 vec)
{
	__u32 zero = 0;
	struct softirq_start *s = bpf_map_lookup_elem(&softirq_start, &zero);
	__u64 now = bpf_ktime_get_ns();

	/* ts == 0: attached while this softirq was already running. */
	if (!s || !s->ts || s->vec != vec || vec >= KS_NR_SOFTIRQS)
		return 0;
	ks_observe(&softirq_hists, vec, now > s->ts ? now - s->ts : 0);
	s->ts = 0;
	return 0;
}

SEC("tp_btf/softirq_entry")
int BPF_PROG(tp_softirq_entry, unsigned int vec)
{
	return on_entry(vec);
}

SEC("tp_btf/softirq_exit")
int BPF_PROG(tp_softirq_exit, unsigned int vec)
{
	return on_exit(vec);
}

SEC("raw_tp/softirq_entry")
int BPF_PROG(raw_softirq_entry, unsigned int vec)
{
	return on_entry(vec);
}

SEC("raw_tp/softirq_exit")
int BPF_PROG(raw_softirq_exit, unsigned int vec)
{
	return on_exit(vec);
}
