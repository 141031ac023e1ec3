//! OTLP push: every interval the same families /metrics serves are read and
//! handed to a sender through a one-slot queue; the sender encodes and
//! exports them with a timeout, backing off with jitter while the collector
//! is down. Neither side can hold up /metrics or the probes: reading the
//! families is what a scrape does, and a slow collector only delays the
//! sender, whose queue keeps just the newest snapshot (the values are
//! cumulative, so the newest one supersedes every older one).

pub mod config;
pub mod encode;
pub mod tls;
pub mod transport;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use super::families::Counters;
use super::gather::Exporter;
use crate::signals::metric::Family;
pub use config::{OtlpConfig, Protocol};
use transport::Transport;

/// Families read at one moment.
pub struct Snapshot {
    pub families: Vec<Family>,
    pub time: SystemTime,
}

/// A queue of one that drops the oldest entry.
pub struct Latest<T> {
    slot: Mutex<Option<T>>,
    ready: Notify,
}

impl<T> Default for Latest<T> {
    fn default() -> Self {
        Latest { slot: Mutex::new(None), ready: Notify::new() }
    }
}

impl<T> Latest<T> {
    /// Returns true when an unsent entry was replaced.
    pub fn put(&self, v: T) -> bool {
        let replaced = self.slot.lock().expect("queue lock").replace(v).is_some();
        self.ready.notify_one();
        replaced
    }

    pub fn try_take(&self) -> Option<T> {
        self.slot.lock().expect("queue lock").take()
    }

    pub async fn take(&self) -> T {
        loop {
            if let Some(v) = self.try_take() {
                return v;
            }
            self.ready.notified().await;
        }
    }
}

/// Exponential back-off, 1 s doubling to 60 s, each delay drawn uniformly
/// from its upper half so that many nodes do not retry in lockstep.
pub struct Backoff {
    next: Duration,
    rng: u64,
}

pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

impl Backoff {
    pub fn new(seed: u64) -> Backoff {
        Backoff { next: BACKOFF_MIN, rng: seed | 1 }
    }

    pub fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    pub fn delay(&mut self) -> Duration {
        // xorshift64: jitter needs no more than this.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let d = self.next;
        self.next = (d * 2).min(BACKOFF_MAX);
        let frac = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        d.mul_f64(0.5 + 0.5 * frac)
    }
}

/// The push loop; `shutdown` stops it with one last export.
pub struct Pusher {
    stop: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Pusher {
    /// Stops the periodic push and exports the values of this moment once,
    /// bounded by --otlp.timeout: a collector gets the counts up to the stop
    /// and not only up to the last interval (as the OTel SDKs' shutdown does).
    pub async fn shutdown(self) {
        self.stop.notify_one();
        let _ = self.task.await;
    }
}

/// Starts pushing.
pub fn spawn(cfg: OtlpConfig, exporter: Arc<Exporter>, counters: Arc<Counters>) -> anyhow::Result<Pusher> {
    let transport = Transport::new(&cfg)?;
    tracing::info!(endpoint = %cfg.endpoint, protocol = cfg.protocol.as_str(), interval = ?cfg.interval, timeout = ?cfg.timeout, gzip = cfg.gzip, "pushing metrics over OTLP");
    let queue = Arc::new(Latest::default());
    let stop = Arc::new(Notify::new());
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        tokio::select! {
            _ = async { tokio::join!(collect(exporter.clone(), cfg.interval, queue.clone()), send(cfg.clone(), exporter.clone(), counters.clone(), transport, queue)) } => {}
            _ = stopped.notified() => {}
        }
        final_export(&cfg, &exporter, &counters).await;
    });
    Ok(Pusher { stop, task })
}

/// On a fresh connection: the loop's may be mid-request or backing off.
async fn final_export(cfg: &OtlpConfig, exporter: &Exporter, counters: &Counters) {
    // Stamped before the read, as `collect` does.
    let time = SystemTime::now();
    let families = match exporter.families() {
        Ok(f) => f,
        Err(e) => return tracing::warn!(error = %e, "OTLP: reading the metrics for the last export failed"),
    };
    let req = encode::request(&families, &cfg.resource, exporter.created, time);
    let result = match Transport::new(cfg) {
        Ok(mut t) => tokio::time::timeout(cfg.timeout, t.export(req))
            .await
            .unwrap_or_else(|_| Err(format!("timed out after {:?}", cfg.timeout))),
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok(_) => {
            counters.record(true);
            tracing::info!("OTLP: last export at shutdown sent");
        }
        Err(e) => {
            counters.record(false);
            tracing::warn!(endpoint = %cfg.endpoint, error = %e, "OTLP: last export at shutdown failed; the collector has the values up to the previous one");
        }
    }
}

