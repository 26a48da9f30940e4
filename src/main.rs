//! `keyhaven`: the daemon (`serve`) and its operator command line. Argument parsing only; the
//! work is in the library.

use clap::Parser;

/// mimalloc rather than the system allocator: the daemon allocates per call on every thread,
/// and glibc's malloc, free and arena locks took about a fifth of its CPU per call.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    keyhaven::allocator::tune();
    let cli = keyhaven::cli::Cli::parse();
    std::process::exit(keyhaven::cli::run(cli));
}
