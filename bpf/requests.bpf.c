// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The requests family: each workload's request rate and request latency,
 * inferred from its socket calls, with no change to the application.
 *
 * A small state machine per TCP socket, keyed by the socket (not the thread,
 * so thread pools and keep-alive connections are measured right):
 *
 *   server (accepted)  data received while no request is open begins one;
 *                      the first send after it answers it. Each receive->send
 *                      turn is one request. It ends at that send, or at the
 *                      last retransmission of the response where segments of
 *                      it were lost (its client cannot have it before), and
 *                      is recorded once that is known: when the next request
 *                      begins (its client had the whole response) or the
 *                      connection closes.
 *   client (connected) a send while no call is open begins a call to a
 *                      dependency; the first receive after it ends it.
 *
 * This holds for protocols that alternate request and response on a
 * connection (HTTP/1.x, Redis, memcached, PostgreSQL, most RPC over TCP). It
 * cannot hold for multiplexed protocols (HTTP/2, gRPC), pipelining (several
 * requests in one turn count as one), UDP, or streams that never turn.
 *
 *   inet_sock_set_state  the role, once per connection: SYN_RECV ->
 *                        ESTABLISHED is a server's socket, SYN_SENT ->
 *                        ESTABLISHED a client's. A connection established
 *                        before ksense attached gets its role from its ports
 *                        at its first call (see adopt()).
 *   sk_data_ready        when data reached a server socket (6.6+): a request
 *                        begins there rather than when the application reads
 *                        it, since its client waits while it sits in the
 *                        receive queue (bench/requests measured both).
 *   sock_recv_length,    every sock_recvmsg/sock_sendmsg (6.3+): read,
 *   sock_send_length     write, send*, recv*, and sendfile/splice (6.5+).
 *   tcp_retransmit_skb   a server's answered response being retransmitted
 *                        (RTO, fast retransmit, loss probe) moves its end.
 *
 *   sys_exit             before 6.3 (no sock_*_length): the exit of the
 *                        system calls that move data on a socket stands in
 *                        for both; see on_sys_exit().
 *
 * State lives in socket storage on tp_btf: it is freed with the socket, so
 * there is no table to fill. raw_tp programs cannot use socket storage; they
 * keep the same state in an LRU hash keyed by the socket's address, deleted
 * when the socket closes. The sys_exit fallback keeps it as raw_tp does.
 */
#include "ksense.h"
#include "workload.h"
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Keys of req_hists, and the role a socket has; ROLE_MAX: none (not measured). */
enum ks_role { ROLE_SERVER = 0, ROLE_CLIENT = 1, ROLE_MAX };
/* Never read: puts the enum in BTF for the skeleton (see ks_drop_reasons). */
const volatile enum ks_role ks_roles = ROLE_MAX;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ROLE_MAX);
	__type(key, __u32);
	__type(value, struct ks_hist);
} req_hists SEC(".maps");

/* Per workload (bpf/workload.h), by the cgroup of the task that ended the request. */
struct ks_cgroup_hists cg_requests_server SEC(".maps");
struct ks_cgroup_hists cg_requests_client SEC(".maps");
/* Their fast paths (bpf/workload.h), the slot cached in the connection's state. */
struct ks_slot_ids cg_requests_server_slot_ids SEC(".maps");
struct ks_slot_owners cg_requests_server_slot_owners SEC(".maps");
struct ks_slot_hists cg_requests_server_slots SEC(".maps");
struct ks_slot_ids cg_requests_client_slot_ids SEC(".maps");
struct ks_slot_owners cg_requests_client_slot_owners SEC(".maps");
struct ks_slot_hists cg_requests_client_slots SEC(".maps");

struct ks_conn {
	__u64 start_ns;   /* when the open request (call) began; 0: none is open */
	__u64 arrival_ns; /* server: when the next request's data reached the socket */
	__u64 answer_ns;  /* server: the open request's first send, or the last
			   * retransmission since; 0: not answered yet */
	__u64 cg;         /* server: the cgroup of the task that answered */
	__u32 role;       /* enum ks_role */
	__u32 slot;       /* attribution: the slot of slot_cg, as last looked up */
	__u64 slot_cg;
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ks_conn);
} conns SEC(".maps");

/* The raw_tp fallback's table; user space sizes it before load. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct ks_conn);
} conns_by_addr SEC(".maps");

#define KS_MSG_PEEK 2 /* a #define in include/linux/socket.h, not in BTF */

/* The node's ephemeral port range (net.ipv4.ip_local_port_range), always
 * set by user space before load (src/probes/requests.rs holds the default). */
