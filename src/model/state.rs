//! Persistence of the frozen baseline, so a restart does not need a new
//! warm-up. JSON, written atomically (temp file + fsync + rename + dir fsync)
//! so a crash leaves either the old file or the new one, never half of one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use super::baseline::{Baseline, BaselineError, Regularisation};

/// Format version written by this build; any other version is refused.
pub const STATE_VERSION: u32 = 4;
// 2: the model works on ln(1 + µs) features; 3: rates on ln(1 + events/s);
// 4: an interval without events of a latency is not measured, where it was 0
// (a version 3 baseline of an idle node holds a round-trip time of 0 s).

/// Why a state file could not be used. The distinction tells the caller what
/// to do: NotFound → calibrate; Corrupt/Version → set the file aside and
/// calibrate; Mismatch → the feature set changed, calibrate anew.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {0} not found")]
    NotFound(PathBuf),
    #[error("state file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("state file {path} has features {found:?}, expected {expected:?}")]
    Mismatch { path: PathBuf, found: Vec<String>, expected: Vec<String> },
    #[error("state file {path} has version {found}, expected {expected}")]
    Version { path: PathBuf, found: u64, expected: u32 },
    #[error("state file {path} is in use by process {pid} (another ksense with the same --model.state-file; its lock is {lock})")]
    Locked { path: PathBuf, lock: PathBuf, pid: String },
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// An exclusive `flock` on `<state file>.lock`, held for the life of the
/// process (the kernel drops it when the process ends, however it ends), so
/// two instances never overwrite each other's baseline. The lock file holds
/// the owner's pid, for the message the other one prints.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// How long a starting ksense waits for the state file's previous owner.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Takes the lock, waiting up to `wait` for a previous owner to exit (a
/// restarting service, a pod being replaced). `Ok(Err(why))`: no lock file
/// could be made or locked (no right to create files there, a read-only or
/// full file system, a symlink or non-file in its place, a file system
/// without locks); ksense runs on, and warns.
pub fn lock(path: &Path, wait: std::time::Duration) -> Result<Result<StateLock, io::Error>, StateError> {
    use std::os::unix::io::AsRawFd;
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock = PathBuf::from(name);
    use std::os::unix::fs::OpenOptionsExt;
    // The save creates the directory too: lock it from the first start on.
    if let Some(dir) = lock.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = fs::create_dir_all(dir);
    }
    // Never through a symlink (the pid is written into it, as root), and
    // only a regular file.
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&lock)
    {
        Ok(f) => f,
        Err(e) => return Ok(Err(e)),
    };
    match file.metadata() {
        Ok(m) if m.file_type().is_file() => {}
        Ok(_) => {
            return Ok(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", lock.display()),
            )))
        }
        Err(e) => return Ok(Err(e)),
    }
    let t0 = std::time::Instant::now();
    let mut told = false;
    loop {
        // SAFETY: flock on a file this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::WouldBlock {
            // No locks on this file system (some NFS and FUSE mounts).
            return Ok(Err(e));
        }
        let owner = || {
            let pid = fs::read_to_string(&lock).map(|s| s.trim().to_string()).unwrap_or_default();
            if pid.is_empty() {
                "unknown".to_string()
            } else {
                pid
            }
        };
        if t0.elapsed() >= wait {
            let pid = owner();
            return Err(StateError::Locked { path: path.to_path_buf(), lock, pid });
        }
        if !told {
            // Else a start behind a slow-exiting owner is silent for the whole wait.
            tracing::info!(path = %path.display(), pid = %owner(), wait = ?wait, "state file in use: waiting for its owner to exit");
            told = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = file.set_len(0);
    let _ = (&file).write_all(format!("{}\n", std::process::id()).as_bytes());
    Ok(Ok(StateLock { _file: file }))
}

/// The on-disk shape. Matrices are row-major `Vec<Vec<f64>>` (ndarray's
/// serde feature is not enabled, and this is easy to read by hand).
#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    features: Vec<String>,
    mean: Vec<f64>,
    covariance: Vec<Vec<f64>>,
    cholesky: Vec<Vec<f64>>,
    samples: usize,
    /// Per feature, the calibration samples that had events of it.
    measured: Vec<usize>,
    energy_k: Option<f64>,
    /// Added after version 1 shipped: absent in older files (then the
    /// chi-square reference is used), so no version bump.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    friction_p99: Option<f64>,
    regularisation: String,
    created_unix: u64,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io { path: path.to_path_buf(), source }
}

