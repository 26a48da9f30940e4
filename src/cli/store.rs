//! `keyhaven store …`: offline maintenance of a data directory's metadata store (the daemon
//! stopped).

use super::OutputFormat;
use crate::server;
use crate::store::compact;
use clap::Subcommand;
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Rewrite the store with only its live records, so that nothing removed (destroyed key
    /// material's wraps among it) stays in its files. The daemon must be stopped.
    Compact {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Authenticate the records of a store written before records were, taking them as they
    /// are now (once, after an upgrade; only if nobody could have edited them).
    Authenticate {
        #[arg(long)]
        data_dir: PathBuf,
        /// Read the passphrase from this file's first line (else KEYHAVEN_PASSPHRASE, else a prompt).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Move a single-node installation's metadata from its sled store into an etcd prefix
    /// (claimed as `init --store etcd` claims one): every record is checked, copied as it is
    /// and checked again in etcd; the sled store is then kept aside as
    /// `store.migrated-to-etcd`. The daemon must be stopped; serve it afterwards with
    /// `store = "etcd"` and the same etcd settings.
    Migrate {
        #[arg(long)]
        data_dir: PathBuf,
        /// Read the passphrase from this file's first line (else KEYHAVEN_PASSPHRASE, else a prompt).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// Where to: `--store etcd` (the default here) and the `--etcd-*` settings.
        #[command(flatten)]
        to: super::serve::StoreArgs,
    },
}

fn fail(message: impl std::fmt::Display) -> i32 {
    eprintln!("keyhaven: {message}");
    1
}

/// A data directory with a sled store: these commands work on sled's files, and must not
/// make an empty store beside an installation whose metadata is on etcd.
fn initialised(dir: &Path) -> Result<(), String> {
    if !crate::seal::is_initialised(dir) {
        return Err(format!(
            "{} is not an initialised Keyhaven data directory",
            dir.display()
        ));
    }
    if !server::store_dir(dir).exists() {
        return Err(format!(
            "{} has no sled store (its metadata is on etcd?): this command works on sled \
             stores only",
            dir.display()
        ));
    }
    Ok(())
}

pub fn run(command: StoreCommand, output: OutputFormat) -> i32 {
    match command {
        StoreCommand::Compact { data_dir } => {
            if let Err(e) = initialised(&data_dir) {
                return fail(e);
            }
            match compact::compact(&server::store_dir(&data_dir)) {
                Ok(report) if output == OutputFormat::Json => {
                    println!(
                        "{}",
                        json!({
                            "Records": report.records,
                            "BytesBefore": report.bytes_before,
                            "BytesAfter": report.bytes_after,
                        })
                    );
                    0
                }
                Ok(report) => {
                    println!(
                        "compacted {}: {} records, {} bytes → {} bytes",
                        data_dir.display(),
                        report.records,
                        report.bytes_before,
                        report.bytes_after
                    );
                    0
                }
                Err(e) => fail(e),
            }
        }
        StoreCommand::Authenticate {
            data_dir,
            passphrase_file,
        } => {
            if let Err(e) = initialised(&data_dir) {
                return fail(e);
            }
            let passphrase = match server::read_passphrase(passphrase_file.as_deref(), false) {
                Ok(p) => p,
                Err(e) => return fail(e),
            };
            match server::authenticate_store(&data_dir, &passphrase) {
                Ok(records) => {
                    if output == OutputFormat::Json {
                        println!("{}", json!({ "Records": records }));
                    } else {
                        println!(
                            "authenticated the {records} records of {} as they are",
                            data_dir.display()
                        );
                    }
                    0
                }
                Err(e) => fail(e),
            }
        }
        StoreCommand::Migrate {
            data_dir,
            passphrase_file,
            to,
        } => {
            let store = match to.settings("etcd") {
                Ok(store) => store,
                Err(e) => return fail(e),
            };
            let passphrase = match server::read_passphrase(passphrase_file.as_deref(), false) {
                Ok(p) => p,
                Err(e) => return fail(e),
            };
            match server::migrate_store(&data_dir, &store, &passphrase) {
                Ok(migrated) => {
                    if output == OutputFormat::Json {
                        println!(
                            "{}",
                            json!({
                                "Records": migrated.records,
                                "SledStoreKeptAt": migrated.kept.display().to_string(),
                            })
                        );
                    } else {
                        println!(
                            "migrated the {} records of {} to etcd; the sled store is kept at {} \
                             (no longer used). Serve with store = \"etcd\" and the same etcd \
                             settings.",
                            migrated.records,
                            data_dir.display(),
                            migrated.kept.display()
                        );
                    }
                    0
                }
                Err(e) => fail(e),
            }
        }
    }
}
