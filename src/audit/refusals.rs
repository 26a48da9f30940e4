//! Repeated refusals before authentication, aggregated per source.
//!
//! Each refused unauthenticated call used to write a record of its own, so one client sending
//! junk could fill the disk with text of its choosing. Now the first refusal from a source
//! opens a window of [`WINDOW_SECONDS`] and is recorded in full; the refusals after it in that
//! window (and the throttled ones) are only counted, and the count goes into one summary
//! record when the window has closed: on the next refusal from that source after it, or at
//! the once-a-second sync, whichever comes first. The table of open windows is bounded: past
//! [`MAX_SOURCES`], new sources share one window named [`OTHER_SOURCES`].

use crate::clock::UnixSeconds;
use std::collections::HashMap;
use std::sync::Mutex;

/// How long the refusals after a recorded one are counted instead of recorded.
pub const WINDOW_SECONDS: UnixSeconds = 10;
/// Most sources with an open window; the rest share one.
pub const MAX_SOURCES: usize = 4096;
/// The source of the window shared by sources past [`MAX_SOURCES`].
pub const OTHER_SOURCES: &str = "other";

/// Refusals counted, not recorded, in a window that has closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalSummary {
    pub source: String,
    /// When the window opened.
    pub since: UnixSeconds,
    /// Refusals not recorded one by one (throttled ones included).
    pub count: u64,
    /// How many of them were throttled.
    pub throttled: u64,
}

/// What to do with one refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalDecision {
    /// Write a record for this refusal.
    pub record: bool,
    /// The summary of this source's previous window, to write first.
    pub closed: Option<RefusalSummary>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    opened: UnixSeconds,
    count: u64,
    throttled: u64,
}

/// Open windows by source.
#[derive(Debug, Default)]
pub struct RefusalWindows {
    open: Mutex<HashMap<String, Window>>,
}

impl RefusalWindows {
    /// A refusal from `source` at `now`; `throttled` ones are never recorded one by one.
    pub fn refused(&self, source: &str, now: UnixSeconds, throttled: bool) -> RefusalDecision {
        let mut open = match self.open.lock() {
            Ok(open) => open,
            Err(poisoned) => poisoned.into_inner(),
        };
        let source = if open.contains_key(source) || open.len() < MAX_SOURCES {
            source
        } else {
            OTHER_SOURCES
        };
        let fresh = Window {
            opened: now,
            count: u64::from(throttled),
            throttled: u64::from(throttled),
        };
        match open.get_mut(source) {
            Some(window) if now < window.opened.saturating_add(WINDOW_SECONDS) => {
                window.count = window.count.saturating_add(1);
                window.throttled = window.throttled.saturating_add(u64::from(throttled));
                RefusalDecision {
                    record: false,
                    closed: None,
                }
            }
            Some(window) => {
                let closed = summary(source, window);
                *window = fresh;
                RefusalDecision {
                    record: !throttled,
                    closed,
                }
            }
            None => {
                open.insert(source.to_owned(), fresh);
                RefusalDecision {
                    record: !throttled,
                    closed: None,
                }
            }
        }
    }

    /// Removes the windows closed by `now`; the summaries of those that counted anything.
    pub fn close(&self, now: UnixSeconds) -> Vec<RefusalSummary> {
        let mut open = match self.open.lock() {
            Ok(open) => open,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut closed = Vec::new();
        open.retain(|source, window| {
            if now < window.opened.saturating_add(WINDOW_SECONDS) {
                return true;
            }
            closed.extend(summary(source, window));
            false
        });
        closed.sort_by(|a, b| (a.since, &a.source).cmp(&(b.since, &b.source)));
        closed
    }

    /// Sources with an open window.
    pub fn len(&self) -> usize {
        self.open.lock().map(|open| open.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn summary(source: &str, window: &Window) -> Option<RefusalSummary> {
    (window.count > 0).then(|| RefusalSummary {
        source: source.to_owned(),
        since: window.opened,
        count: window.count,
        throttled: window.throttled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_refusal_is_recorded_and_the_rest_counted_until_the_window_closes() {
        let windows = RefusalWindows::default();
        assert_eq!(
            windows.refused("192.0.2.1", 100, false),
            RefusalDecision {
                record: true,
                closed: None
            }
        );
        for _ in 0..5 {
            assert!(!windows.refused("192.0.2.1", 105, false).record);
        }
        assert!(!windows.refused("192.0.2.1", 109, true).record);
        // Another source has its own window.
        assert!(windows.refused("192.0.2.2", 109, false).record);
        // The next refusal after the window: the summary first, then recorded itself.
        assert_eq!(
            windows.refused("192.0.2.1", 110, false),
            RefusalDecision {
                record: true,
                closed: Some(RefusalSummary {
                    source: "192.0.2.1".into(),
                    since: 100,
                    count: 6,
                    throttled: 1
                })
            }
        );
        // Closing: only windows that counted something have a summary; all closed ones go.
        assert!(!windows.refused("192.0.2.1", 111, true).record);
        assert_eq!(windows.close(119), vec![]);
        assert_eq!(windows.len(), 1);
        assert_eq!(
            windows.close(120),
            vec![RefusalSummary {
                source: "192.0.2.1".into(),
                since: 110,
                count: 1,
                throttled: 1
            }]
        );
        assert!(windows.is_empty());
        // A throttled refusal that opens a window is counted, not recorded.
        assert!(!windows.refused("192.0.2.3", 200, true).record);
        assert_eq!(windows.close(210)[0].count, 1);
    }

    #[test]
    fn sources_past_the_bound_share_one_window() {
        let windows = RefusalWindows::default();
        for i in 0..MAX_SOURCES {
            assert!(windows.refused(&format!("source-{i}"), 0, false).record);
        }
        assert!(windows.refused("one more", 0, false).record);
        assert!(!windows.refused("and another", 1, false).record);
        assert_eq!(windows.len(), MAX_SOURCES + 1);
        let closed = windows.close(WINDOW_SECONDS);
        assert_eq!(closed.len(), 1);
        assert_eq!(
            (closed[0].source.as_str(), closed[0].count),
            (OTHER_SOURCES, 1)
        );
        assert!(windows.is_empty());
    }
}
