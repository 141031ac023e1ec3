// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The floor: empty programs on ksense's scheduler, softirq, network and requests
 * tracepoints. What any tp_btf program costs on this kernel (dispatch, the
 * kernel's run-time statistics), measured beside ksense's own programs in
 * bench/cost.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tp_btf/sched_switch")
int BPF_PROG(floor_sched_switch)
{
	return 0;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(floor_sched_wakeup)
{
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(floor_sched_wakeup_new)
{
	return 0;
}

/* The network family's tracepoints. */
SEC("tp_btf/tcp_probe")
int BPF_PROG(floor_tcp_probe)
{
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(floor_tcp_retransmit_skb)
{
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(floor_kfree_skb)
{
	return 0;
}

/* The requests family's tracepoints. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(floor_inet_sock_set_state)
{
	return 0;
}

SEC("tp_btf/sk_data_ready")
int BPF_PROG(floor_sk_data_ready)
{
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(floor_sock_recv_length)
{
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(floor_sock_send_length)
{
	return 0;
}

/* The softirq family's tracepoints. */
SEC("tp_btf/softirq_entry")
int BPF_PROG(floor_softirq_entry)
{
	return 0;
}

SEC("tp_btf/softirq_exit")
int BPF_PROG(floor_softirq_exit)
{
	return 0;
}

/* The requests family's fallback before 6.3, attached only in the requests storm. */
SEC("raw_tp/sys_exit")
int BPF_PROG(floor_sys_exit)
{
	return 0;
}
