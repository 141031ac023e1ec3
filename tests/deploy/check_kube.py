#!/usr/bin/env python3
"""Checks on the rendered Kubernetes manifests (output of `kubectl kustomize`).

    check_kube.py ROOT RENDERED.yaml RENDERED-OTLP.yaml

- core objects validate (strict: unknown fields rejected) against the
  Kubernetes OpenAPI schemas of several versions (kubernetes-validate);
- the expected objects exist, wired together (Service -> DaemonSet pods,
  ServiceMonitor -> Service port);
- the DaemonSet's security posture and runtime settings;
- the PrometheusRule carries exactly the groups of deploy/prometheus/ksense-rules.yml;
- the OTLP component adds the OTLP endpoint flag and nothing else.
"""
import sys
from pathlib import Path

import kubernetes_validate as kv
import yaml

K8S_VERSIONS = ["1.28.0", "1.31.0", "1.34.0", kv.latest_version()]
CORE_KINDS = {"Namespace", "ServiceAccount", "DaemonSet", "Service"}
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
NAMESPACE = "ksense"
IMAGE = "ghcr.io/ksense/ksense:0.1.0"

root = Path(sys.argv[1])
docs = [d for d in yaml.safe_load_all(Path(sys.argv[2]).read_text()) if d]
otlp_docs = [d for d in yaml.safe_load_all(Path(sys.argv[3]).read_text()) if d]

errors = []


def check(cond, msg):
    if not cond:
        errors.append(msg)
    return cond


def one(kind, ds=None):
    found = [d for d in (ds or docs) if d.get("kind") == kind]
    check(len(found) == 1, f"expected exactly one {kind}, found {len(found)}")
    return found[0] if found else {}


# ---- inventory and schemas --------------------------------------------------
kinds = {d["kind"] for d in docs}
check(kinds == CORE_KINDS | CRD_KINDS, f"rendered kinds {sorted(kinds)} != {sorted(CORE_KINDS | CRD_KINDS)}")
for d in docs:
    name = f"{d['kind']}/{d['metadata']['name']}"
    if d["kind"] != "Namespace":
        check(d["metadata"].get("namespace") == NAMESPACE, f"{name}: not in namespace {NAMESPACE}")
    if d["kind"] in CORE_KINDS:
        for v in K8S_VERSIONS:
            try:
                kv.validate(d, v, strict=True)
            except kv.ValidationError as e:
                path = "/".join(str(p) for p in e.path)
                errors.append(f"{name}: invalid for Kubernetes {v} at {path}: {e.message}")
            except kv.SchemaNotFoundError as e:
                errors.append(f"{name}: no schema for Kubernetes {v}: {e}")

ns = one("Namespace")
sa = one("ServiceAccount")
ds = one("DaemonSet")
svc = one("Service")
sm = one("ServiceMonitor")
pr = one("PrometheusRule")
check(ns.get("metadata", {}).get("name") == NAMESPACE, "Namespace name")

# ---- DaemonSet --------------------------------------------------------------
pod = ds["spec"]["template"]["spec"]
pod_labels = ds["spec"]["template"]["metadata"]["labels"]
sel = ds["spec"]["selector"]["matchLabels"]
check(all(pod_labels.get(k) == v for k, v in sel.items()), "DaemonSet selector does not match its pod labels")
check(pod.get("serviceAccountName") == sa.get("metadata", {}).get("name"), "pod does not use the ServiceAccount")
check({"operator": "Exists"} in pod.get("tolerations", []), "no catch-all toleration (operator: Exists)")
for hk in ("hostPID", "hostNetwork", "hostIPC"):
    check(not pod.get(hk, False), f"pod sets {hk}")