const volatile __u16 ks_ephemeral_lo = 0;
const volatile __u16 ks_ephemeral_hi = 0;

/* inet_sock_set_state also fires for other protocols (e.g. SCTP): TCP only. */
static __always_inline bool is_tcp(const struct sock *sk, bool btf)
{
	return (btf ? sk->sk_protocol : BPF_CORE_READ(sk, sk_protocol)) == IPPROTO_TCP;
}

static __always_inline bool ephemeral(__u16 port)
{
	return port >= ks_ephemeral_lo && port <= ks_ephemeral_hi;
}

/* Stores a new connection's state; NULL when there is no room. */
static __always_inline struct ks_conn *store(struct sock *sk, __u32 role, bool btf)
{
	struct ks_conn init = { .role = role }, *c;
	__u64 key = (__u64)sk;

	if (btf) {
		c = bpf_sk_storage_get(&conns, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (c)
			*c = init;
	} else {
		bpf_map_update_elem(&conns_by_addr, &key, &init, BPF_ANY);
		c = bpf_map_lookup_elem(&conns_by_addr, &key);
	}
	if (!c)
		ks_drop(KS_DROP_SOCK_STORAGE);
	return c;
}

/* The role a connection's ports tell: a client's local port is ephemeral and
 * its peer's is not; a server's the reverse; ROLE_MAX when both or neither is. */
static __always_inline __u32 port_role(const struct sock *sk, bool btf)
{
	__u16 lport = btf ? sk->__sk_common.skc_num : BPF_CORE_READ(sk, __sk_common.skc_num);
	__u16 rport = bpf_ntohs(btf ? sk->__sk_common.skc_dport : BPF_CORE_READ(sk, __sk_common.skc_dport));

	if (ephemeral(lport) == ephemeral(rport))
		return ROLE_MAX;
	return ephemeral(lport) ? ROLE_CLIENT : ROLE_SERVER;
}

/*
 * A TCP connection with no state was established before ksense attached (or
 * its state found no room): no state change will tell its role, so that a
 * restart would lose long-lived connections (keep-alive, connection pools)
 * until they reconnect. Its ports tell it instead. Neither role: stored as
 * ROLE_MAX, never measured, asked only once.
 */
static __always_inline struct ks_conn *adopt(struct sock *sk, bool btf)
{
	__u8 state;

	if (!is_tcp(sk, btf))
		return NULL;
	state = btf ? sk->__sk_common.skc_state : BPF_CORE_READ(sk, __sk_common.skc_state);
	if (state != TCP_ESTABLISHED)
		return NULL;
	return store(sk, port_role(sk, btf), btf);
}

static __always_inline struct ks_conn *conn(struct sock *sk, bool btf)
{
	__u64 key = (__u64)sk;

	if (btf)
		return bpf_sk_storage_get(&conns, sk, 0, 0);
	return bpf_map_lookup_elem(&conns_by_addr, &key);
}

/* The connection's state, adopting one established before ksense attached. */
static __always_inline struct ks_conn *conn_or_adopt(struct sock *sk, bool btf)
{
	struct ks_conn *c = conn(sk, btf);

	return c ? c : adopt(sk, btf);
}

/* Records the open request of `c`, ended at `end` by cgroup `cg` (0: none). */
static __always_inline void record(struct ks_conn *c, __u64 end, __u64 cg)
{
	__u32 role = c->role;
	__u64 v = end > c->start_ns ? end - c->start_ns : 0;
	/* per-workload breakdown: bpf/workload.h */
	struct ks_whist *wh = NULL;

	c->start_ns = 0;
	c->answer_ns = 0;
	if (role >= ROLE_MAX)
		return;
	/* One branch per role, not a map chosen by the role: with its map known
	 * at each call the verifier inlines the array lookups of ks_slot_hist. */
	if (cg && role == ROLE_SERVER) {
		wh = ks_slot_hist(&cg_requests_server_slot_ids, &cg_requests_server_slot_owners,
				  &cg_requests_server_slots, cg, &c->slot_cg, &c->slot);
		if (!wh)
			wh = ks_workload_hist(&cg_requests_server, cg);
	} else if (cg) {
		wh = ks_slot_hist(&cg_requests_client_slot_ids, &cg_requests_client_slot_owners,
				  &cg_requests_client_slots, cg, &c->slot_cg, &c->slot);
		if (!wh)
			wh = ks_workload_hist(&cg_requests_client, cg);
	}
	__u32 slot = ks_observe(&req_hists, role, v);
	if (wh)
		ks_workload_add(wh, slot, v);
}

static __always_inline __u64 current_cgroup(void)
{
	return ks_workloads ? bpf_get_current_cgroup_id() : 0;
}

/* A server's answered request, once nothing can delay its response any more. */
static __always_inline void record_answered(struct ks_conn *c)
{
	if (c->role == ROLE_SERVER && c->start_ns && c->answer_ns)
		record(c, c->answer_ns, c->cg);
}

/* The clock is read only at a transition (a request begins or ends): most
 * calls are the rest of a request or of its response, and need none. */
static __always_inline int on_recv(struct sock *sk, int ret, int flags, bool btf)
{
	struct ks_conn *c;

	if (ret <= 0 || (flags & KS_MSG_PEEK) || !(c = conn_or_adopt(sk, btf)))
		return 0;
	if (c->role == ROLE_SERVER) {
		/* A request arriving means its client had the last response whole. */
		record_answered(c);
		if (!c->start_ns)
			c->start_ns = c->arrival_ns ? c->arrival_ns : bpf_ktime_get_ns();
		c->arrival_ns = 0;
	} else if (c->role == ROLE_CLIENT && c->start_ns) {
		record(c, bpf_ktime_get_ns(), current_cgroup());
	}
	return 0;
}

static __always_inline int on_send(struct sock *sk, int ret, bool btf)
{
	struct ks_conn *c;

	if (ret <= 0 || !(c = conn_or_adopt(sk, btf)))
		return 0;
	if (c->role == ROLE_SERVER) {
		if (c->start_ns && !c->answer_ns) {
			c->answer_ns = bpf_ktime_get_ns();
			c->cg = current_cgroup();
		}
	} else if (c->role == ROLE_CLIENT && !c->start_ns) {
		c->start_ns = bpf_ktime_get_ns();
	}
	return 0;
}

static __always_inline int on_data_ready(struct sock *sk, bool btf)
{
	struct ks_conn *c;

	/*
	 * Half the deliveries of a request/response exchange on one node are the
	 * replies to its clients, which have nothing to stamp. Their ports (in
	 * sock_common, which the kernel's socket lookup has just read) say so
	 * without the storage lookup, a likely cache miss in the softirq. A
	 * server whose ports look like a client's loses only its arrival stamp:
	 * its requests then begin when they are read.
	 */
	if (port_role(sk, btf) == ROLE_CLIENT)
		return 0;
	c = conn(sk, btf);

	/* Only the first arrival of a request (none open, or the open one
	 * answered): later segments are its rest. */
	if (c && c->role == ROLE_SERVER && (!c->start_ns || c->answer_ns) && !c->arrival_ns)
		c->arrival_ns = bpf_ktime_get_ns();
	return 0;
}

/* A segment of an answered response sent again: its client has it no sooner.
 * A client's socket (by its ports, as in on_data_ready) has no answer to
 * move: it returns before the storage lookup, a likely cache miss here. */
static __always_inline int on_retransmit(struct sock *sk, bool btf)
{
	struct ks_conn *c;

	if (port_role(sk, btf) == ROLE_CLIENT)
		return 0;
	c = conn(sk, btf);

	if (c && c->role == ROLE_SERVER && c->answer_ns)
		c->answer_ns = bpf_ktime_get_ns();
	return 0;
}

/* Most state changes are none of those that matter here (a role given,
 * ESTABLISHED left, a close on raw_tp): they return on the arguments alone,
 * before the socket is read. */
static __always_inline int on_state(struct sock *sk, int old, int new, bool btf)
{
	__u64 key = (__u64)sk;
	struct ks_conn *c;

	/*
	 * Leaving the states a server answers in, its last response is no
	 * longer waited for: ESTABLISHED for FIN_WAIT1 (it closes first) or
	 * CLOSE (a reset), and CLOSE_WAIT (its client sent a FIN, as one that
	 * half-closes after its request does) for LAST_ACK or CLOSE. Not
	 * ESTABLISHED for CLOSE_WAIT: the server may still answer, and always
	 * leaves CLOSE_WAIT later. A client's socket (by its ports, as in
	 * on_data_ready) has nothing to record and skips the storage lookup,
	 * cold here.
	 */
	if (((old == TCP_ESTABLISHED && new != TCP_CLOSE_WAIT) || old == TCP_CLOSE_WAIT) &&
	    port_role(sk, btf) != ROLE_CLIENT && (c = conn(sk, btf)))
		record_answered(c);
	if (new == TCP_CLOSE && !btf) {
		bpf_map_delete_elem(&conns_by_addr, &key);
		return 0;
	}
	if (new != TCP_ESTABLISHED || (old != TCP_SYN_RECV && old != TCP_SYN_SENT) || !is_tcp(sk, btf))
		return 0;
	store(sk, old == TCP_SYN_RECV ? ROLE_SERVER : ROLE_CLIENT, btf);
	return 0;
}

/* What a system call does on a socket: ks_sys_kind[nr], filled by user space
 * from its libc's numbers for this architecture. */
enum ks_sys { SYS_OTHER = 0, SYS_SEND = 1, SYS_RECV = 2, SYS_RECV_FLAGS3 = 3, SYS_RECV_FLAGS4 = 4, SYS_KIND_MAX };
/* Never read: puts the enum in BTF for the skeleton (see ks_drop_reasons). */
const volatile enum ks_sys ks_sys_kinds = SYS_KIND_MAX;
#define KS_SYSCALLS 512
const volatile __u8 ks_sys_kind[KS_SYSCALLS] = {};

/* #defines in include/uapi/linux/stat.h, not in BTF. */
#define KS_S_IFMT 00170000
#define KS_S_IFSOCK 0140000

/* The struct sock behind the current task's descriptor `fd`, NULL when it
 * is not a socket. Probe reads: a racing close only makes a read fail. */
static __always_inline struct sock *fd_sock(long fd)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
	struct file **fds, *f = NULL;
	struct socket *sock;

	if (fd < 0 || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return NULL;
	if ((BPF_CORE_READ(f, f_inode, i_mode) & KS_S_IFMT) != KS_S_IFSOCK)
		return NULL;
	sock = BPF_CORE_READ(f, private_data);
	return sock ? BPF_CORE_READ(sock, sk) : NULL;
}

/*
 * The fallback for kernels without sock_send_length/sock_recv_length (before
 * 6.3): the same steps at the exit of read, write, readv, writev, send*,
 * recv* and sendfile. The call's number, its fd and flags are still in the
 * registers saved at entry (x86-64: orig_ax, di, dx, r10). Every system call
 * on the node runs this program, and attaching it turns on the kernel's
 * traced-syscall path for every task: user space attaches it only where the
 * socket tracepoints are missing. Not seen: io_uring (no system call per I/O).
 */
static __always_inline int on_sys_exit(struct pt_regs *regs, long ret)
{
	unsigned long nr;
	struct sock *sk;
	__u8 kind;
	int flags = 0;

	if (ret <= 0)
		return 0;
	nr = BPF_CORE_READ(regs, orig_ax);
	if (nr >= KS_SYSCALLS || !(kind = ks_sys_kind[nr]))
		return 0;
	if (!(sk = fd_sock(BPF_CORE_READ(regs, di))))
		return 0;
	if (kind == SYS_SEND)
		return on_send(sk, ret, false);
	if (kind == SYS_RECV_FLAGS3)
		flags = BPF_CORE_READ(regs, dx);
	else if (kind == SYS_RECV_FLAGS4)
		flags = BPF_CORE_READ(regs, r10);
	return on_recv(sk, ret, flags, false);
}

SEC("raw_tp/sys_exit")
int BPF_PROG(raw_sys_exit, struct pt_regs *regs, long ret)
{
	return on_sys_exit(regs, ret);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tp_inet_sock_set_state, struct sock *sk, int old, int new)
{
	return on_state(sk, old, new, true);
}

SEC("tp_btf/sk_data_ready")
int BPF_PROG(tp_sk_data_ready, struct sock *sk)
{
	return on_data_ready(sk, true);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(tp_sock_recv_length, struct sock *sk, int ret, int flags)
{
	return on_recv(sk, ret, flags, true);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(tp_sock_send_length, struct sock *sk, int ret, int flags)
{
	return on_send(sk, ret, true);
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tp_request_retransmit, struct sock *sk, const struct sk_buff *skb)
{
	return on_retransmit(sk, true);
}

SEC("raw_tp/tcp_retransmit_skb")
int BPF_PROG(raw_request_retransmit, struct sock *sk, const struct sk_buff *skb)
{
	return on_retransmit(sk, false);
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(raw_inet_sock_set_state, struct sock *sk, int old, int new)
{
	return on_state(sk, old, new, false);
}

SEC("raw_tp/sk_data_ready")
int BPF_PROG(raw_sk_data_ready, struct sock *sk)
{
	return on_data_ready(sk, false);
}

SEC("raw_tp/sock_recv_length")
int BPF_PROG(raw_sock_recv_length, struct sock *sk, int ret, int flags)
{
	return on_recv(sk, ret, flags, false);
}

SEC("raw_tp/sock_send_length")
int BPF_PROG(raw_sock_send_length, struct sock *sk, int ret, int flags)
{
	return on_send(sk, ret, false);
}
