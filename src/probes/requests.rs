//! The requests family (bpf/requests.bpf.c): each workload's request rate
//! and request latency, inferred from its socket calls, as a server (on
//! accepted sockets) and as a client of its dependencies (on connected ones).

use std::mem::MaybeUninit;

use anyhow::Context;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::OpenObject;

use super::reader::PercpuArray;
use super::{fallback_on, labelled, on, percpu, skel, Attach, Hook, ProbeFamily, Reader, WorkloadFamily, DROP_REASONS};
use crate::signals::histogram::Histogram;
use crate::signals::metric::{family, Kind, Unit, Value};
use crate::signals::Snapshot;

/// The roles in `enum ks_role` order (a test checks it), each with its signal.
/// The per-workload request-latency family (one map per role).
pub const WORKLOAD_DURATION: &str = "ksense_workload_request_duration";

pub const ROLES: [&str; 2] = ["server", "client"];
pub const SERVER_SIGNAL: &str = "requests_server";
pub const CLIENT_SIGNAL: &str = "requests_client";

/// The socket-call tracepoints (6.3+), and the program that stands in for
/// them where they are missing: the exit of the system calls that move data.
const SOCKET_CALLS: [&str; 2] = ["sock_recv_length", "sock_send_length"];
pub const SYSCALL_FALLBACK: &str = "sys_exit";

/// The program that moves the end of a server's request to the last
/// retransmission of its response (on tcp_retransmit_skb, beside the network
/// family's own); disabled, a request ends at the first send of its response.
pub const RETRANSMIT_PROGRAM: &str = "request_retransmits";

/// Where a connection's role sits in its state (`struct ks_conn`), for tests
/// that read socket storage from user space.
pub const CONN_ROLE_OFFSET: usize = std::mem::offset_of!(skel::requests::types::ks_conn, role);

/// The raw_tp fallback's connection table (bpf/requests.bpf.c's
/// `conns_by_addr`): connections past it evict the least recently used.
const RAW_TP_CONNECTIONS: u32 = 65536;

pub const FAMILY: ProbeFamily = ProbeFamily {
    programs: &[
        on("inet_sock_set_state"),
        on("sk_data_ready"),
        on("sock_recv_length"),
        on("sock_send_length"),
        Hook { name: RETRANSMIT_PROGRAM, tracepoint: "tcp_retransmit_skb", fallback: false },
        fallback_on(SYSCALL_FALLBACK),
    ],
    signals: || [SERVER_SIGNAL, CLIENT_SIGNAL].map(String::from).to_vec(),
    counters: &[],
    attach,
    example: |h, out| emit(out, [h.clone(), h.clone()]),
};

const DURATION: &str = "ksense_request_duration";
const COUNT: &str = "ksense_requests";

const WORKLOAD_DURATION_HELP: &str = "Request latency of each workload, inferred from its socket calls: role=\"server\" from a request's arrival on an accepted TCP socket to the first send of its response, or to its last retransmission where the response was retransmitted; role=\"client\" from a send on a connected socket to the first receive of the reply. For the exported workloads (by the cgroup of the task that answered, or for a client that received the reply); the rest are summed in workload=\"other\".";
const WORKLOAD_COUNT_HELP: &str = "Requests each workload served (role=\"server\") or made (role=\"client\"), inferred from its socket calls: the count of ksense_workload_request_duration_seconds.";

#[derive(Debug)]
struct Requests {
    hists: PercpuArray,
    drops: PercpuArray,
}

