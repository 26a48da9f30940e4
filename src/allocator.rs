//! How a process whose global allocator is mimalloc (`keyhaven`, and the benchmark running the
//! daemon in its own process) hands memory back to the system. [`tune`] is called first thing in
//! `main`; the environment (`MIMALLOC_PURGE_DELAY`, `MIMALLOC_ARENA_MAX_OBJECT_SIZE`) still
//! decides, when set.
//!
//! - **Freed memory goes back at once while the daemon starts, after 100 ms once it serves.**
//!   A start's transient loads (the store's tree and key index read back, every record and the
//!   management account's key material checked beside serving) free a lot once; with a delay,
//!   at a million keys the daemon held 18–23 MiB more after the scale bench's loads, as its
//!   start had left more behind (the difference was already there after the first loads). So
//!   `tune` sets `purge_delay` to 0 (against mimalloc's 1,000 ms), and [`serving`], called once
//!   those checks are done, sets 100 ms (unless the environment set a delay): memory one call
//!   frees and the next allocates again is then not handed back and faulted in between them.
//!   With the immediate purge, `EncryptBatch` of 1,000 items spent about a quarter of its
//!   samples in `madvise`, the TLB shoot-downs it sends the other core and the page faults of
//!   memory handed back and touched again. A delay alone purges only when some thread next
//!   frees or collects, so a thread of `serving`'s carries out the due purges every second.
//! - **Objects over 32 MiB are mapped on their own**, so freeing one unmaps it: a start's
//!   largest transient buffer (the kept tree read back whole: ~96 MB at a million keys)
//!   otherwise left ~23 MiB resident in the arena after it was freed. No call allocates anything
//!   that large. (With 8 MiB, server CPU per PKCS#11 Encrypt rose in paired runs; with 32 MiB it
//!   did not.)
//!
//! In a process with another global allocator these calls touch only mimalloc's own, unused
//! state (and `serving`'s thread collects nothing).

// mimalloc's options are set through C functions.
#![allow(unsafe_code)]

/// mimalloc's `purge_delay` option (milliseconds): its index in mimalloc 3, which does not name
/// it (the test below checks it is the option whose default is purge_delay's 1,000 ms).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long memory freed to mimalloc's arenas waits before it is purged.
const PURGE_DELAY_MS: std::ffi::c_long = 0;

/// mimalloc's `arena_max_object_size` option (KiB), which mimalloc 3 does not name either: the
/// largest object placed in its arenas; a larger one is mapped from the system on its own and
/// unmapped when freed.
const MI_OPTION_ARENA_MAX_OBJECT_SIZE: libmimalloc_sys::mi_option_t = 45;

/// Objects above this many KiB are mapped on their own.
const ARENA_MAX_OBJECT_KIB: std::ffi::c_long = 32 * 1024;

/// How long freed memory waits once start-up's checks are done ([`serving`]).
const SERVING_PURGE_DELAY_MS: std::ffi::c_long = 100;

/// How often the purger thread carries out the purges that have come due.
const PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Sets mimalloc's options (above). Call it before any other thread starts.
pub fn tune() {
    // SAFETY: sets two of mimalloc's options by their indices (in range), before any thread
    // but this one runs; the function only writes the options' values.
    unsafe {
        libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
        libmimalloc_sys::mi_option_set_default(
            MI_OPTION_ARENA_MAX_OBJECT_SIZE,
            ARENA_MAX_OBJECT_KIB,
        );
    }
}

/// Called once start-up's transient loads are over (the management account's key material
/// and every record checked): from then on freed memory waits [`SERVING_PURGE_DELAY_MS`] before
/// it is purged, so memory a call frees and the next call allocates again is not handed back and
/// faulted in between them. A purge delay set in the environment (`MIMALLOC_PURGE_DELAY`, read
/// by mimalloc) is left as it is. Whenever the delay is positive, a thread (started once per
/// process) carries out the purges that have come due every [`PURGE_INTERVAL`], so what an idle
/// daemon freed goes back within a second or so.
pub fn serving() {
    static PURGER: std::sync::Once = std::sync::Once::new();
    // SAFETY: sets one of mimalloc's options by its index (in range), unless the environment
    // set it (mimalloc's own rule for a default), and reads it back.
    let delay = unsafe {
        libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, SERVING_PURGE_DELAY_MS);
        libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY)
    };
    if delay <= 0 {
        return;
    }
    PURGER.call_once(|| {
        let purger = std::thread::Builder::new()
            .name("keyhaven-purge".into())
            .spawn(|| {
                // SAFETY: gives this thread its mimalloc heap, without which `mi_collect`
                // returns at once.
                unsafe { libmimalloc_sys::mi_thread_init() };
                loop {
                    std::thread::sleep(PURGE_INTERVAL);
                    // SAFETY: collects this thread's own (idle) heap and carries out the arenas'
                    // due purges; callable from any thread at any time.
                    unsafe { libmimalloc_sys::mi_collect(false) };
                }
            });
        if let Err(error) = purger {
            tracing::warn!(%error, "memory freed while idle is handed back on the next call only");
        }
    });
}

#[cfg(test)]
mod tests {
    /// The indices set are mimalloc's `purge_delay` (the option whose default is 1,000 ms) and
    /// `arena_max_object_size` (whose default is 2 GiB, in KiB), and `tune` sets them; then
    /// `serving` sets the serving delay. One test, as both set the process's options.
    #[test]
    fn tune_sets_the_options_and_serving_the_serving_delay() {
        assert!(std::env::var_os("MIMALLOC_PURGE_DELAY").is_none());
        assert!(std::env::var_os("MIMALLOC_ARENA_MAX_OBJECT_SIZE").is_none());
        let options = [
            super::MI_OPTION_PURGE_DELAY,
            super::MI_OPTION_ARENA_MAX_OBJECT_SIZE,
        ];
        // SAFETY: reads and sets options by their indices; nothing else in this test binary
        // uses mimalloc's options.
        let (before, after) = unsafe {
            let before = options.map(|o| libmimalloc_sys::mi_option_get(o));
            super::tune();
            (before, options.map(|o| libmimalloc_sys::mi_option_get(o)))
        };
        assert_eq!(before, [1000, 2 * 1024 * 1024]);
        assert_eq!(after, [super::PURGE_DELAY_MS, super::ARENA_MAX_OBJECT_KIB]);
        super::serving();
        // SAFETY: as above.
        let delay = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(delay, super::SERVING_PURGE_DELAY_MS);
    }
}
