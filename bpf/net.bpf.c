// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The network family: TCP round-trip time, TCP retransmissions and packet
 * drops by reason, all aggregated here (nothing per event goes to user space).
 *
 *   tcp_probe           fires on every segment an established socket
 *                       receives, before the segment is processed. When the
 *                       segment acknowledges new data the kernel is about to
 *                       take an RTT sample from it; the program records the
 *                       one the kernel took from the previous such ACK, its
 *                       raw RTT of the newest segment acknowledged
 *                       (tp->rack.rtt_us, not the smoothed srtt, so that the
 *                       tail shows). So a sample is one per ACK that
 *                       acknowledged new data, a step late, and no state per
 *                       socket is needed (socket storage cost 17-41 ns more
 *                       per segment in bench/cost, and it missed the samples
 *                       of ACKs that acknowledge part of a GSO skb).
 *   tcp_retransmit_skb  one retransmitted skb; counted in segments (its
 *                       tcp_gso_segs), as the kernel's TcpRetransSegs counts
 *                       them, and split by the socket's congestion state:
 *                       Loss (an RTO fired), Recovery/CWR (fast retransmit,
 *                       RACK), Open/Disorder (tail-loss probes: the only
 *                       retransmits sent there).
 *   kfree_skb           a dropped packet and its enum skb_drop_reason;
 *                       consume_skb (a packet freed after use) is a different
 *                       tracepoint and not attached. User space names the
 *                       reasons from the running kernel's BTF.
 *
 * tp_btf and raw_tp variants as in sched.bpf.c.
 */
#include "ksense.h"
#include "workload.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ks_hist);
} tcp_rtt_hist SEC(".maps");

/* Keys of tcp_retrans. */
enum ks_retrans { RETRANS_TIMEOUT = 0, RETRANS_FAST = 1, RETRANS_PROBE = 2, RETRANS_MAX };
/* Never read: puts the enum in BTF for the skeleton (see ks_drop_reasons). */
const volatile enum ks_retrans ks_retrans_kinds = RETRANS_MAX;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RETRANS_MAX);
	__type(key, __u32);
	__type(value, __u64);
} tcp_retrans SEC(".maps");

/*
 * Drops by reason: slot r for reason r, the last slot for reasons past it
 * (subsystem reasons carry their subsystem in the high 16 bits). 6.18 has
 * 128 core reasons; 512 leaves room for kernels to come. One per-CPU value,
 * so that user space reads them all with one lookup.
 */
#define KS_DROP_SLOTS 512

struct ks_skb_drops {
	__u64 n[KS_DROP_SLOTS];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ks_skb_drops);
} skb_drops SEC(".maps");

/* Per workload (bpf/workload.h), by the socket's cgroup. */
struct ks_cgroup_hists cg_tcp_rtt SEC(".maps");
/* The RTT's fast path (bpf/workload.h), the slot cached per CPU: tcp_probe
 * runs at every ACK (about 0.78x the hash path's ns/run over both attach
 * orders, bench/README). The two counters use the same slot, in its line's
 * spare words (enum ks_net_count), which share a cache line with the RTT's
 * sum (0.60-0.70x the hash's ns/run for tcp_retransmit_skb, bench/README);
 * the hash maps below take the cgroups without a slot. */
struct ks_slot_ids cg_tcp_rtt_slot_ids SEC(".maps");
struct ks_slot_owners cg_tcp_rtt_slot_owners SEC(".maps");
struct ks_slot_hists cg_tcp_rtt_slots SEC(".maps");
struct ks_slot_cache cg_tcp_rtt_slot_cache SEC(".maps");
struct ks_cgroup_counts cg_tcp_retrans SEC(".maps");
struct ks_cgroup_counts cg_skb_drops SEC(".maps");