containers = pod["containers"]
check(len(containers) == 1, "expected one container")
c = containers[0]
check(c.get("image") == IMAGE, f"image {c.get('image')!r} != {IMAGE}")
sc = c.get("securityContext", {})
check(sc.get("privileged") is False, "container must set privileged: false")
check(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation must be false")
check(sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem must be true")
caps = sc.get("capabilities", {})
check(caps.get("drop") == ["ALL"], f"capabilities.drop {caps.get('drop')} != [ALL]")
add = set(caps.get("add", []))
check({"BPF", "PERFMON"} <= add, f"capabilities.add {sorted(add)} lacks BPF/PERFMON")
check(add <= {"BPF", "PERFMON", "SYS_RESOURCE"}, f"capabilities.add has extras: {sorted(add - {'BPF', 'PERFMON', 'SYS_RESOURCE'})}")
check("SYS_ADMIN" not in add, "SYS_ADMIN must not be added")
pod_sc = pod.get("securityContext", {})
check(not pod_sc.get("privileged"), "pod securityContext privileged")

ports = {p["name"]: p for p in c.get("ports", [])}
check(ports.get("metrics", {}).get("containerPort") == 9827, "container port metrics/9827 missing")
for probe in ("livenessProbe", "readinessProbe"):
    p = c.get(probe)
    if check(p is not None, f"{probe} missing"):
        hg = p.get("httpGet", {})
        check(hg.get("path") in ("/", "/metrics"), f"{probe} path {hg.get('path')!r} not / or /metrics")
        check(hg.get("port") in ("metrics", 9827), f"{probe} port {hg.get('port')!r} not the metrics port")
res = c.get("resources", {})
for k in ("requests", "limits"):
    check({"cpu", "memory"} <= set(res.get(k, {})), f"resources.{k} must set cpu and memory")

env = {e["name"]: e for e in c.get("env", [])}
# ksense reads these two names (src/exporters/otlp/config.rs) for its OTLP resource.
check(env.get("K8S_NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName",
      "K8S_NODE_NAME not from spec.nodeName")
check(env.get("K8S_POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
      "K8S_POD_NAME not from metadata.name")
args = c.get("args", [])
check("--model.state-file=/var/lib/ksense/baseline.json" in args, "state file flag not pointing into /var/lib/ksense")
check(not any(a.startswith("--otlp") for a in args), "base install must not enable OTLP")

volumes = {v["name"]: v for v in pod.get("volumes", [])}
mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}


def host_mount(path, read_only):
    m = mounts.get(path)
    if not check(m is not None, f"no volumeMount at {path}"):
        return
    v = volumes.get(m["name"], {})
    check(v.get("hostPath", {}).get("path") == path, f"{path} is not mounted from hostPath {path}")
    check(bool(m.get("readOnly", False)) == read_only,
          f"{path} must be mounted {'read-only' if read_only else 'read-write'}")


host_mount("/sys/kernel/btf", True)
host_mount("/sys/fs/cgroup", True)
host_mount("/var/log/pods", True)
host_mount("/var/log/containers", True)
host_mount("/var/lib/ksense", False)
state = volumes.get(mounts.get("/var/lib/ksense", {}).get("name"), {})
check(state.get("hostPath", {}).get("type") == "DirectoryOrCreate", "state hostPath should be DirectoryOrCreate")
host_paths = {v["hostPath"]["path"] for v in volumes.values() if "hostPath" in v}
check(host_paths == {"/sys/kernel/btf", "/sys/fs/cgroup", "/var/lib/ksense", "/var/log/pods", "/var/log/containers"},
      f"unexpected hostPaths: {sorted(host_paths)}")
check(not any(p.startswith("/sys/kernel/debug") for p in host_paths), "debugfs must not be mounted")

# ---- Service and ServiceMonitor --------------------------------------------
svc_ports = {p.get("name"): p for p in svc["spec"]["ports"]}
check(svc_ports.get("metrics", {}).get("port") == 9827, "Service port 9827 named metrics missing")
check(svc_ports.get("metrics", {}).get("targetPort") in ("metrics", 9827), "Service targetPort is not the metrics port")
check(all(pod_labels.get(k) == v for k, v in svc["spec"]["selector"].items()), "Service selector does not match pods")
sm_sel = sm["spec"]["selector"]["matchLabels"]
check(all(svc["metadata"].get("labels", {}).get(k) == v for k, v in sm_sel.items()),
      "ServiceMonitor selector does not match the Service labels")
eps = sm["spec"]["endpoints"]
check(any(e.get("port") == "metrics" for e in eps), "ServiceMonitor endpoint is not port 'metrics'")
check(any(r.get("targetLabel") == "node" and r.get("sourceLabels") == ["__meta_kubernetes_pod_node_name"]
          for e in eps for r in e.get("relabelings", [])),
      "ServiceMonitor does not set the node label from __meta_kubernetes_pod_node_name")

# ---- PrometheusRule == deploy/prometheus/ksense-rules.yml ------------------
rules = yaml.safe_load((root / "deploy/prometheus/ksense-rules.yml").read_text())
if not check(pr.get("spec", {}).get("groups") == rules["groups"],
             "PrometheusRule groups differ from deploy/prometheus/ksense-rules.yml "
             "(run deploy/kubernetes/sync-prometheusrule.py)"):
    pass

# ---- OTLP component ---------------------------------------------------------
ods = one("DaemonSet", otlp_docs)
oargs = ods.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [{}])[0].get("args", [])
check(oargs == args + ["--otlp.endpoint=http://otel-collector:4317"],
      f"OTLP overlay args {oargs} != base args + --otlp.endpoint")
for d in otlp_docs:
    if d["kind"] in CORE_KINDS:
        try:
            kv.validate(d, kv.latest_version(), strict=True)
        except kv.ValidationError as e:
            errors.append(f"OTLP overlay {d['kind']}: {e.message}")
check(len(otlp_docs) == len(docs), "OTLP overlay renders a different set of objects")

for e in errors:
    print("FAIL:", e)
print(f"check_kube: {len(docs)} objects, Kubernetes {', '.join(K8S_VERSIONS)}, {len(errors)} problems")
sys.exit(1 if errors else 0)
