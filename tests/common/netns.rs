//! A network namespace of the test's own (`ip netns add`): its loopback is a
//! network nothing else uses, so impairing it (iptables, tc) touches no other
//! traffic. Deleted on drop.

use std::process::Command;

pub struct Netns {
    pub name: String,
}

/// Runs a command, panicking with its output when it fails.
pub fn run(argv: &[&str]) -> String {
    let out = Command::new(argv[0]).args(&argv[1..]).output().unwrap_or_else(|e| panic!("{}: {e}", argv[0]));
    assert!(
        out.status.success(),
        "{argv:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Netns {
    /// A new namespace with its loopback up.
    pub fn new(tag: &str) -> Netns {
        let name = format!("ksense-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs `argv` inside the namespace.
    pub fn exec(&self, argv: &[&str]) -> String {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(argv);
        run(&v)
    }

    /// Drops `share` (0..1) of the TCP segments arriving for `ports` (one
    /// port, or a range `lo:hi`), at random (iptables' statistic match: this
    /// kernel has no netem).
    pub fn drop_inbound(&self, ports: impl std::fmt::Display, share: f64) {
        let (port, share) = (ports.to_string(), share.to_string());
        self.exec(&[
            "iptables",
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "--dport",
            &port,
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            &share,
            "-j",
            "DROP",
        ]);
    }

    /// Moves the calling thread into the namespace: the sockets it makes
    /// afterwards, and the threads it spawns, live there.
    pub fn enter(&self) {
        let f = std::fs::File::open(format!("/run/netns/{}", self.name)).expect("opening the namespace");
        // SAFETY: setns on an fd we own; affects only this thread.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    }

    /// `TcpRetransSegs` of the namespace (its /proc/net/snmp).
    pub fn retrans_segs(&self) -> u64 {
        let snmp = self.exec(&["cat", "/proc/net/snmp"]);
        let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
        let (head, vals) = (tcp.next().expect("Tcp header"), tcp.next().expect("Tcp values"));
        let i = head.split_whitespace().position(|h| h == "RetransSegs").expect("RetransSegs");
        vals.split_whitespace().nth(i).unwrap().parse().unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// A process that serves and sends to itself over 127.0.0.1:`port` for
/// `secs`: its sockets are in its cgroup. It writes the sending socket's own
/// count of retransmitted segments (tcp_info's tcpi_total_retrans, at offset
/// 100) to `out`. Then 3 request/response turns on a second connection, so
/// that it has server requests and client calls too.
pub const BULK_PY: &str = r#"
import socket, struct, sys, threading, time
port, secs, out = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port)); s.listen()
def serve():
    c, _ = s.accept()
    while c.recv(65536): pass
    p, _ = s.accept()
    while p.recv(16): p.sendall(b"!")
t = threading.Thread(target=serve); t.start()
c = socket.create_connection(("127.0.0.1", port)); b = b"x" * 16384; t0 = time.time()
while time.time() - t0 < secs: c.sendall(b)
time.sleep(0.3)
info = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
open(out, "w").write(str(struct.unpack_from("I", info, 100)[0]))
c.close()
p = socket.create_connection(("127.0.0.1", port))
for _ in range(3):
    p.sendall(b"?"); p.recv(16)
p.close(); t.join()
"#;

/// A server whose `threads` threads all accept on one listening socket and
/// answer each 2-byte request after `sleep_ms`, on keep-alive connections;
/// with a fourth argument, each request waits that many ms unread first. It
/// listens on `KS_HOST` (127.0.0.1 by default; `::` is dual-stack, as a Go
/// or Java server listens, so IPv4 clients reach it on an IPv6 socket).
pub const POOL_PY: &str = r#"
import os, socket, sys, threading, time
port, threads, sleep = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 1e3
# optional: ms each request waits in the receive queue before it is read
queued = float(sys.argv[4]) / 1e3 if len(sys.argv) > 4 else 0.0
host = os.environ.get("KS_HOST", "127.0.0.1")
six = ":" in host
s = socket.create_server((host, port), family=socket.AF_INET6 if six else socket.AF_INET,
                         backlog=128, dualstack_ipv6=host == "::")
def serve():
    while True:
        c, _ = s.accept()
        while True:
            time.sleep(queued)
            d = c.recv(64)
            if not d:
                break
            time.sleep(sleep)
            c.sendall(b"ok\n")
        c.close()
for _ in range(threads):
    threading.Thread(target=serve, daemon=True).start()
threading.Event().wait()
"#;