fn rows(a: &Array2<f64>) -> Vec<Vec<f64>> {
    a.rows().into_iter().map(|r| r.to_vec()).collect()
}

fn matrix(rows: &[Vec<f64>], d: usize, what: &str) -> Result<Array2<f64>, String> {
    if rows.len() != d || rows.iter().any(|r| r.len() != d) {
        return Err(format!("{what} is not {d}x{d}"));
    }
    Ok(Array2::from_shape_fn((d, d), |(i, j)| rows[i][j]))
}

impl Baseline {
    fn to_file(&self) -> StateFile {
        StateFile {
            version: STATE_VERSION,
            features: self.features.clone(),
            mean: self.mean.to_vec(),
            covariance: rows(&self.covariance),
            cholesky: rows(&self.cholesky),
            samples: self.samples,
            measured: self.measured.clone(),
            energy_k: self.energy_k,
            friction_p99: self.friction_p99,
            regularisation: self.regularisation.as_str().to_string(),
            created_unix: self.created_unix,
        }
    }

    /// Writes the baseline to `path` atomically, creating parent directories.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let mut json = serde_json::to_vec_pretty(&self.to_file())
            .map_err(|e| StateError::Io { path: path.to_path_buf(), source: io::Error::other(e) })?;
        json.push(b'\n');
        write_atomic(path, &json)
    }
}

/// A state file's JSON, once it is known to be of [`STATE_VERSION`]. The
/// version is read first, from a loose parse, so a future format is
/// reported as Version rather than as Corrupt.
fn read_versioned(path: &Path) -> Result<serde_json::Value, StateError> {
    let bytes = match crate::bounded_read::read(path, crate::bounded_read::MAX_STATE_BYTES) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StateError::NotFound(path.to_path_buf())),
        Err(e) => return Err(io_err(path)(e)),
    };
    let corrupt = |reason: String| StateError::Corrupt { path: path.to_path_buf(), reason };
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let version =
        value.get("version").and_then(|v| v.as_u64()).ok_or_else(|| corrupt("missing or invalid version".into()))?;
    if version != u64::from(STATE_VERSION) {
        return Err(StateError::Version { path: path.to_path_buf(), found: version, expected: STATE_VERSION });
    }
    Ok(value)
}

/// Loads and validates a baseline: version, feature list, dimensions,
/// finiteness, positive definiteness, and that the stored Cholesky factor
/// matches the one recomputed from the covariance.
pub fn load(path: &Path, expected_features: &[String]) -> Result<Baseline, StateError> {
    let value = read_versioned(path)?;
    let corrupt = |reason: String| StateError::Corrupt { path: path.to_path_buf(), reason };
    // NaN/Inf are written by serde_json as null, which fails here: Corrupt.
    let file: StateFile = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
    if file.features != expected_features {
        return Err(StateError::Mismatch {
            path: path.to_path_buf(),
            found: file.features,
            expected: expected_features.to_vec(),
        });
    }
    from_file(file).map_err(corrupt)
}

/// The checks of [`load`] past the version and the feature list.
fn from_file(file: StateFile) -> Result<Baseline, String> {
    let d = file.features.len();
    if file.mean.len() != d {
        return Err(format!("mean has {} values, expected {d}", file.mean.len()));
    }
    let covariance = matrix(&file.covariance, d, "covariance")?;
    let stored_chol = matrix(&file.cholesky, d, "cholesky")?;
    if !stored_chol.iter().all(|v| v.is_finite()) {
        return Err("non-finite value in cholesky".into());
    }
    let regularisation: Regularisation = file.regularisation.parse()?;
    // Shown as a date by `ksense check`: a time SystemTime cannot hold would panic there.
    if std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(file.created_unix)).is_none() {
        return Err(format!("created_unix {} is not a time", file.created_unix));
    }
    if let Some(f) = file.friction_p99 {
        if !(f.is_finite() && f > 0.0) {
            return Err(format!("friction_p99 {f} is not a positive number"));
        }
    }
    let mut baseline = Baseline::from_parts(
        file.features,
        Array1::from(file.mean),
        covariance,
        file.samples,
        file.energy_k,
        regularisation,
        file.created_unix,
    )
    .map_err(|e: BaselineError| e.to_string())?;
    baseline.friction_p99 = file.friction_p99;
    if file.measured.len() != d || file.measured.iter().any(|&m| m > file.samples) {
        return Err(format!(
            "measured has {} counts, expected {d}, none above the {} samples",
            file.measured.len(),
            file.samples
        ));
    }
    baseline.measured = file.measured;
    // The stored factor must be the factor of the stored covariance.
    let scale = baseline.cholesky.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let max_diff = baseline.cholesky.iter().zip(stored_chol.iter()).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    if max_diff > 1e-9 * scale {
        return Err(format!("cholesky factor does not match covariance (max diff {max_diff:e})"));
    }
    Ok(baseline)
}

