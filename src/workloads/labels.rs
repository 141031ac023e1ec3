//! What a cgroup path says about the workload in it: a Kubernetes pod and
//! container (kubelet's systemd and cgroupfs drivers; containerd, CRI-O,
//! Docker naming), a container outside Kubernetes, or a systemd unit. Pure
//! string work; names that paths do not carry come from [`KubeletLogs`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The labels of one workload series besides `workload` (its cgroup path).
/// Empty means absent: encoders get only the non-empty ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub pod_uid: String,
    pub container_id: String,
    pub unit: String,
}

impl Labels {
    /// (name, value) of the non-empty labels, in a fixed order.
    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("namespace", self.namespace.as_str()),
            ("pod", self.pod.as_str()),
            ("container", self.container.as_str()),
            ("pod_uid", self.pod_uid.as_str()),
            ("container_id", self.container_id.as_str()),
            ("unit", self.unit.as_str()),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
    }

    /// A Kubernetes workload whose names are not all known yet.
    pub fn wants_names(&self) -> bool {
        !self.pod_uid.is_empty()
            && (self.pod.is_empty() || (!self.container_id.is_empty() && self.container.is_empty()))
    }
}

/// Labels from a cgroup path relative to the v2 root (`/a/b.slice/c.scope`).
pub fn parse(path: &str) -> Labels {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    // Kubernetes: a pod cgroup below a kubepods one (kubepods.slice,
    // kubepods-burstable.slice, /kubepods/besteffort, kubelet-kubepods.slice, ...).
    for (i, c) in comps.iter().enumerate() {
        let under_kubepods = comps[..=i].iter().any(|a| a.starts_with("kubepods") || a.contains("-kubepods"));
        if let (true, Some(uid)) = (under_kubepods, pod_uid(c)) {
            let container_id = comps.get(i + 1).and_then(|n| container_id(n)).unwrap_or_default();
            return Labels { pod_uid: uid, container_id, ..Default::default() };
        }
    }
    // A container outside Kubernetes: docker-<id>.scope, libpod-<id>.scope, /docker/<id>.
    for (i, c) in comps.iter().enumerate().rev() {
        let scoped = c.ends_with(".scope") && RUNTIME_PREFIXES.iter().any(|p| c.starts_with(p));
        let cgroupfs = i > 0
            && matches!(comps[i - 1], "docker" | "containerd" | "libpod_parent" | "machine")
            && is_container_id(c);
        if scoped || cgroupfs {
            if let Some(id) = container_id(c) {
                return Labels { container_id: id, ..Default::default() };
            }
        }
    }
    // systemd: the deepest unit (a service in a user's manager counts, not the manager).
    let unit = comps.iter().rev().find(|c| UNIT_SUFFIXES.iter().any(|s| c.ends_with(s) && c.len() > s.len()));
    Labels { unit: unit.map(|u| u.to_string()).unwrap_or_default(), ..Default::default() }
}

const UNIT_SUFFIXES: [&str; 5] = [".service", ".scope", ".socket", ".mount", ".swap"];

/// Container runtimes' systemd scope prefixes, longest first.
const RUNTIME_PREFIXES: [&str; 7] =
    ["cri-containerd-", "crio-conmon-", "libpod-conmon-", "crio-", "cri-o-", "docker-", "libpod-"];

/// `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid_with_underscores>.slice`
/// (systemd). UIDs are 36-character UUIDs, or 32 hex digits for static pods.
fn pod_uid(c: &str) -> Option<String> {
    let c = c.strip_suffix(".slice").unwrap_or(c);
    let start = if c.starts_with("pod") { 0 } else { c.rfind("-pod")? + 1 };
    let uid = c[start + 3..].replace('_', "-");
    let uuid = uid.len() == 36
        && uid
            .char_indices()
            .all(|(i, ch)| if matches!(i, 8 | 13 | 18 | 23) { ch == '-' } else { ch.is_ascii_hexdigit() });
    (uuid || (uid.len() == 32 && is_hex(&uid))).then_some(uid)
}

/// The container id in `cri-containerd-<id>.scope`, `crio-<id>.scope`,
/// `docker-<id>.scope` (systemd) or a bare `<id>` (cgroupfs).
fn container_id(c: &str) -> Option<String> {
    let c = c.strip_suffix(".scope").unwrap_or(c);
    let id = RUNTIME_PREFIXES.iter().find_map(|p| c.strip_prefix(p)).unwrap_or(c);
    is_container_id(id).then(|| id.to_string())
}

