//! How a process whose global allocator is mimalloc (`keyhaven`, and the benchmark running the
//! daemon in its own process) hands memory back to the system. [`tune`] is called first thing in
//! `main`; the environment (`MIMALLOC_PURGE_DELAY`, `MIMALLOC_ARENA_MAX_OBJECT_SIZE`) still
//! decides, when set.
//!
//! - **Freed memory goes back at once** (`purge_delay` 0, against mimalloc's 1,000 ms): with a
//!   delay, mimalloc purges freed pages only when some thread next frees or collects, and at a
//!   million keys the daemon held 74 MiB more after the scale bench's loads. With 100 ms and
//!   with the default, and a thread collecting every second, it still held 18–23 MiB more
//!   (289–294 MiB against 271, two seconds after the load as right after it), past the
//!   300 MB target. The price is paid where calls allocate and free a lot: `EncryptBatch` of
//!   1,000 items spends about a quarter of its samples in `madvise`, the TLB shoot-downs it
//!   sends the other core and the page faults of memory handed back and touched again, and
//!   makes 0.6–0.8 of the items a second it makes with a delay of 100 ms. A deployment that
//!   batches and has the memory can set `MIMALLOC_PURGE_DELAY=100` (README, "Configuration").
//! - **Objects over 32 MiB are mapped on their own**, so freeing one unmaps it: a start's
//!   largest transient buffer (the kept tree read back whole: ~96 MB at a million keys)
//!   otherwise left ~23 MiB resident in the arena after it was freed. No call allocates anything
//!   that large. (With 8 MiB, server CPU per PKCS#11 Encrypt rose in paired runs; with 32 MiB it
//!   did not.)
//!
//! In a process with another global allocator these calls touch only mimalloc's own, unused
//! state.

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

#[cfg(test)]
mod tests {
    /// The indices set are mimalloc's `purge_delay` (the option whose default is 1,000 ms) and
    /// `arena_max_object_size` (whose default is 2 GiB, in KiB), and `tune` sets them.
    #[test]
    fn the_options_set_are_the_purge_delay_and_the_arena_object_limit() {
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
    }
}