/// The per-workload baselines (`victims`), beside the node's state file.
#[derive(Debug, Serialize)]
struct WorkloadsFile {
    version: u32,
    workloads: std::collections::BTreeMap<String, StateFile>,
}

/// Where the per-workload baselines of the node's state file `path` live:
/// `baseline.json` -> `baseline.workloads.json`, under the same lock.
pub fn workloads_path(path: &Path) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{stem}.workloads.json"))
}

/// Writes the per-workload baselines atomically.
pub fn save_workloads(path: &Path, baselines: &[(&str, &Baseline)]) -> Result<(), StateError> {
    let file = WorkloadsFile {
        version: STATE_VERSION,
        workloads: baselines.iter().map(|(k, b)| (k.to_string(), b.to_file())).collect(),
    };
    let mut json = serde_json::to_vec(&file)
        .map_err(|e| StateError::Io { path: path.to_path_buf(), source: io::Error::other(e) })?;
    json.push(b'\n');
    write_atomic(path, &json)
}

/// Loads the per-workload baselines with `expected_features`. A workload
/// whose entry fails a check is left out (it calibrates anew) and counted
/// in the second value; a bad file as a whole is an error, as for [`load`].
pub fn load_workloads(
    path: &Path,
    expected_features: &[String],
) -> Result<(std::collections::BTreeMap<String, Baseline>, usize), StateError> {
    let value = read_versioned(path)?;
    let corrupt = |reason: String| StateError::Corrupt { path: path.to_path_buf(), reason };
    // Each entry parsed on its own, so one damaged entry costs only itself.
    let entries: std::collections::BTreeMap<String, serde_json::Value> =
        serde_json::from_value(value.get("workloads").cloned().unwrap_or_default())
            .map_err(|e| corrupt(format!("workloads: {e}")))?;
    let mut bad = 0;
    let mut out = std::collections::BTreeMap::new();
    for (k, v) in entries {
        let f: Option<StateFile> = serde_json::from_value(v).ok();
        match f.filter(|f| f.features == expected_features).map(from_file) {
            Some(Ok(b)) => {
                out.insert(k, b);
            }
            _ => bad += 1,
        }
    }
    Ok((out, bad))
}

/// Moves a bad state file out of the way to `<path>.bad-<unix-ts>` (with a
/// `-N` suffix if that exists), keeping it for inspection. Returns the new path.
pub fn set_aside(path: &Path) -> Result<PathBuf, StateError> {
    // Only a file ksense could have written: never a directory or a device
    // (`/dev/null`) the path was pointed at (configuration refuses those too).
    match fs::symlink_metadata(path) {
        Ok(m) if !m.is_file() && !m.file_type().is_symlink() => {
            let what = crate::bounded_read::kind_of(m.file_type());
            let e = io::Error::new(io::ErrorKind::InvalidInput, format!("{what}, not a regular file: left as it is"));
            return Err(io_err(path)(e));
        }
        _ => {}
    }
    let ts = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let base = format!("{}.bad-{ts}", path.display());
    let mut target = PathBuf::from(&base);
    let mut n = 1;
    while target.exists() {
        target = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    fs::rename(path, &target).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            StateError::NotFound(path.to_path_buf())
        } else {
            io_err(path)(e)
        }
    })?;
    sync_parent(path).map_err(io_err(path))?;
    Ok(target)
}

/// Where `ksense recalibrate` asks the server that holds the state file's
/// lock to calibrate anew: `<state file>.recalibrate`, which the server
/// looks for at each model interval and removes.
fn recalibration_request_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".recalibrate");
    PathBuf::from(name)
}

/// Asks the running server to calibrate anew (see
/// [`recalibration_request_path`]). Never through a symlink.
pub fn request_recalibration(path: &Path) -> Result<PathBuf, StateError> {
    use std::os::unix::fs::OpenOptionsExt;
    let req = recalibration_request_path(path);
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&req)
        .map_err(io_err(&req))?;
    Ok(req)
}