fn attach(ctx: &mut Attach<'_>) -> anyhow::Result<Box<dyn Reader>> {
    let mut obj = MaybeUninit::<OpenObject>::uninit();
    let mut open =
        skel::requests::RequestsSkelBuilder::default().open(&mut obj).context("opening the requests BPF object")?;
    // Without the socket-call tracepoints the system calls stand in; the sock
    // they reach through the fd table is no pointer the verifier trusts for
    // socket storage, so the whole family keeps its state by address, the
    // raw_tp way.
    let syscalls = SOCKET_CALLS.iter().any(|n| ctx.support.missing_tracepoints.contains(n));
    let btf = ctx.btf() && !syscalls;
    // Only the chosen variant's connection state is created.
    open.maps.conns.set_autocreate(btf)?;
    open.maps.conns_by_addr.set_autocreate(!btf)?;
    open.maps.conns_by_addr.set_max_entries(RAW_TP_CONNECTIONS)?;
    let rodata = open.maps.rodata_data.as_deref_mut().context("requests rodata")?;
    rodata.ks_bounds = ctx.bounds;
    rodata.ks_workloads = ctx.opts.workload_entries.is_some();
    (rodata.ks_ephemeral_lo, rodata.ks_ephemeral_hi) = ephemeral_ports();
    rodata.ks_sys_kind = syscall_kinds();
    ctx.size_workload_map(&mut open.maps.cg_requests_server)?;
    ctx.size_workload_map(&mut open.maps.cg_requests_client)?;
    let m = &mut open.maps;
    let n = super::slots::REQUEST_SLOTS;
    let server =
        [&mut m.cg_requests_server_slot_ids, &mut m.cg_requests_server_slot_owners, &mut m.cg_requests_server_slots];
    let size = ctx.size_slots(server, n)?;
    let client =
        [&mut m.cg_requests_client_slot_ids, &mut m.cg_requests_client_slot_owners, &mut m.cg_requests_client_slots];
    ctx.size_slots(client, n)?;
    open.maps.rodata_data.as_deref_mut().context("requests rodata")?.ks_slot_cpus = size.cpus;
    let p = &mut open.progs;
    ctx.select_as("inet_sock_set_state", btf, &mut p.tp_inet_sock_set_state, &mut p.raw_inet_sock_set_state);
    ctx.select_as("sk_data_ready", btf, &mut p.tp_sk_data_ready, &mut p.raw_sk_data_ready);
    if syscalls {
        ctx.replaced("sock_recv_length", SYSCALL_FALLBACK, &mut p.tp_sock_recv_length, &mut p.raw_sock_recv_length);
        ctx.replaced("sock_send_length", SYSCALL_FALLBACK, &mut p.tp_sock_send_length, &mut p.raw_sock_send_length);
    } else {
        ctx.select_as("sock_recv_length", btf, &mut p.tp_sock_recv_length, &mut p.raw_sock_recv_length);
        ctx.select_as("sock_send_length", btf, &mut p.tp_sock_send_length, &mut p.raw_sock_send_length);
    }
    ctx.select_as(RETRANSMIT_PROGRAM, btf, &mut p.tp_request_retransmit, &mut p.raw_request_retransmit);
    ctx.select_fallback(SYSCALL_FALLBACK, syscalls, &mut p.raw_sys_exit);
    let sk = open.load().context("loading the requests BPF programs")?;
    let p = &sk.progs;
    ctx.attach_as("inet_sock_set_state", btf, &p.tp_inet_sock_set_state, &p.raw_inet_sock_set_state);
    ctx.attach_as("sk_data_ready", btf, &p.tp_sk_data_ready, &p.raw_sk_data_ready);
    if !syscalls {
        ctx.attach_as("sock_recv_length", btf, &p.tp_sock_recv_length, &p.raw_sock_recv_length);
        ctx.attach_as("sock_send_length", btf, &p.tp_sock_send_length, &p.raw_sock_send_length);
    }
    ctx.attach_as(RETRANSMIT_PROGRAM, btf, &p.tp_request_retransmit, &p.raw_request_retransmit);
    ctx.attach_fallback(SYSCALL_FALLBACK, syscalls, &p.raw_sys_exit);
    let m = &sk.maps;
    let slots = [
        [&m.cg_requests_server_slot_ids, &m.cg_requests_server_slot_owners, &m.cg_requests_server_slots],
        [&m.cg_requests_client_slot_ids, &m.cg_requests_client_slot_owners, &m.cg_requests_client_slots],
    ];
    for ((role, map), [ids, owners, hists]) in
        ROLES.iter().zip([&sk.maps.cg_requests_server, &sk.maps.cg_requests_client]).zip(slots)
    {
        let f = WorkloadFamily {
            family: WORKLOAD_DURATION,
            unit: Some(Unit::Seconds),
            help: WORKLOAD_DURATION_HELP,
            counter: false,
            label: Some(("role", role)),
            count: Some(("ksense_workload_requests", WORKLOAD_COUNT_HELP)),
            scale: 1.0,
        };
        ctx.workload_map_as(f, map)?;
        ctx.workload_slots(ids, owners, hists, size)?;
    }
    Ok(Box::new(Requests { hists: percpu(&sk.maps.req_hists)?, drops: percpu(&sk.maps.ks_drops)? }))
}

/// KS_SYSCALLS of bpf/requests.bpf.c: the system call numbers its table
/// covers (the rodata field's type checks that the two agree).
const SYSCALLS: usize = 512;

/// `ks_sys_kind` of bpf/requests.bpf.c: what each system call does on a
/// socket, by this architecture's numbers (libc's, for the target ksense was
/// built for), and where a receive's flags are (its 3rd or 4th argument).
fn syscall_kinds() -> [u8; SYSCALLS] {
    use skel::requests::types::ks_sys as K;
    let mut kinds = [K::SYS_OTHER.0 as u8; SYSCALLS];
    let calls = [
        (libc::SYS_write, K::SYS_SEND),
        (libc::SYS_writev, K::SYS_SEND),
        (libc::SYS_sendto, K::SYS_SEND),
        (libc::SYS_sendmsg, K::SYS_SEND),
        (libc::SYS_sendmmsg, K::SYS_SEND),
        (libc::SYS_sendfile, K::SYS_SEND),
        (libc::SYS_read, K::SYS_RECV),
        (libc::SYS_readv, K::SYS_RECV),
        (libc::SYS_recvmsg, K::SYS_RECV_FLAGS3),
        (libc::SYS_recvfrom, K::SYS_RECV_FLAGS4),
        (libc::SYS_recvmmsg, K::SYS_RECV_FLAGS4),
    ];
    for (nr, kind) in calls {
        if let Some(k) = usize::try_from(nr).ok().and_then(|n| kinds.get_mut(n)) {
            *k = kind.0 as u8;
        }
    }
    kinds
}