/* The counters' words in a slot's line (ks_whist_line.counts). */
enum ks_net_count { NET_COUNT_RETRANS = 0, NET_COUNT_DROPS = 1, NET_COUNT_MAX };
/* Never read: puts the enum in BTF for the skeleton (see ks_drop_reasons). */
const volatile enum ks_net_count ks_net_counts = NET_COUNT_MAX;

/* Cgroup `cg`'s line in its RTT slot on this CPU; NULL: no slot. */
static __always_inline struct ks_whist_line *net_line(__u64 cg)
{
	struct ks_slot_cache_entry *e = ks_slot_cache_get(&cg_tcp_rtt_slot_cache, cg);

	return e ? ks_slot_line(&cg_tcp_rtt_slot_ids, &cg_tcp_rtt_slot_owners, &cg_tcp_rtt_slots, cg, &e->id,
				&e->slot)
		 : NULL;
}

/* Adds `n` to cgroup `cg`'s counter `k`: in its slot's line, else in `hash`. */
static __always_inline void net_count(void *hash, enum ks_net_count k, __u64 cg, __u64 n)
{
	struct ks_whist_line *l = net_line(cg);

	if (l && k < KS_LINE_COUNTS)
		l->counts[k] += n; /* this CPU's line: no atomics */
	else
		ks_workload_count(hash, cg, n);
}

/* The skb's TCP control block: filled before tcp_probe fires (tcp_v4/v6_fill_cb). */
static __always_inline const struct tcp_skb_cb *skb_tcp_cb(const struct sk_buff *skb)
{
	return (const void *)((const char *)skb + bpf_core_field_offset(struct sk_buff, cb));
}

#define KS_TCPHDR_ACK 0x10 /* a #define in include/net/tcp.h, not in BTF */

/*
 * An ACK of new data (its ack_seq after snd_una): the kernel is about to take
 * an RTT sample from it, and rack.rtt_us still holds the one it took from the
 * previous such ACK. Recording that one here gives one sample per ACK of new
 * data, a step late, with no per-socket state.
 */
static __always_inline void rtt_sample(const struct sock *sk, __u32 rtt_us, bool btf)
{
	__u64 v = (__u64)rtt_us * 1000;

	if (!rtt_us) /* no sample yet */
		return;
	/* per-workload breakdown: bpf/workload.h */
	__u64 cg = ks_workloads ? ks_sock_cgroup(sk, btf) : 0;
	struct ks_whist *wh = NULL;

	if (cg) {
		struct ks_whist_line *l = net_line(cg);

		wh = l ? &l->h : ks_workload_hist(&cg_tcp_rtt, cg);
	}
	__u32 slot = ks_observe(&tcp_rtt_hist, 0, v);

	if (wh)
		ks_workload_add(wh, slot, v);
}

static __always_inline bool acks_new_data(__u16 flags, __u32 ack_seq, __u32 snd_una)
{
	return (flags & KS_TCPHDR_ACK) && (__s32)(ack_seq - snd_una) > 0;
}

SEC("tp_btf/tcp_probe")
int BPF_PROG(tp_tcp_probe, struct sock *sk, const struct sk_buff *skb)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	const struct tcp_skb_cb *cb = (const void *)skb->cb;

	if (tp && acks_new_data(cb->tcp_flags, cb->ack_seq, tp->snd_una))
		rtt_sample(sk, tp->rack.rtt_us, true);
	return 0;
}

SEC("raw_tp/tcp_probe")
int BPF_PROG(raw_tcp_probe, struct sock *sk, const struct sk_buff *skb)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	const struct tcp_skb_cb *cb = skb_tcp_cb(skb);

	if (acks_new_data(BPF_CORE_READ(cb, tcp_flags), BPF_CORE_READ(cb, ack_seq), BPF_CORE_READ(tp, snd_una)))
		rtt_sample(sk, BPF_CORE_READ(tp, rack.rtt_us), false);
	return 0;
}

