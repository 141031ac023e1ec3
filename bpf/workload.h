/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Per-workload breakdown of the histograms and counters, keyed by the cgroup
 * v2 id of the task that waited (sched) or of the socket (net: the cgroup of
 * the process that made it, or of the listener it was accepted from), which
 * a retransmission or a packet in softirq context is no task's. Each family
 * defines its maps of these types. Everything here is behind `ks_workloads`, a
 * rodata constant user space sets before load: when it is false the verifier
 * removes these blocks as dead code and the maps are shrunk to one entry.
 *
 * One per-CPU hash per histogram (run queue, D state, TCP RTT). Per CPU, because a
 * busy workload runs on many CPUs at once: shared counters, even with atomic
 * adds, bounce their cache lines between CPUs at every context switch (that
 * more than doubled sched_switch's cost here). To keep per-CPU memory small
 * the per-workload histograms are coarser than the node-wide ones: schema 0
 * (one bucket per power of two, each the union of four node-wide buckets),
 * 66 slots covering the same range, 536 bytes per CPU. The maps have a
 * bounded size (user space sets it before load); an event whose cgroup finds
 * no room is still in the node-wide histogram and is counted in ks_drops.
 * User space deletes the entries of cgroups that are gone.
 */
#ifndef KSENSE_WORKLOAD_H
#define KSENSE_WORKLOAD_H

#include "ksense.h"

const volatile bool ks_workloads = false;

/*
 * Slot 0 is the zero bucket (as in ks_hist); slot w >= 1 is native index
 * w - 30 of schema 0, i.e. values in (2^(w-31), 2^(w-30)] s, which holds
 * ks_hist slots 4w-7 ..= 4w-4 (src/probes/buckets.rs mirrors this).
 */
#define KS_WSLOTS 66

struct ks_whist {
	__u64 slots[KS_WSLOTS];
	__u64 sum_ns;
};

/* The value a new entry starts from (too big for the BPF stack). */
const volatile struct ks_whist ks_zero_whist = {};

/*
 * BPF_F_NO_PREALLOC: memory only for cgroups that have waited. User space
 * clears the flag (preallocates) on kernels whose hash maps cannot allocate
 * safely from a tracepoint (before bpf_mem_alloc, 6.1).
 */
struct ks_cgroup_hists {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, struct ks_whist);
};

/* Per-workload event counts (retransmitted segments, drops): cgroup id -> u64. */
struct ks_cgroup_counts {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u64);
};

/* The value a new counter starts from. */
const volatile __u64 ks_zero_count = 0;

/*
 * The histogram of cgroup `id` (this CPU's copy), created on first use; NULL
 * when there is no room. Called before the node-wide bucket search, so that
 * the verifier checks this code once and not on each of the search's 256
 * paths (after it, loading took 1 s instead of 40 ms).
 */
static __always_inline struct ks_whist *ks_workload_hist(void *map, __u64 id)
{
	struct ks_whist *h = bpf_map_lookup_elem(map, &id);

	if (h)
		return h;
	/* EEXIST when another CPU inserted it first: the lookup finds it. */
	bpf_map_update_elem(map, &id, (const void *)&ks_zero_whist, BPF_NOEXIST);
	h = bpf_map_lookup_elem(map, &id);
	if (!h)
		ks_drop(KS_DROP_CGROUP_MAP_FULL); /* full, or -ENOMEM in a burst */
	return h;
}

/* Adds `n` to cgroup `id`'s counter in `map` (a struct ks_cgroup_counts). */
static __always_inline void ks_workload_count(void *map, __u64 id, __u64 n)
{
	__u64 *c = bpf_map_lookup_elem(map, &id);

	if (!c) {
		bpf_map_update_elem(map, &id, (const void *)&ks_zero_count, BPF_NOEXIST);
		c = bpf_map_lookup_elem(map, &id);
	}
	if (c)
		*c += n; /* this CPU's copy: no atomics */
	else
		ks_drop(KS_DROP_CGROUP_MAP_FULL);
}

/*
 * The fast path, for the hottest per-workload events (a run-queue wait, at
 * every sched_switch; a request, at a socket call): histograms indexed by a
 * slot that user space gives a cgroup (ks_slot_ids: id -> slot;
 * ks_slot_owners: slot -> id), cached with the cgroup id in the task's own
 * storage (the connection's, for requests), which the program has looked up
 * anyway. An event then costs two inlined array lookups instead of a hash
 * lookup. A cgroup with no slot (new since user space last
 * read, or more cgroups than slots) uses the hash map as before; user space
 * folds what it counted there into its total once it has a slot
 * (src/probes/slots.rs). When a cgroup is gone, user space clears its owner
 * first, so a stale cache misses and looks up again; slots are never
 * assigned from here, so the kernel side needs no lock. User space sizes all
 * three maps before load.
 */