fn is_container_id(s: &str) -> bool {
    s.len() >= 12 && is_hex(s)
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Pod and container names from the directories kubelet keeps for logs, so
/// no API server is needed: `<root>/pods/<namespace>_<pod>_<uid>/` and the
/// `<root>/containers/<pod>_<namespace>_<container>-<container id>.log`
/// symlinks. Names cannot contain `_` (DNS labels), so the split is exact.
#[derive(Debug, Default)]
pub struct KubeletLogs {
    root: PathBuf,
    pods: HashMap<String, (String, String)>,
    containers: HashMap<String, String>,
}

impl KubeletLogs {
    pub fn new(root: &Path) -> KubeletLogs {
        KubeletLogs { root: root.to_path_buf(), ..Default::default() }
    }

    /// Re-reads both directories; a missing one (no kubelet here) is empty.
    pub fn reload(&mut self) {
        self.pods.clear();
        self.containers.clear();
        for name in dir_names(&self.root.join("pods")) {
            if let [ns, pod, uid] = name.split('_').collect::<Vec<_>>()[..] {
                self.pods.insert(uid.to_string(), (ns.to_string(), pod.to_string()));
            }
        }
        for name in dir_names(&self.root.join("containers")) {
            let Some((rest, id)) = name.strip_suffix(".log").and_then(|n| n.rsplit_once('-')) else { continue };
            if let ([_pod, _ns, container], true) = (&rest.split('_').collect::<Vec<_>>()[..], is_container_id(id)) {
                self.containers.insert(id.to_string(), container.to_string());
            }
        }
    }

    /// Fills namespace, pod and container where known.
    pub fn name(&self, l: &mut Labels) {
        if let Some((ns, pod)) = self.pods.get(&l.pod_uid) {
            l.namespace.clone_from(ns);
            l.pod.clone_from(pod);
        }
        if let Some(c) = self.containers.get(&l.container_id) {
            l.container.clone_from(c);
        }
    }
}

fn dir_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0b8e2b0c-6a5d-4e4a-9d55-1f2e3d4c5b6a";
    const CID: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";

    fn k8s(uid: &str, cid: &str) -> Labels {
        Labels { pod_uid: uid.into(), container_id: cid.into(), ..Default::default() }
    }

    #[test]
    fn kubelet_systemd_driver() {
        let u = UID.replace('-', "_");
        for (path, want) in [
            (format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{CID}.scope"), k8s(UID, CID)),
            (format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/crio-{CID}.scope"), k8s(UID, CID)),
            (format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/crio-conmon-{CID}.scope"), k8s(UID, CID)),
            (format!("/kubepods.slice/kubepods-pod{u}.slice/docker-{CID}.scope"), k8s(UID, CID)),
            // kind, k3s in a container: kubelet's slices below another slice
            (format!("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{u}.slice/cri-containerd-{CID}.scope"), k8s(UID, CID)),
            // the pod cgroup itself, and a cgroup a container made inside its own
            (format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice"), k8s(UID, "")),
            (format!("/kubepods.slice/kubepods-pod{u}.slice/cri-containerd-{CID}.scope/init.scope"), k8s(UID, CID)),
        ] {
            assert_eq!(parse(&path), want, "{path}");
        }
    }

    #[test]
    fn kubelet_cgroupfs_driver() {
        for (path, want) in [
            (format!("/kubepods/burstable/pod{UID}/{CID}"), k8s(UID, CID)),
            (format!("/kubepods/besteffort/pod{UID}/{CID}"), k8s(UID, CID)),
            (format!("/kubepods/pod{UID}/{CID}"), k8s(UID, CID)),
            // a static pod's uid is a 32-digit hash
            (
                "/kubepods/burstable/pod6a3f0e1d2c3b4a5968778695a4b3c2d1/abc".to_string(),
                k8s("6a3f0e1d2c3b4a5968778695a4b3c2d1", ""),
            ),
        ] {
            assert_eq!(parse(&path), want, "{path}");
        }
    }

    #[test]
    fn outside_kubernetes() {
        let unit = |u: &str| Labels { unit: u.into(), ..Default::default() };
        let ctr = |c: &str| Labels { container_id: c.into(), ..Default::default() };
        assert_eq!(parse("/system.slice/nginx.service"), unit("nginx.service"));
        assert_eq!(parse("/user.slice/user-1000.slice/session-3.scope"), unit("session-3.scope"));
        assert_eq!(
            parse("/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo.service"),
            unit("app-foo.service")
        );
        assert_eq!(parse(&format!("/system.slice/docker-{CID}.scope")), ctr(CID));
        assert_eq!(parse(&format!("/machine.slice/libpod-{CID}.scope/container")), ctr(CID));
        assert_eq!(parse(&format!("/docker/{CID}")), ctr(CID));
        assert_eq!(parse("/"), Labels::default());
        assert_eq!(parse("/system.slice"), Labels::default());
        assert_eq!(parse("/my/own/group"), Labels::default());
        // A pod-like name outside kubepods is not a pod.
        assert_eq!(parse(&format!("/pod{UID}")), Labels::default());
        assert_eq!(
            parse("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podnot_a_uid.slice"),
            Labels::default()
        );
    }

    #[test]
    fn names_from_kubelet_log_dirs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(format!("pods/shop_cart-7d9f_{UID}/server"))).unwrap();
        std::fs::create_dir_all(dir.path().join("pods/not-a-pod-dir")).unwrap();
        std::fs::create_dir_all(dir.path().join("containers")).unwrap();
        std::fs::write(dir.path().join(format!("containers/cart-7d9f_shop_server-{CID}.log")), "").unwrap();
        std::fs::write(dir.path().join("containers/garbage.log"), "").unwrap();
        let mut k = KubeletLogs::new(dir.path());
        k.reload();
        let mut l = k8s(UID, CID);
        assert!(l.wants_names());
        k.name(&mut l);
        assert_eq!((l.namespace.as_str(), l.pod.as_str(), l.container.as_str()), ("shop", "cart-7d9f", "server"));
        assert!(!l.wants_names());
        let mut unknown = k8s("11111111-2222-3333-4444-555555555555", "");
        k.name(&mut unknown);
        assert!(unknown.pod.is_empty() && unknown.wants_names());
        // No kubelet at all: nothing, no error.
        let mut none = KubeletLogs::new(&dir.path().join("absent"));
        none.reload();
        assert_eq!(
            Labels { pod: "x".into(), ..Default::default() }.pairs().collect::<Vec<_>>(),
            vec![("pod", "x")],
            "empty labels are left out"
        );
    }
}
