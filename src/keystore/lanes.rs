//! Lanes: a few long-lived worker threads, one per core, for a device's short calls, each
//! draining a queue. A call that arrives while its lane is busy waits in the queue and costs
//! no thread wake-up, so under load many calls share one. A lane whose call has run longer
//! than [`LANE_STUCK`] (a device not answering) takes no more calls, and the calls queued
//! behind it are moved to threads of their own (see [`super::deadline`], whose deadlines
//! still bound every call).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// A lane whose call has run this long is taken to be stuck on the device.
pub const LANE_STUCK: Duration = Duration::from_millis(250);

pub(super) type Job = Box<dyn FnOnce() + Send>;

/// Long-lived worker threads for the short calls, each draining a queue of them.
pub(super) struct Lanes {
    lanes: Vec<Arc<Lane>>,
    next: AtomicUsize,
}

#[derive(Default)]
struct Lane {
    state: Mutex<LaneState>,
    wake: Condvar,
}

#[derive(Default)]
struct LaneState {
    queue: std::collections::VecDeque<Job>,
    /// When the call running now started; none while idle.
    running_since: Option<std::time::Instant>,
    /// Waiting on `wake`: a new call must wake it.
    parked: bool,
    /// Its thread is running (started on first use).
    started: bool,
    /// The keystore is gone: the thread ends once the queue is empty.
    closed: bool,
}

impl Lane {
    fn state(&self) -> MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lane's thread: runs queued calls one after another, and waits when there are none.
    fn work(self: Arc<Self>) {
        loop {
            let job = {
                let mut state = self.state();
                loop {
                    if let Some(job) = state.queue.pop_front() {
                        state.running_since = Some(std::time::Instant::now());
                        break job;
                    }
                    state.running_since = None;
                    if state.closed {
                        return;
                    }
                    state.parked = true;
                    state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
                    state.parked = false;
                }
            };
            job();
        }
    }
}

impl Lanes {
    /// How many lanes there are.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lanes.len()
    }

    pub(super) fn new() -> Self {
        let count = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, 8);
        Self {
            lanes: (0..count).map(|_| Arc::default()).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// Queues `job` on a lane that is not stuck, preferring an idle one; gives it back when
    /// every lane is stuck. The calls queued behind a stuck lane are handed to `elsewhere`.
    pub(super) fn submit(&self, job: Job, elsewhere: &dyn Fn(Job)) -> Result<(), Job> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut chosen: Option<(usize, usize)> = None;
        for offset in 0..self.lanes.len() {
            let index = (start + offset) % self.lanes.len();
            let lane = &self.lanes[index];
            let mut state = lane.state();
            let stuck = state
                .running_since
                .is_some_and(|since| since.elapsed() >= LANE_STUCK);
            if stuck {
                let stranded: Vec<Job> = state.queue.drain(..).collect();
                drop(state);
                for job in stranded {
                    elsewhere(job);
                }
                continue;
            }
            let load = state.queue.len() + usize::from(state.running_since.is_some());
            if load == 0 {
                chosen = Some((index, 0));
                break;
            }
            if chosen.is_none_or(|(_, best)| load < best) {
                chosen = Some((index, load));
            }
        }
        let Some((index, _)) = chosen else {
            return Err(job);
        };
        let lane = &self.lanes[index];
        let mut state = lane.state();
        state.queue.push_back(job);
        if !state.started {
            let worker = lane.clone();
            let spawned = std::thread::Builder::new()
                .name("keystore-lane".into())
                .spawn(move || worker.work());
            match spawned {
                Ok(_) => state.started = true,
                Err(_) => return Err(state.queue.pop_back().unwrap_or_else(|| Box::new(|| {}))),
            }
        } else if state.parked {
            lane.wake.notify_one();
        }
        Ok(())
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        for lane in &self.lanes {
            lane.state().closed = true;
            lane.wake.notify_one();
        }
    }
}

/// Runs `job` on a blocking thread of its own: tokio's blocking pool (which keeps idle threads
/// for reuse) inside a runtime, a new thread outside one.
pub(super) fn on_a_thread(job: Job) -> std::io::Result<()> {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            drop(runtime.spawn_blocking(job));
            Ok(())
        }
        Err(_) => std::thread::Builder::new()
            .name("keystore-call".into())
            .spawn(job)
            .map(drop),
    }
}
