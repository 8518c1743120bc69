//! Supervision: every thread and task of the graph is started through the
//! [`Supervisor`], which observes how each one ends. A stage that panics, or a stage
//! that must run until shutdown and ends, is reported as [`Failure`]; the graph logs
//! it, shows it in health (`status: "failed"`, naming the stage) and exits non-zero
//! so systemd restarts the daemon. (Sources restart themselves: their runner catches
//! driver panics.) At shutdown the supervisor joins what it started, within a deadline.

use crate::ident::panic_message;
use crate::telemetry::{names, DaemonEvent, Telemetry};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How a stage is expected to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Ends when its input ends (a windower after its source, an encoder after its
    /// windowers): only a panic is a failure.
    Finite,
    /// Runs until shutdown (health, query service): ending early is a failure too.
    Forever,
}

/// A stage that failed.
#[derive(Debug, Clone)]
pub struct Failure {
    pub stage: String,
    pub reason: String,
}

pub struct Supervisor {
    telemetry: Arc<Telemetry>,
    failures_tx: mpsc::UnboundedSender<Failure>,
    failures_rx: mpsc::UnboundedReceiver<Failure>,
    threads: Vec<(String, JoinHandle<()>)>,
    tasks: Vec<(String, tokio::task::JoinHandle<()>)>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
}

impl Supervisor {
    pub fn new(telemetry: Arc<Telemetry>) -> Self {
        let (failures_tx, failures_rx) = mpsc::unbounded_channel();
        Supervisor {
            telemetry,
            failures_tx,
            failures_rx,
            threads: Vec::new(),
            tasks: Vec::new(),
            stopping: Arc::default(),
        }
    }

    fn reporter(&self, stage: String, role: Role) -> impl Fn(Option<String>) + Send + 'static {
        let tx = self.failures_tx.clone();
        let telemetry = self.telemetry.clone();
        let stopping = self.stopping.clone();
        move |panic: Option<String>| {
            let reason = match (panic, role) {
                (Some(p), _) => format!("panicked: {}", crate::ident::clip(&p, 300)),
                (None, Role::Forever) if !stopping.load(std::sync::atomic::Ordering::SeqCst) => {
                    "ended before shutdown".to_string()
                }
                _ => return,
            };
            tracing::error!(event = names::STAGE_FAILED, stage = %stage, reason = %reason, "pipeline stage failed; the daemon will exit non-zero");
            telemetry.emit(DaemonEvent::StageFailed {
                stage: stage.clone(),
                reason: reason.clone(),
            });
            let _ = tx.send(Failure {
                stage: stage.clone(),
                reason,
            });
        }
    }

    /// Run `f` on a supervised OS thread named `stage`.
    pub fn thread(&mut self, stage: &str, role: Role, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
        let report = self.reporter(stage.to_string(), role);
        let name: String = stage.chars().take(15).collect();
        let h = std::thread::Builder::new().name(name).spawn(move || {
            let r = catch_unwind(AssertUnwindSafe(f));
            report(r.err().map(|p| panic_message(&*p)));
        })?;
        self.threads.push((stage.to_string(), h));
        Ok(())
    }

    /// Run `fut` as a supervised task named `stage`.
    pub fn task(&mut self, stage: &str, role: Role, fut: impl Future<Output = ()> + Send + 'static) {
        let report = self.reporter(stage.to_string(), role);
        let h = tokio::spawn(async move {
            use futures_util::FutureExt;
            let r = AssertUnwindSafe(fut).catch_unwind().await;
            report(r.err().map(|p| panic_message(&*p)));
        });
        self.tasks.push((stage.to_string(), h));
    }

    /// The first failure of any stage.
    pub async fn failure(&mut self) -> Option<Failure> {
        self.failures_rx.recv().await
    }

    /// From now on, stages ending is expected.
    pub fn stopping(&self) {
        self.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Wait for the threads whose names start with `prefix` to end, until `deadline`.
    /// Returns the names of those still running (they are kept, to join later).
    pub async fn join_threads(&mut self, prefix: &str, deadline: Instant) -> Vec<String> {
        loop {
            let mut i = 0;
            while i < self.threads.len() {
                if self.threads[i].0.starts_with(prefix) && self.threads[i].1.is_finished() {
                    let (name, h) = self.threads.remove(i);
                    if let Err(p) = h.join() {
                        tracing::error!(event = names::STAGE_FAILED, stage = %name, reason = %panic_message(&*p), "stage panicked");
                    }
                } else {
                    i += 1;
                }
            }
            let left: Vec<String> = self
                .threads
                .iter()
                .filter(|(n, _)| n.starts_with(prefix))
                .map(|(n, _)| n.clone())
                .collect();
            if left.is_empty() || Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stop every task (they hold no data that shutdown must save).
    pub async fn abort_tasks(&mut self) {
        for (_, t) in &self.tasks {
            t.abort();
        }
        for (_, t) in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn panics_and_early_ends_are_failures_and_in_health() {
        let t = Arc::new(Telemetry::new(Duration::from_secs(60)));
        let mut s = Supervisor::new(t.clone());
        s.thread("window/front/vision", Role::Finite, || {}).unwrap();
        s.thread("encoder/vision", Role::Finite, || panic!("boom")).unwrap();
        let f = s.failure().await.unwrap();
        assert_eq!(f.stage, "encoder/vision");
        assert!(f.reason.contains("boom"));
        s.task("health", Role::Forever, async {});
        let f = s.failure().await.unwrap();
        assert_eq!(
            (f.stage.as_str(), f.reason.as_str()),
            ("health", "ended before shutdown")
        );
        assert_eq!(t.snapshot("r", 0)["status"], "failed");
        // Once stopping, a task that ends is not a failure.
        s.stopping();
        s.task("queries", Role::Forever, async {});
        assert!(s
            .join_threads("", Instant::now() + Duration::from_secs(2))
            .await
            .is_empty());
        s.abort_tasks().await;
        assert!(tokio::time::timeout(Duration::from_millis(50), s.failure())
            .await
            .is_err());
    }
}
