//! `keyhaven`: the daemon (`serve`) and its operator command line. Argument parsing only; the
//! work is in the library.

use clap::Parser;

fn main() {
    let cli = keyhaven::cli::Cli::parse();
    std::process::exit(keyhaven::cli::run(cli));
}
