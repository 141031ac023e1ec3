//! kill -9 at any moment while the baseline is being written never leaves a
//! corrupt or half-written state file: a child process saves baselines in a
//! loop through the real `Baseline::save`, it is SIGKILLed at random
//! moments, and every time the file loads as one complete baseline. No root
//! needed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ksense::model::{self, Baseline, Regularisation};

const FEATURES: usize = 4;
const GENERATIONS: usize = 40;
const ENV: &str = "KSENSE_KILL9_STATE_FILE";

fn names() -> Vec<String> {
    (0..FEATURES).map(|i| format!("f{i}")).collect()
}

/// Baseline number `g`: `g + 6` samples, so the sample count tells which one
/// was loaded, and the mean must then match exactly what `g` computes.
fn baseline(g: usize) -> Baseline {
    let samples: Vec<Vec<f64>> = (0..g + 6)
        .map(|i| (0..FEATURES).map(|j| ((i * 7 + j * 13 + g) % 17) as f64 + 0.25 * j as f64).collect())
        .collect();
    Baseline::from_samples(names(), &samples, Regularisation::Ridge, 1_700_000_000 + g as u64).unwrap()
}

/// The writer, run in a child process (this test binary re-executed with
/// the environment variable set); a no-op in a normal test run.
#[test]
fn kill9_writer_child() {
    let Ok(path) = std::env::var(ENV) else { return };
    let all: Vec<Baseline> = (0..GENERATIONS).map(baseline).collect();
    println!("ready");
    for g in (0..GENERATIONS).cycle() {
        all[g].save(Path::new(&path)).unwrap();
    }
}

#[test]
fn kill9_during_save_never_leaves_a_corrupt_state() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("baseline.json");
    let expected: Vec<Baseline> = (0..GENERATIONS).map(baseline).collect();
    expected[0].save(&path).unwrap();
    let (mut mid_write, mut loaded) = (0, std::collections::BTreeSet::new());
    let kills = 150;
    for i in 0..kills {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["kill9_writer_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until it writes, then kill it a random moment later.
        let mut buf = [0u8; 64];
        let _ = std::io::Read::read(child.stdout.as_mut().unwrap(), &mut buf);
        std::thread::sleep(Duration::from_micros(200 + (i * 7919 % 20_000) as u64));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        if std::fs::read_dir(dir.path()).unwrap().flatten().any(|e| e.file_name().to_string_lossy().contains(".tmp-")) {
            mid_write += 1; // killed between creating the temporary file and renaming it
        }
        let b = model::load(&path, &names()).unwrap_or_else(|e| panic!("kill {i}: the state file does not load: {e}"));
        let g = b.samples() - 6;
        assert!(g < GENERATIONS, "kill {i}: unknown baseline with {} samples", b.samples());
        // Bit for bit: the state file's floats parse back exactly.
        let same = b.mean().iter().zip(expected[g].mean().iter()).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "kill {i}: baseline {g} loaded with another mean");
        assert_eq!(b.created_unix(), expected[g].created_unix());
        loaded.insert(g);
    }
    println!("{kills} kills: {mid_write} landed mid-write, {} different baselines loaded", loaded.len());
    assert!(mid_write > 0, "no kill landed inside a write: the test proves nothing");
    assert!(loaded.len() > 1, "the writer never completed a save");
    // The next save (another process) clears the temporary files of the dead writers.
    expected[1].save(&path).unwrap();
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(left.is_empty(), "stale temporary files: {left:?}");
}
