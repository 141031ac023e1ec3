#!/usr/bin/env python3
"""BPF run time per request: nginx (1 worker, CPU 1) under wrk (1 thread, 32 connections, CPU 0)
in a namespace for 3 s, with the default ksense: each program's runs and run time from
ksense_bpf_program_runs_total / _run_seconds_total, divided by wrk's requests.

    sudo bench/per-request.py [KSENSE_BINARY]   (default target/release/ksense)
"""
import os, sys, subprocess, time, re, tempfile, signal, urllib.request
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "qos"))
from qos import Netns, make_site, wait_url_in
KS = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "target", "release", "ksense")
def scrape(port):
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
def progs(text):
    runs, secs = {}, {}
    for l in text.splitlines():
        m = re.match(r'ksense_bpf_program_runs_total\{program="(\w+)"\} (\S+)', l)
        if m: runs[m.group(1)] = float(m.group(2))
        m = re.match(r'ksense_bpf_program_run_seconds_total\{program="(\w+)"\} (\S+)', l)
        if m: secs[m.group(1)] = float(m.group(2))
    return runs, secs
if subprocess.run(["pgrep", "-x", "ksense"], capture_output=True).returncode == 0:
    sys.exit("per-request.py: another ksense is running; its programs would count here too")
d = tempfile.mkdtemp(); os.chmod(d, 0o755)
conf = make_site(d, 8080, 1)
ns = Netns(); port = 19827
ks = subprocess.Popen([KS, "--web.listen-address", f"127.0.0.1:{port}", "--model.state-file", d + "/b.json", "--bpf.stats"], stderr=subprocess.DEVNULL)
time.sleep(3)
ng = subprocess.Popen(ns.cmd(["taskset", "-c", "1", "nginx", "-c", conf, "-g", "daemon off;"]), start_new_session=True)
wait_url_in(ns, "http://127.0.0.1:8080/static.html", "nginx")
a = progs(scrape(port))
out = subprocess.run(ns.cmd(["taskset", "-c", "0", "wrk", "-t1", "-c32", "-d3s", "http://127.0.0.1:8080/static.html"]), capture_output=True, text=True).stdout
b = progs(scrape(port))
n = float(re.search(r"(\d+) requests in", out).group(1))
tot = 0
for p in b[0]:
    r = (b[0][p] - a[0].get(p, 0)) / n; t = (b[1][p] - a[1].get(p, 0)) / n * 1e9
    tot += t
    if r > 0.01: print(f"{p:22} runs/req {r:6.2f}  ns/run {t / max(r, 1e-9):7.1f}  ns/req {t:7.1f}")
print(f"requests {n:.0f}; BPF ns per request {tot:.0f}")
os.killpg(ng.pid, signal.SIGTERM); ng.wait(); ks.send_signal(signal.SIGTERM); ks.wait(); ns.delete()
