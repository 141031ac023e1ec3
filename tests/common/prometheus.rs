//! A real Prometheus server (Debian's `prometheus`) for the tests that check
//! what ksense's series look like once scraped and queried.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Prometheus {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes one target every second as job `ksense`.
    pub fn start(target_port: u16, native: bool) -> Prometheus {
        Self::start_config(
            &format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: ksense\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"),
            native,
        )
    }

    /// With this prometheus.yml (relative paths in it are from the test's
    /// working directory: give absolute ones).
    pub fn start_config(yml: &str, native: bool) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(&cfg, yml).unwrap();
        let port = super::free_port();
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if native {
            cmd.arg("--enable-feature=native-histograms");
        }
        let child = cmd.spawn().expect("prometheus (apt-get install prometheus)");
        Prometheus { child, port, _dir: dir }
    }

    /// One instant query: its `data.result`, or why there is none.
    pub fn query(&self, q: &str) -> Result<serde_json::Value, String> {
        let r = ureq::get(&format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .query("query", q)
            .call()
            .map_err(|e| e.to_string())?;
        let v: serde_json::Value = serde_json::from_str(&r.into_string().map_err(|e| e.to_string())?).unwrap();
        if v["status"] != "success" {
            return Err(v.to_string());
        }
        Ok(v["data"]["result"].clone())
    }

    /// Polls an instant query until `done` accepts its result.
    pub fn query_until_with(
        &self,
        q: &str,
        timeout: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let t0 = Instant::now();
        let mut last = serde_json::Value::Null;
        while t0.elapsed() < timeout {
            match self.query(q) {
                Ok(r) if done(&r) => return r,
                Ok(r) => last = r,
                Err(e) => last = serde_json::Value::String(e),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("query {q:?} did not give what was awaited in {timeout:?}: {last}");
    }

    /// Polls an instant query until it returns a non-empty vector.
    pub fn query_until(&self, q: &str, timeout: Duration) -> serde_json::Value {
        self.query_until_with(q, timeout, |r| r.as_array().is_some_and(|a| !a.is_empty()))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
