/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Every kernel-version shim in one place, each with the kernel commit that
 * made it necessary (CO-RE relocations pick the layout the running kernel
 * has). A new shim goes here, not into a probe family's file.
 */
#ifndef KSENSE_CORE_FIXES_H
#define KSENSE_CORE_FIXES_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>

/*
 * Linux 5.14, commit 2f064a59a11f ("sched: Change task_struct::state"):
 * `state` became `__state`.
 */
struct task_struct___o {
	volatile long state;
} __attribute__((preserve_access_index));

static __always_inline __u32 ks_task_state(struct task_struct *t, bool btf)
{
	if (bpf_core_field_exists(t->__state))
		return btf ? t->__state : BPF_CORE_READ(t, __state);
	if (btf)
		return ((struct task_struct___o *)t)->state;
	return BPF_CORE_READ((struct task_struct___o *)t, state);
}

/*
 * Linux 5.5, commit 67c0496e87d1 ("kernfs: convert kernfs_node->id from
 * union kernfs_node_id to u64"): before it, a kernfs node id was a union of
 * inode number and generation.
 */
union kernfs_node_id___old {
	struct {
		__u32 ino;
		__u32 generation;
	};
	__u64 id;
} __attribute__((preserve_access_index));

struct kernfs_node___old {
	union kernfs_node_id___old id;
} __attribute__((preserve_access_index));

/* The id of a cgroup (the inode number of its directory in the v2 hierarchy). */
static __always_inline __u64 ks_cgroup_id(struct cgroup *cg, bool btf)
{
	if (btf)
		return cg->kn->id;
	if (bpf_core_type_exists(union kernfs_node_id___old)) {
		struct kernfs_node___old *kn = (void *)BPF_CORE_READ(cg, kn);
		return BPF_CORE_READ(kn, id.ino);
	}
	return BPF_CORE_READ(cg, kn, id);
}

/*
 * The id of the task's cgroup in the v2 (default) hierarchy, on hybrid hosts
 * too. Read at every observation, not cached: tasks move between cgroups.
 */
static __always_inline __u64 ks_task_cgroup(struct task_struct *t, bool btf)
{
	return ks_cgroup_id(btf ? t->cgroups->dfl_cgrp : BPF_CORE_READ(t, cgroups, dfl_cgrp), btf);
}

/*
 * Linux 5.15, commit 8520e224f547 ("bpf, cgroups: Fix cgroup v2 fallback on
 * v1/v2 mixed mode"): sock_cgroup_data became a plain cgroup pointer. Before,
 * a union whose `val` is the pointer unless its low bit says it holds a
 * net_cls/net_prio id instead.
 */
struct sock_cgroup_data___old {
	__u64 val;
} __attribute__((preserve_access_index));

struct sock___old {
	struct sock_cgroup_data___old sk_cgrp_data;
} __attribute__((preserve_access_index));

/* The id of the socket's cgroup v2; 0 when it has none. */
static __always_inline __u64 ks_sock_cgroup(const struct sock *sk, bool btf)
{
	struct cgroup *cg;

	if (bpf_core_field_exists(struct sock_cgroup_data, cgroup)) {
		cg = btf ? sk->sk_cgrp_data.cgroup : BPF_CORE_READ(sk, sk_cgrp_data.cgroup);
	} else {
		__u64 v = BPF_CORE_READ((struct sock___old *)sk, sk_cgrp_data.val);
		cg = (v & 1) ? NULL : (struct cgroup *)v;
		btf = false; /* a pointer from an integer: probe reads only */
	}
	return cg ? ks_cgroup_id(cg, btf) : 0;
}

#endif /* KSENSE_CORE_FIXES_H */
