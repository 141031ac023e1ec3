// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The network family: TCP round-trip time, TCP retransmissions and packet
 * drops by reason, all aggregated here (nothing per event goes to user space).
 *
 *   tcp_probe           fires on every segment an established socket
 *                       receives, before the segment is processed. A sample is
 *                       recorded only when the socket took a new RTT
 *                       measurement since the last segment: the kernel's raw
 *                       RTT of the newest segment an ACK acknowledged
 *                       (tp->rack.rtt_us, not the smoothed srtt, so that the
 *                       tail shows), new when tp->rack.mstamp moved. So a
 *                       sample is one per ACK that acknowledged newly sent
 *                       data, read at the socket's next received segment.
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
 * tp_btf and raw_tp variants as in sched.bpf.c. The per-socket "last sample
 * seen" stamp lives in socket storage (tp_btf: freed with the socket) or, in
 * the raw_tp fallback whose pointers are not BTF pointers, in an LRU hash
 * keyed by the socket's address.
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
struct ks_cgroup_counts cg_tcp_retrans SEC(".maps");
struct ks_cgroup_counts cg_skb_drops SEC(".maps");

struct rtt_seen {
	__u64 mstamp;
	/* The socket's cgroup, looked up once: it is fixed when the socket is made. */
	__u64 cgroup;
	__u32 cgroup_known;
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct rtt_seen);
} rtt_seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct rtt_seen);
} rtt_seen_raw SEC(".maps");

static __always_inline void rtt_sample(const struct sock *sk, struct rtt_seen *seen, __u64 mstamp,
				       __u32 rtt_us, bool btf)
{
	__u64 v = (__u64)rtt_us * 1000;

	if (!seen || seen->mstamp == mstamp || !rtt_us)
		return;
	seen->mstamp = mstamp;
	/* per-workload breakdown: bpf/workload.h */
	if (ks_workloads && !seen->cgroup_known) {
		seen->cgroup = ks_sock_cgroup(sk, btf);
		seen->cgroup_known = 1;
	}
	__u64 cg = ks_workloads ? seen->cgroup : 0;
	struct ks_whist *wh = cg ? ks_workload_hist(&cg_tcp_rtt, cg) : NULL;
	__u32 slot = ks_observe(&tcp_rtt_hist, 0, v);

	if (wh)
		ks_workload_add(wh, slot, v);
}

SEC("tp_btf/tcp_probe")
int BPF_PROG(tp_tcp_probe, struct sock *sk)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	struct rtt_seen *seen;
	__u64 mstamp;

	if (!tp)
		return 0;
	mstamp = tp->rack.mstamp;
	if (!mstamp) /* nothing acknowledged yet */
		return 0;
	seen = bpf_sk_storage_get(&rtt_seen, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	rtt_sample(sk, seen, mstamp, tp->rack.rtt_us, true);
	return 0;
}

SEC("raw_tp/tcp_probe")
int BPF_PROG(raw_tcp_probe, struct sock *sk)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	__u64 key = (__u64)sk;
	struct rtt_seen *seen, zero = {};
	__u64 mstamp = BPF_CORE_READ(tp, rack.mstamp);

	if (!mstamp)
		return 0;
	seen = bpf_map_lookup_elem(&rtt_seen_raw, &key);
	if (!seen) {
		bpf_map_update_elem(&rtt_seen_raw, &key, &zero, BPF_NOEXIST);
		seen = bpf_map_lookup_elem(&rtt_seen_raw, &key);
	}
	rtt_sample(sk, seen, mstamp, BPF_CORE_READ(tp, rack.rtt_us), false);
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
		ks_workload_count(&cg_tcp_retrans, cg, segs);
	return 0;
}

/* The skb's TCP control block: its tcp_gso_segs is what TcpRetransSegs adds for it. */
static __always_inline const struct tcp_skb_cb *skb_tcp_cb(const struct sk_buff *skb)
{
	return (const void *)((const char *)skb + bpf_core_field_offset(struct sk_buff, cb));
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
		ks_workload_count(&cg_skb_drops, cg, 1);
	return 0;
}

/*
 * The reason is the third argument since Linux 5.17 (commit c504e5c2f964,
 * "net: skb: introduce kfree_skb_reason()"); before, there is none, and the
 * verifier would refuse the read: the branch is removed by CO-RE there.
 */
SEC("tp_btf/kfree_skb")
int BPF_PROG(tp_kfree_skb, struct sk_buff *skb, void *location, int reason)
{
	const struct sock *sk = ks_workloads ? skb->sk : NULL;

	if (!bpf_core_type_exists(enum skb_drop_reason))
		return on_drop(sk, KS_DROP_SLOTS - 1, true);
	return on_drop(sk, reason, true);
}

SEC("raw_tp/kfree_skb")
int BPF_PROG(raw_kfree_skb, struct sk_buff *skb, void *location, int reason)
{
	const struct sock *sk = ks_workloads ? BPF_CORE_READ(skb, sk) : NULL;

	if (!bpf_core_type_exists(enum skb_drop_reason))
		return on_drop(sk, KS_DROP_SLOTS - 1, false);
	return on_drop(sk, reason, false);
}
