//! ksense served in-process from a fake source (`probes::fake`): the HTTP
//! server, TLS, basic auth, the encoders and the OTLP push exactly as the
//! binary runs them (`app::serve_with`), without root or BPF. Its logs are
//! captured per instance (the runtime runs on one thread, whose logs go to
//! this instance's buffer), and `stop` is the SIGTERM path.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use ksense::app::{self, Sources};
use ksense::config::{Cli, Config};
use ksense::probes::fake::Fake;

pub struct InProcess {
    pub port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    logs: Logs,
    pub dir: tempfile::TempDir,
}

/// How serving ended, shown like an exit status.
#[derive(Debug)]
pub struct Exit(pub Result<(), String>);

impl Exit {
    pub fn success(&self) -> bool {
        self.0.is_ok()
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Ok(()) => f.write_str("ok"),
            Err(e) => write!(f, "error: {e}"),
        }
    }
}

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

impl InProcess {
    /// `args` are ksense's flags (the listen address and state file are set
    /// here). Returns once the port accepts connections.
    pub fn start(args: &[&str]) -> InProcess {
        Self::start_with_env(args, &[])
    }

    /// With these environment variables instead of the process's (OTEL_*, K8S_*).
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("baseline.json");
        let argv = ["ksense", "--model.state-file", state.to_str().unwrap()].into_iter().chain(args.iter().copied());
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let cfg = Config::load_with_env(Cli::try_parse_from(argv).expect("flags"), &lookup).expect("configuration");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let logs = Logs::default();
        let sink = logs.clone();
        let thread = std::thread::spawn(move || {
            let _logs = ksense::logging::capture_thread(sink);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                let fake = Arc::new(Fake::default());
                let sources =
                    Sources { source: fake.clone(), collectors: vec![fake], attach_mode: "fake", workloads: None };
                let listener = tokio::net::TcpListener::from_std(listener)?;
                app::serve_with(cfg, sources, listener, async {
                    let _ = rx.await;
                })
                .await
            })
        });
        let k = InProcess { port, stop: Some(tx), thread: Some(thread), logs, dir };
        let t0 = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(10), "in-process ksense did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        k
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn scrape(&self) -> String {
        ureq::get(&self.url("/metrics")).call().unwrap().into_string().unwrap()
    }

    /// The logs so far.
    pub fn logs(&self) -> String {
        String::from_utf8_lossy(&self.logs.0.lock().unwrap()).into_owned()
    }

    /// Shuts down as SIGTERM does: how serving ended, and the logs.
    pub fn stop(mut self) -> (Exit, String) {
        let exit = self.shutdown();
        (exit, self.logs())
    }

    fn shutdown(&mut self) -> Exit {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        Exit(match self.thread.take() {
            Some(t) => t.join().expect("the serving thread panicked").map_err(|e| format!("{e:#}")),
            None => Ok(()),
        })
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
