//! `keyhaven`: the daemon (`serve`) and its operator command line. Argument parsing only; the
//! work is in the library.

use clap::Parser;

/// mimalloc rather than the system allocator: the daemon allocates per call on every thread,
/// and glibc's malloc, free and arena locks took about a fifth of its CPU per call.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option: its index in mimalloc 2 and 3, which do not name it (the
/// test below checks it is the option whose default is purge_delay's 1,000 ms).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory goes back to the system at once instead of a second later: mimalloc purges a
/// delayed page only when its thread allocates again, so pages freed by passes and threads
/// that then go quiet stayed resident. At a million keys: 74 MiB less after the scale bench's
/// loads (477 -> 403 MiB), with no server CPU per call measurable beside the runs' spread.
/// `MIMALLOC_PURGE_DELAY` in the environment still decides, when set.
fn purge_at_once() {
    // SAFETY: sets one of mimalloc's options by its index (in range), before any thread but
    // this one runs; the function only writes the option's value.
    unsafe { libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, 0) };
}

fn main() {
    purge_at_once();
    let cli = keyhaven::cli::Cli::parse();
    std::process::exit(keyhaven::cli::run(cli));
}

#[cfg(test)]
mod tests {
    /// The index set in `main` is mimalloc's `purge_delay`: the option whose default is
    /// 1,000 ms (mimalloc 3; 10 in mimalloc 2, which this build does not use), and which
    /// `purge_at_once` sets to 0.
    #[test]
    fn the_option_set_is_the_purge_delay() {
        assert!(std::env::var_os("MIMALLOC_PURGE_DELAY").is_none());
        // SAFETY: reads and sets one option by its index; nothing else uses mimalloc's
        // options in this test binary.
        let (before, after) = unsafe {
            let before = libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY);
            super::purge_at_once();
            (
                before,
                libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY),
            )
        };
        assert_eq!((before, after), (1000, 0));
    }
}