/// Takes a pending recalibration request: true when there was one.
pub fn take_recalibration_request(path: &Path) -> bool {
    fs::remove_file(recalibration_request_path(path)).is_ok()
}

/// What a recalibration deletes: the node's saved baseline and the
/// workloads'. Returns those there were.
pub fn discard_all(path: &Path) -> Result<Vec<PathBuf>, StateError> {
    let mut gone = Vec::new();
    for p in [path.to_path_buf(), workloads_path(path)] {
        if discard(&p)? {
            gone.push(p);
        }
    }
    Ok(gone)
}

/// Deletes the state file. Ok(false) if there was none.
fn discard(path: &Path) -> Result<bool, StateError> {
    match fs::remove_file(path) {
        Ok(()) => {
            sync_parent(path).map_err(io_err(path))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn sync_parent(path: &Path) -> io::Result<()> {
    File::open(parent_of(path))?.sync_all()
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StateError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = parent_of(path);
    fs::create_dir_all(dir).map_err(io_err(path))?;
    let name = path
        .file_name()
        .ok_or_else(|| StateError::Io {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "state path has no file name"),
        })?
        .to_string_lossy()
        .into_owned();
    remove_stale_temps(dir, &name);
    // Same directory, so the rename is atomic (same filesystem).
    let tmp = dir.join(format!(".{name}.tmp-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    let result = (|| -> io::Result<()> {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

/// Temporary files left by a process killed mid-write (`kill -9`, power
/// loss): `.<name>.tmp-<pid>-<n>` whose pid is not running any more. They are
/// never the state itself (only a completed rename makes a file the state),
/// so removing them loses nothing.
fn remove_stale_temps(dir: &Path, name: &str) {
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(rest) = file.to_str().and_then(|f| f.strip_prefix(&prefix)) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_owner_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("baseline.json");
        let held = lock(&p, std::time::Duration::ZERO).unwrap().expect("a lock in a writable directory");
        assert_eq!(
            fs::read_to_string(dir.path().join("baseline.json.lock")).unwrap(),
            format!("{}\n", std::process::id())
        );
        let t0 = std::time::Instant::now();
        match lock(&p, std::time::Duration::from_millis(300)) {
            Err(StateError::Locked { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("second owner: {other:?}"),
        }
        assert!(t0.elapsed() >= std::time::Duration::from_millis(300), "it waited for the owner first");
        drop(held);
        assert!(lock(&p, std::time::Duration::ZERO).unwrap().is_ok(), "free again once the owner is gone");
        // The directory is made, as the first save would.
        assert!(lock(&dir.path().join("new/dir/b.json"), std::time::Duration::ZERO).unwrap().is_ok());
        // A symlink planted as the lock file is not followed (nor written through).
        let target = dir.path().join("precious");
        fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("s.json.lock")).unwrap();
        assert!(lock(&dir.path().join("s.json"), std::time::Duration::ZERO).unwrap().is_err());
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
    }
    use crate::model::testutil::{correlated_samples, names};

    /// Bit for bit: serde_json parses floats exactly (its `float_roundtrip`
    /// feature), so a restart scores with the very baseline it saved.
    fn assert_same(a: &Baseline, b: &Baseline) {
        fn bits<'a>(x: impl IntoIterator<Item = &'a f64>) -> Vec<u64> {
            x.into_iter().map(|v| v.to_bits()).collect()
        }
        assert_eq!(a.features, b.features);
        assert_eq!(a.samples, b.samples);
        assert_eq!(a.measured, b.measured);
        assert_eq!(a.regularisation, b.regularisation);
        assert_eq!(a.created_unix, b.created_unix);
        assert_eq!(a.energy_k.map(f64::to_bits), b.energy_k.map(f64::to_bits));
        assert_eq!(a.friction_p99.map(f64::to_bits), b.friction_p99.map(f64::to_bits));
        for (x, y) in [(&a.mean, &b.mean), (&a.std, &b.std)] {
            assert_eq!(bits(x.iter()), bits(y.iter()), "{x} vs {y}");
        }
        for (x, y) in [(&a.covariance, &b.covariance), (&a.cholesky, &b.cholesky)] {
            assert_eq!(x.dim(), y.dim());
            assert_eq!(bits(x.iter()), bits(y.iter()), "{x} vs {y}");
        }
    }

    fn baseline() -> Baseline {
        let mut samples = correlated_samples(1, 50);
        // One feature without events in some intervals, one in all but 5 (left out).
        for (i, s) in samples.iter_mut().enumerate() {
            if i % 4 == 0 {
                s[1] = f64::NAN;
            }
            if i >= 5 {
                s[3] = f64::NAN;
            }
        }
        let mut b = Baseline::from_samples(names(4), &samples, Regularisation::LedoitWolf, 1_700_000_000).unwrap();
        b.energy_k = Some(0.123);
        // A value the default parser reads back 1 ulp off (seen in CI).
        b.friction_p99 = Some(1.7173072397820097);
        b
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// A saved baseline with bytes overwritten, cut short or spliced in:
        /// loading gives a baseline that passes every check or an error,
        /// never a panic (the robustness suite for the state file).
        #[test]
        fn damaged_state_files_load_or_fail_cleanly(
            edits in proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>()), 0..8),
            cut in proptest::option::of(0usize..4096),
            splice in proptest::option::of((0usize..4096, "[\\[\\]{}\",:0-9eE.+-]{0,12}")),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("baseline.json");
            baseline().save(&path).unwrap();
            let mut bytes = fs::read(&path).unwrap();
            for (at, b) in edits {
                let n = bytes.len();
                bytes[at % n] = b;
            }
            if let Some((at, text)) = splice {
                let at = at % bytes.len();
                bytes.splice(at..at, text.bytes());
            }
            if let Some(c) = cut {
                bytes.truncate(c % (bytes.len() + 1));
            }
            fs::write(&path, &bytes).unwrap();
            if let Ok(b) = load(&path, &names(4)) {
                proptest::prop_assert!(b.mean.iter().all(|v| v.is_finite()));
                proptest::prop_assert_eq!(b.cholesky.dim(), (4, 4));
            }
        }
    }

    #[test]
    fn roundtrip_is_equal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/baseline.json");
        let b = baseline();
        b.save(&path).unwrap();
        let l = load(&path, &names(4)).unwrap();
        assert_same(&l, &b);
        assert_eq!(l.measured(), &[50, 37, 50, 5]);
        assert!(!l.is_measured(3) && l.is_measured(1));
        // Overwriting works and also round-trips.
        let mut b2 = b.clone();
        b2.energy_k = None;
        b2.save(&path).unwrap();
        assert_same(&load(&path, &names(4)).unwrap(), &b2);
    }

    /// The per-workload file: round trip, an entry for other features or
    /// damaged is left out and counted, another version is refused whole.
    #[test]
    fn workload_baselines_round_trip_and_bad_entries_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = workloads_path(&dir.path().join("baseline.json"));
        assert_eq!(path, dir.path().join("baseline.workloads.json"));
        assert!(matches!(load_workloads(&path, &names(4)), Err(StateError::NotFound(_))));
        let (a, b) = (baseline(), baseline());
        save_workloads(&path, &[("/a", &a), ("/b", &b)]).unwrap();
        let (m, bad) = load_workloads(&path, &names(4)).unwrap();
        assert_eq!((m.len(), bad), (2, 0));
        assert_same(&m["/a"], &a);
        edit(&path, |v| v["workloads"]["/b"]["mean"][0] = serde_json::Value::Null);
        let (m, bad) = load_workloads(&path, &names(4)).unwrap();
        assert_eq!((m.keys().collect::<Vec<_>>(), bad), (vec![&"/a".to_string()], 1));
        let (m, bad) = load_workloads(&path, &names(3)).unwrap();
        assert_eq!((m.len(), bad), (0, 2), "other features: every entry left out");
        edit(&path, |v| v["version"] = serde_json::json!(1));
        assert!(matches!(load_workloads(&path, &names(4)), Err(StateError::Version { .. })));
    }

    /// A state file from before `friction_p99` was stored still loads, and
    /// its interference reference is the chi-square one.
    #[test]
    fn older_files_without_friction_p99_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.json");
        let b = baseline();
        b.save(&path).unwrap();
        assert_eq!(Some(load(&path, &names(4)).unwrap().friction_reference()), b.friction_p99);
        edit(&path, |v| {
            v.as_object_mut().unwrap().remove("friction_p99");
        });
        let l = load(&path, &names(4)).unwrap();
        assert_eq!(l.friction_p99, None);
        assert_eq!(l.friction_reference(), crate::model::interference::chi_square_reference(4));
    }

    #[test]
    fn missing_file_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(load(&dir.path().join("x.json"), &names(4)), Err(StateError::NotFound(_))));
    }

    #[test]
    fn truncated_or_garbage_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.json");
        baseline().save(&path).unwrap();
        let full = fs::read(&path).unwrap();
        fs::write(&path, &full[..full.len() / 2]).unwrap();
        assert!(matches!(load(&path, &names(4)), Err(StateError::Corrupt { .. })));
        fs::write(&path, b"\x00\x01garbage").unwrap();
        assert!(matches!(load(&path, &names(4)), Err(StateError::Corrupt { .. })));
        fs::write(&path, b"").unwrap();
        assert!(matches!(load(&path, &names(4)), Err(StateError::Corrupt { .. })));
    }

    fn edit(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
        let mut v: serde_json::Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
        f(&mut v);
        fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
    }

    #[test]
    fn invalid_contents_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.json");
        type Edit = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: Vec<Edit> = vec![
            Box::new(|v| v["mean"] = serde_json::json!([1.0, 2.0])),
            Box::new(|v| v["mean"][0] = serde_json::Value::Null),
            Box::new(|v| v["covariance"][1] = serde_json::json!([1.0])),
            Box::new(|v| v["cholesky"][0][0] = serde_json::json!(123.0)),
            Box::new(|v| v["covariance"][0][0] = serde_json::json!(-5.0)),
            Box::new(|v| v["regularisation"] = serde_json::json!("magic")),
            Box::new(|v| v["energy_k"] = serde_json::json!(-1.0)),
            Box::new(|v| v["friction_p99"] = serde_json::json!(0.0)),
            Box::new(|v| v["friction_p99"] = serde_json::json!("x")),
            Box::new(|v| v["created_unix"] = serde_json::json!(u64::MAX)),
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("samples");
            }),
        ];
        for (i, c) in cases.iter().enumerate() {
            baseline().save(&path).unwrap();
            edit(&path, c);
            let r = load(&path, &names(4));
            assert!(matches!(r, Err(StateError::Corrupt { .. })), "case {i}: {r:?}");
        }
    }

    #[test]
    fn feature_list_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.json");
        baseline().save(&path).unwrap();
        let mut other = names(4);
        other.swap(0, 1);
        assert!(matches!(load(&path, &other), Err(StateError::Mismatch { .. })));
        assert!(matches!(load(&path, &names(3)), Err(StateError::Mismatch { .. })));
    }

    #[test]
    fn other_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.json");
        baseline().save(&path).unwrap();
        edit(&path, |v| v["version"] = serde_json::json!(99));
        assert!(matches!(load(&path, &names(4)), Err(StateError::Version { found: 99, .. })));
        edit(&path, |v| v["version"] = serde_json::json!("one"));
        assert!(matches!(load(&path, &names(4)), Err(StateError::Corrupt { .. })));
    }

    #[test]
    fn save_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.json");
        for _ in 0..3 {
            baseline().save(&path).unwrap();
        }
        let entries: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(entries, vec![std::ffi::OsString::from("b.json")]);
    }

    #[test]
    fn failed_save_leaves_target_and_no_temp() {
        // The target is a directory: the rename fails; the temp file must go.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.json");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("keep"), b"x").unwrap();
        assert!(matches!(baseline().save(&path), Err(StateError::Io { .. })));
        let entries: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(entries, vec![std::ffi::OsString::from("b.json")]);
    }

    #[test]
    fn set_aside_renames_and_discard_removes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.json");
        fs::write(&path, b"garbage").unwrap();
        let moved = set_aside(&path).unwrap();
        assert!(!path.exists());
        assert_eq!(fs::read(&moved).unwrap(), b"garbage");
        let name = moved.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("b.json.bad-"), "{name}");
        // A second one in the same second gets a distinct name.
        fs::write(&path, b"again").unwrap();
        let moved2 = set_aside(&path).unwrap();
        assert_ne!(moved, moved2);
        assert_eq!(fs::read(&moved2).unwrap(), b"again");
        assert!(matches!(set_aside(&path), Err(StateError::NotFound(_))));
        let e = set_aside(dir.path()).unwrap_err().to_string();
        assert!(e.contains("a directory") && dir.path().is_dir(), "{e}");

        baseline().save(&path).unwrap();
        assert!(discard(&path).unwrap());
        assert!(!path.exists());
        assert!(!discard(&path).unwrap());
    }
}