async fn collect(exporter: Arc<Exporter>, interval: Duration, queue: Arc<Latest<Arc<Snapshot>>>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Stamped before the read: every value in it was read at or after this time.
        let time = SystemTime::now();
        match exporter.families() {
            Ok(families) => {
                if queue.put(Arc::new(Snapshot { families, time })) {
                    tracing::debug!("OTLP: a snapshot was superseded before it could be sent");
                }
            }
            Err(e) => tracing::warn!(error = %e, "OTLP: reading the metrics failed"),
        }
    }
}

/// An outage: from the first failed export to the next success.
struct Outage {
    since: Instant,
    failures: u64,
}

async fn send(
    cfg: OtlpConfig,
    exporter: Arc<Exporter>,
    counters: Arc<Counters>,
    mut transport: Transport,
    queue: Arc<Latest<Arc<Snapshot>>>,
) {
    let start = exporter.created;
    let seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
        ^ u64::from(std::process::id());
    let mut backoff = Backoff::new(seed);
    let mut outage: Option<Outage> = None;
    let mut last_rejection = None;
    let mut pending: Option<Arc<Snapshot>> = None;
    loop {
        // A retry sends the newest snapshot there is: it supersedes the failed one.
        let snap = match (queue.try_take(), pending.take()) {
            (Some(newer), _) => newer,
            (None, Some(old)) => old,
            (None, None) => queue.take().await,
        };
        let req = encode::request(&snap.families, &cfg.resource, start, snap.time);
        let result = match tokio::time::timeout(cfg.timeout, transport.export(req)).await {
            Ok(r) => r,
            Err(_) => {
                // The connection may be dead without an RST (a partition): start
                // afresh rather than queue the next request on it.
                if let Ok(t) = Transport::new(&cfg) {
                    transport = t;
                }
                Err(format!("timed out after {:?}", cfg.timeout))
            }
        };
        match result {
            Ok(rejected) => {
                counters.record(true);
                backoff.reset();
                if let Some(o) = outage.take() {
                    tracing::info!(
                        failed_attempts = o.failures,
                        seconds = o.since.elapsed().as_secs(),
                        "OTLP export recovered"
                    );
                }
                // Said once per distinct answer, not once per export.
                if rejected.as_ref() != last_rejection.as_ref() {
                    if let Some(r) = &rejected {
                        tracing::warn!(rejected_points = r.points, message = %r.message, "OTLP collector accepted the export but rejected some data points");
                    }
                    last_rejection = rejected;
                }
            }
            Err(e) => {
                counters.record(false);
                let delay = backoff.delay();
                match &mut outage {
                    None => {
                        tracing::warn!(endpoint = %cfg.endpoint, error = %e, retry_in = ?delay, "OTLP export failed; retrying with back-off, logged again when it recovers");
                        outage = Some(Outage { since: Instant::now(), failures: 1 });
                    }
                    Some(o) => {
                        o.failures += 1;
                        tracing::debug!(error = %e, retry_in = ?delay, failures = o.failures, "OTLP export failed again");
                    }
                }
                pending = Some(snap);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(42);
        let mut ceiling = BACKOFF_MIN;
        for _ in 0..12 {
            let d = b.delay();
            assert!(d >= ceiling / 2 && d <= ceiling, "{d:?} outside [{:?}, {ceiling:?}]", ceiling / 2);
            ceiling = (ceiling * 2).min(BACKOFF_MAX);
        }
        let draws: Vec<Duration> = (0..20).map(|_| b.delay()).collect();
        assert!(draws.iter().any(|d| *d != draws[0]), "jitter varies the delay");
        b.reset();
        assert!(b.delay() <= BACKOFF_MIN);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn latest_keeps_only_the_newest() {
        let q = Latest::default();
        assert!(!q.put(1));
        assert!(q.put(2), "an unsent entry is replaced");
        assert_eq!(q.take().await, 2);
        assert_eq!(q.try_take(), None);
        let q = Arc::new(q);
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.take().await });
        tokio::task::yield_now().await;
        q.put(3);
        assert_eq!(waiter.await.unwrap(), 3);
    }
}
