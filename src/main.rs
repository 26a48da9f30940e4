//! `keyhaven`: the daemon (`serve`) and its operator command line. Argument parsing only; the
//! work is in the library.

use clap::Parser;

/// mimalloc rather than the system allocator: the daemon allocates per call on every thread,
/// and glibc's malloc, free and arena locks took about a fifth of its CPU per call.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option: its index in mimalloc 3, which does not name it (the test
/// below checks it is the option whose default is purge_delay's 1,000 ms).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc's `arena_max_object_size` option (KiB), unnamed too: the largest object placed in
/// its arenas; a larger one is mapped from the system on its own and unmapped when freed.
const MI_OPTION_ARENA_MAX_OBJECT_SIZE: libmimalloc_sys::mi_option_t = 45;

/// Objects above this many KiB are mapped on their own.
const ARENA_MAX_OBJECT_KIB: std::ffi::c_long = 32 * 1024;

/// How the daemon's allocator hands memory back to the system; the environment
/// (`MIMALLOC_PURGE_DELAY`, `MIMALLOC_ARENA_MAX_OBJECT_SIZE`) still decides, when set.
///
/// - Freed memory goes back at once instead of a second later: mimalloc purges a delayed page
///   only when its thread allocates again, so pages freed by passes and threads that then go
///   quiet stayed resident. At a million keys: 74 MiB less after the scale bench's loads
///   (477 -> 403 MiB), with no server CPU per call measurable beside the runs' spread.
/// - Objects over 32 MiB are mapped on their own, so freeing one unmaps it: a start's largest
///   transient buffer (the kept tree read back whole: ~96 MB at a million keys) otherwise left
///   ~23 MiB resident in the arena after it was freed. No call allocates anything that large.
///   (With 8 MiB, server CPU per PKCS#11 Encrypt rose in paired runs; with 32 MiB it did not.)
fn tune_allocator() {
    // SAFETY: sets two of mimalloc's options by their indices (in range), before any thread
    // but this one runs; the function only writes the options' values.
    unsafe {
        libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, 0);
        libmimalloc_sys::mi_option_set_default(
            MI_OPTION_ARENA_MAX_OBJECT_SIZE,
            ARENA_MAX_OBJECT_KIB,
        );
    }
}

fn main() {
    tune_allocator();
    let cli = keyhaven::cli::Cli::parse();
    std::process::exit(keyhaven::cli::run(cli));
}

#[cfg(test)]
mod tests {
    /// The indices set in `main` are mimalloc's `purge_delay` (the option whose default is
    /// 1,000 ms) and `arena_max_object_size` (whose default is 2 GiB, in KiB), and
    /// `tune_allocator` sets them.
    #[test]
    fn the_options_set_are_the_purge_delay_and_the_arena_object_limit() {
        assert!(std::env::var_os("MIMALLOC_PURGE_DELAY").is_none());
        assert!(std::env::var_os("MIMALLOC_ARENA_MAX_OBJECT_SIZE").is_none());
        let options = [
            super::MI_OPTION_PURGE_DELAY,
            super::MI_OPTION_ARENA_MAX_OBJECT_SIZE,
        ];
        // SAFETY: reads and sets options by their indices; nothing else uses mimalloc's
        // options in this test binary.
        let (before, after) = unsafe {
            let before = options.map(|o| libmimalloc_sys::mi_option_get(o));
            super::tune_allocator();
            (before, options.map(|o| libmimalloc_sys::mi_option_get(o)))
        };
        assert_eq!(before, [1000, 2 * 1024 * 1024]);
        assert_eq!(after, [0, super::ARENA_MAX_OBJECT_KIB]);
    }
}