struct ks_slot_ids {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u64);
	__type(value, __u32);
};

struct ks_slot_owners {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
};

/*
 * The slots' histograms: one line-aligned ks_whist per (slot, CPU), at index
 * slot * ks_slot_cpus + cpu, in an array user space maps into its memory
 * (BPF_F_MMAPABLE: it reads them without a system call, where a per-CPU
 * array's batch lookup copied element by element and cost a scrape more than
 * the hash map it replaces). Each CPU writes only its own elements; 576
 * bytes, nine cache lines, so no two CPUs share one. The words the padding
 * leaves are counters of the same cgroup a family may keep there (net:
 * retransmitted segments, drops): they share the last cache line with
 * sum_ns, which every event of the histogram writes, so a rare counter finds
 * it warm where a hash map's bucket and value were cold (bench/README).
 */
#define KS_LINE_COUNTS 5

struct ks_whist_line {
	struct ks_whist h;
	__u64 counts[KS_LINE_COUNTS];
};

struct ks_slot_hists {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ks_whist_line);
};

/* Possible CPUs, set by user space before load: the stride of ks_slot_hists. */
const volatile __u32 ks_slot_cpus = 1;

/*
 * Cgroup `id`'s line in its slot (this CPU's element), through the cache
 * `*cached_id`/`*cached_slot` (the task's storage; updated on a miss); NULL
 * when the cgroup has no slot.
 */
static __always_inline struct ks_whist_line *ks_slot_line(void *ids, void *owners, void *hists, __u64 id,
							   __u64 *cached_id, __u32 *cached_slot)
{
	__u32 slot = *cached_slot;
	__u64 *owner;

	if (*cached_id != id || !(owner = bpf_map_lookup_elem(owners, &slot)) || *owner != id) {
		__u32 *s = bpf_map_lookup_elem(ids, &id);

		if (!s)
			return NULL;
		slot = *s;
		*cached_id = id;
		*cached_slot = slot;
	}
	__u32 cpu = bpf_get_smp_processor_id();
	if (cpu >= ks_slot_cpus) /* a CPU id past the possible count (a sparse mask) */
		return NULL;
	__u32 k = slot * ks_slot_cpus + cpu;

	return bpf_map_lookup_elem(hists, &k);
}

/* The histogram of that line. */
static __always_inline struct ks_whist *ks_slot_hist(void *ids, void *owners, void *hists, __u64 id,
						     __u64 *cached_id, __u32 *cached_slot)
{
	struct ks_whist_line *l = ks_slot_line(ids, owners, hists, id, cached_id, cached_slot);

	return l ? &l->h : NULL;
}

/*
 * The cache for programs with no storage of their own (the network family,
 * which runs in softirq context on the socket's cgroup, not the current
 * task's): a small per-CPU direct-mapped cache, cgroup id -> slot, handed to
 * ks_slot_hist as `cached_id`/`cached_slot`. A hit costs three array lookups
 * (the entry, the slot's owner, its line), which the verifier inlines (the
 * per-CPU one on recent kernels), where the hash map cost a helper call and
 * its hash. Only this CPU
 * writes its entries; a program interrupted by another mid-update leaves a new
 * id beside an old slot, whose owner check fails and looks up again.
 */
struct ks_slot_cache_entry {
	__u64 id;
	__u32 slot;
	__u32 pad;
};

#define KS_SLOT_CACHE_BITS 6
#define KS_SLOT_CACHE_ENTRIES (1 << KS_SLOT_CACHE_BITS)

struct ks_slot_cache {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KS_SLOT_CACHE_ENTRIES);
	__type(key, __u32);
	__type(value, struct ks_slot_cache_entry);
};

/* This CPU's entry for cgroup `id` (a multiplicative hash: cgroup ids are
 * sequential, and their low bits alone would crowd few entries). */
static __always_inline struct ks_slot_cache_entry *ks_slot_cache_get(void *cache, __u64 id)
{
	__u32 k = ((id ^ (id >> 32)) * 0x9E3779B97F4A7C15ULL) >> (64 - KS_SLOT_CACHE_BITS);

	return bpf_map_lookup_elem(cache, &k);
}

/* `s`: the node-wide slot of `v`, as ks_observe returned it. */
static __always_inline void ks_workload_add(struct ks_whist *h, __u32 s, __u64 v)
{
	__u32 w = s ? (s + 5) >> 2 : 0;

	if (w >= KS_WSLOTS) /* cannot happen (s <= 255); tells the verifier */
		return;
	/* This CPU's copy, no atomics: see ks_observe() (bpf/ksense.h). */
	h->slots[w]++;
	h->sum_ns += v;
}

#endif /* KSENSE_WORKLOAD_H */