static __always_inline int on_retransmit(const struct sock *sk, __u8 state, __u32 segs, bool btf)
{
	__u32 kind = state == TCP_CA_Loss ? RETRANS_TIMEOUT
		     : (state == TCP_CA_Recovery || state == TCP_CA_CWR) ? RETRANS_FAST
									  : RETRANS_PROBE;
	__u64 *c = bpf_map_lookup_elem(&tcp_retrans, &kind);
	__u64 cg;

	segs = segs ? segs : 1;
	if (c)
		*c += segs;
	if (ks_workloads && (cg = ks_sock_cgroup(sk, btf)))
		net_count(&cg_tcp_retrans, NET_COUNT_RETRANS, cg, segs);
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tp_tcp_retransmit_skb, struct sock *sk, const struct sk_buff *skb)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);

	if (!tp)
		return 0;
	/* Direct loads: the pointers are BTF pointers here. */
	return on_retransmit(sk, BPF_CORE_READ_BITFIELD(&tp->inet_conn, icsk_ca_state),
			     ((const struct tcp_skb_cb *)skb->cb)->tcp_gso_segs, true);
}

SEC("raw_tp/tcp_retransmit_skb")
int BPF_PROG(raw_tcp_retransmit_skb, const struct sock *sk, const struct sk_buff *skb)
{
	const struct inet_connection_sock *icsk = (const void *)sk;

	return on_retransmit(sk, BPF_CORE_READ_BITFIELD_PROBED(icsk, icsk_ca_state),
			     BPF_CORE_READ(skb_tcp_cb(skb), tcp_gso_segs), false);
}

/* `sk`: the socket the packet belonged to, if any (a sender's, or the one
 * early demux found for it); packets dropped before that are no workload's. */
static __always_inline int on_drop(const struct sock *sk, __u32 reason, bool btf)
{
	__u32 zero = 0;
	struct ks_skb_drops *d = bpf_map_lookup_elem(&skb_drops, &zero);
	__u64 cg;

	if (!d)
		return 0;
	if (reason >= KS_DROP_SLOTS)
		reason = KS_DROP_SLOTS - 1;
	d->n[reason & (KS_DROP_SLOTS - 1)]++;
	if (ks_workloads && sk && (cg = ks_sock_cgroup(sk, btf)))
		net_count(&cg_skb_drops, NET_COUNT_DROPS, cg, 1);
	return 0;
}

/*
 * A dropped packet's skb->sk may be a TIME_WAIT or NEW_SYN_RECV mini-socket
 * (early demux, SYN-ACKs): a struct sock_common with no sk_cgrp_data, which
 * would be read past its end. Only a full socket is charged to a workload.
 */
static __always_inline const struct sock *full_sock(const struct sock *sk, bool btf)
{
	__u8 state;

	if (!sk)
		return NULL;
	state = btf ? sk->__sk_common.skc_state : BPF_CORE_READ(sk, __sk_common.skc_state);
	return state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV ? NULL : sk;
}

/*
 * The reason is the third argument since Linux 5.17 (commit c504e5c2f964,
 * "net: skb: introduce kfree_skb_reason()"); before, there is none, and the
 * verifier would refuse the read: the branch is removed by CO-RE there.
 */
SEC("tp_btf/kfree_skb")
int BPF_PROG(tp_kfree_skb, struct sk_buff *skb, void *location, int reason)
{
	const struct sock *sk = ks_workloads ? full_sock(skb->sk, true) : NULL;

	if (!bpf_core_type_exists(enum skb_drop_reason))
		return on_drop(sk, KS_DROP_SLOTS - 1, true);
	return on_drop(sk, reason, true);
}

SEC("raw_tp/kfree_skb")
int BPF_PROG(raw_kfree_skb, struct sk_buff *skb, void *location, int reason)
{
	const struct sock *sk = ks_workloads ? full_sock(BPF_CORE_READ(skb, sk), false) : NULL;

	if (!bpf_core_type_exists(enum skb_drop_reason))
		return on_drop(sk, KS_DROP_SLOTS - 1, false);
	return on_drop(sk, reason, false);
}
