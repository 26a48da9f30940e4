//! Loops that run beside serving (the key scheduler, the credential sweeper) and stop between
//! their passes, never inside one: a pass cut off between a commit and what follows it would
//! leave its change half told (a key's index entry, say), where a stop asked for waits for
//! the pass to end.

use std::future::Future;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A loop spawned with [`Background::spawn`].
pub struct Background {
    handle: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

/// What a loop waits on beside its ticker: resolves once a stop is asked for.
pub struct StopSignal(watch::Receiver<bool>);

impl StopSignal {
    /// Resolves once [`Background::ask_to_stop`] was called (at once if it was already).
    pub async fn asked(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

impl Background {
    /// Spawns the loop `run` makes, handing it the signal it must watch between passes.
    pub fn spawn<F, R>(run: F) -> Self
    where
        F: FnOnce(StopSignal) -> R,
        R: Future<Output = ()> + Send + 'static,
    {
        let (stop, asked) = watch::channel(false);
        Self {
            handle: tokio::spawn(run(StopSignal(asked))),
            stop,
        }
    }

    /// Asks the loop to stop once its current pass (if any) ends.
    pub fn ask_to_stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Asks the loop to stop, and waits until it has.
    pub async fn stop(self) {
        self.ask_to_stop();
        let _ = self.handle.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A stop asked for in the middle of a pass lets the pass end.
    #[tokio::test]
    async fn a_stop_waits_for_the_pass_in_progress() {
        let (started, ended) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (s, e) = (started.clone(), ended.clone());
        let background = Background::spawn(move |mut stop| async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(1)) => {}
                    _ = stop.asked() => return,
                }
                s.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                e.fetch_add(1, Ordering::SeqCst);
            }
        });
        while started.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        background.stop().await;
        assert_eq!(
            started.load(Ordering::SeqCst),
            ended.load(Ordering::SeqCst),
            "a pass was cut off"
        );
    }
}
