//! ksense served in-process from a fake source (`probes::fake`): the HTTP
//! server, TLS, basic auth, the encoders and the OTLP push exactly as the
//! binary runs them (`app::serve_with`), without root or BPF.

use std::time::Duration;

use clap::Parser;
use ksense::app::{self, Sources};
use ksense::config::{Cli, Config};
use ksense::probes::fake::Fake;

pub struct InProcess {
    pub port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    pub dir: tempfile::TempDir,
}

impl InProcess {
    /// `args` are ksense's flags (the listen address and state file are set
    /// here). Returns once the port accepts connections.
    pub fn start(args: &[&str]) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("baseline.json");
        let argv = ["ksense", "--model.state-file", state.to_str().unwrap()].into_iter().chain(args.iter().copied());
        let cfg = Config::load(Cli::try_parse_from(argv).expect("flags")).expect("configuration");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                let fake = std::sync::Arc::new(Fake::default());
                let sources =
                    Sources { source: fake.clone(), collectors: vec![fake], attach_mode: "fake", workloads: None };
                let listener = tokio::net::TcpListener::from_std(listener)?;
                app::serve_with(cfg, sources, listener, async {
                    let _ = rx.await;
                })
                .await
            })
        });
        let k = InProcess { port, stop: Some(tx), thread: Some(thread), dir };
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

    /// Shuts down as SIGTERM does and returns what serving returned.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().expect("the serving thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