/// The node's ephemeral port range, from which the programs tell the role of
/// a connection established before they attached (bpf/requests.bpf.c,
/// adopt()); the kernel's default where the file cannot be read.
const PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

fn ephemeral_ports() -> (u16, u16) {
    std::fs::read_to_string(PORT_RANGE).ok().and_then(|t| parse_port_range(&t)).unwrap_or((32768, 60999))
}

fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    let (lo, hi) = (it.next()?.ok()?, it.next()?.ok()?);
    (lo <= hi).then_some((lo, hi))
}

impl Reader for Requests {
    fn read(
        &self,
        out: &mut Snapshot,
        drops: &mut [u64; DROP_REASONS.len()],
        buf: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        let mut hs = self.hists.histograms(buf)?.into_iter();
        let (server, client) = (hs.next().unwrap_or_default(), hs.next().unwrap_or_default());
        emit(out, [server, client]);
        self.drops.add_counters(drops, buf) // this object's own ks_drops
    }
}

fn emit(out: &mut Snapshot, by_role: [Histogram; 2]) {
    let samples = |f: &dyn Fn(&Histogram) -> Value| {
        ROLES.iter().zip(&by_role).map(|(r, h)| labelled("role", r, f(h))).collect::<Vec<_>>()
    };
    out.families.extend([
        family(
            DURATION,
            Some(Unit::Seconds),
            "Request latency over all workloads, inferred from socket calls: role=\"server\" from a request's arrival on an accepted TCP socket to the first send of its response, or to its last retransmission where the response was retransmitted; role=\"client\" from a send on a connected socket to the first receive of the reply.",
            Kind::Histogram,
            samples(&|h| Value::Histogram(h.clone())),
        ),
        family(
            COUNT,
            None,
            "Requests served (role=\"server\") and made (role=\"client\") over all workloads, inferred from socket calls: the count of ksense_request_duration_seconds.",
            Kind::Counter,
            samples(&|h| Value::Counter(h.count() as f64)),
        ),
    ]);
    let [server, client] = by_role;
    out.signals.extend([(SERVER_SIGNAL.into(), server), (CLIENT_SIGNAL.into(), client)]);
}

#[cfg(test)]
mod tests {
    use super::*;
    // `enum ks_role` of bpf/requests.bpf.c, as the skeleton generates it.
    use skel::requests::types::ks_role as R;

    #[test]
    fn roles_follow_the_c_enum() {
        assert_eq!(ROLES.len(), R::ROLE_MAX.0 as usize);
        assert_eq!(ROLES[R::ROLE_SERVER.0 as usize], "server");
        assert_eq!(ROLES[R::ROLE_CLIENT.0 as usize], "client");
    }

    #[test]
    fn syscalls_map_to_what_they_do_on_a_socket() {
        use skel::requests::types::ks_sys as K;
        let k = syscall_kinds();
        let kind = |nr: libc::c_long| k[nr as usize];
        assert_eq!(kind(libc::SYS_sendfile), K::SYS_SEND.0 as u8, "nginx sends files with it");
        assert_eq!(kind(libc::SYS_read), K::SYS_RECV.0 as u8);
        assert_eq!(kind(libc::SYS_recvmsg), K::SYS_RECV_FLAGS3.0 as u8, "recvmsg(fd, msg, flags)");
        assert_eq!(kind(libc::SYS_recvfrom), K::SYS_RECV_FLAGS4.0 as u8, "recvfrom(fd, buf, len, flags, ...)");
        for nr in [libc::SYS_openat, libc::SYS_close, libc::SYS_futex, libc::SYS_pread64] {
            assert_eq!(kind(nr), K::SYS_OTHER.0 as u8, "syscall {nr} moves no socket data");
        }
        assert!(k.iter().all(|&x| x < K::SYS_KIND_MAX.0 as u8));
    }

    #[test]
    fn port_ranges_parse_or_are_refused() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range("1024 65535"), Some((1024, 65535)));
        assert_eq!(parse_port_range("60999 32768"), None, "reversed");
        assert_eq!(parse_port_range("32768"), None);
        assert_eq!(parse_port_range("x y"), None);
    }

    #[test]
    fn the_count_is_the_histograms() {
        let mut h = Histogram::default();
        h.slots[10] = 7;
        let mut s = Snapshot::default();
        emit(&mut s, [h.clone(), Histogram::default()]);
        let f = s.families.iter().find(|f| f.name == COUNT).unwrap();
        let got: Vec<_> = f
            .samples
            .iter()
            .map(|x| match x.value {
                Value::Counter(c) => (x.labels[0].1.to_string(), c),
                _ => panic!("not a counter"),
            })
            .collect();
        assert_eq!(got, [("server".into(), 7.0), ("client".into(), 0.0)]);
        assert_eq!(s.signal(SERVER_SIGNAL).unwrap().count(), 7);
    }
}
