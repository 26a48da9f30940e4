//! `keyhaven audit tail` (through the daemon) and `keyhaven audit verify` (offline).

use super::commands::{CliError, Context};
use crate::audit::{chain_files, stored_head, stored_start, verify_chain};
use crate::proto::v1;
use crate::seal;
use crate::secret::SecretString;
use crate::server::StoreSettings;
use crate::store::{Barrier, SledBackend, Store, StoreBackend, StoreError};
use clap::Subcommand;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// The last records, through the daemon (permission audit:ReadAudit).
    Tail {
        /// How many records.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u32,
        /// Keep printing records as they are written.
        #[arg(long)]
        follow: bool,
    },
    /// Check the hash chain offline; names the first bad line. With --data-dir, also that
    /// nothing was cut off either end: the chain start and head stored in the data directory
    /// must be in the log.
    Verify {
        /// The log file (rotated `<file>.<n>` beside it are checked first).
        #[arg(long)]
        file: Option<PathBuf>,
        /// A data directory: its log, and the chain head in its store (the daemon must be
        /// stopped for the head to be read).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// With --data-dir: unseal with the passphrase in this file's first line (else
        /// KEYHAVEN_PASSPHRASE when set) and check the stored chain start and head against
        /// their integrity tags, refusing edited ones. Without a passphrase they are read
        /// unchecked, and the output says so.
        #[arg(long, requires = "data_dir")]
        passphrase_file: Option<PathBuf>,
        /// With --data-dir of an installation whose metadata is on etcd: `--store etcd` and
        /// its `--etcd-*` settings, to read the chain start and head there.
        #[command(flatten)]
        store: Box<super::serve::StoreArgs>,
    },
}

pub async fn tail(ctx: Context, lines: u32, follow: bool) -> Result<(), CliError> {
    let Context { client, out } = ctx;
    let request = v1::TailAuditLogRequest { lines, follow };
    let mut stream = client
        .audit()
        .tail_audit_log(client.signed_audit("TailAuditLog", request))
        .await?
        .into_inner();
    let mut collected = Vec::new();
    while let Some(line) = stream.message().await? {
        if out.json() && !follow {
            collected
                .push(serde_json::from_str::<serde_json::Value>(&line.line).unwrap_or_default());
        } else {
            println!("{}", line.line);
        }
    }
    if out.json() && !follow {
        out.print(json!({ "Records": collected }), String::new);
    }
    Ok(())
}

/// The chain start and head stored in a data directory, and how they were read (the `Head`
/// note of the output).
struct Anchors {
    start: Option<(u64, String)>,
    head: Option<(u64, String)>,
    note: String,
}

/// Reads the anchors of `dir`. With a passphrase the store is opened behind its barrier, so
/// that an edited anchor (or any edited record) is refused: the error names it. Without one
/// the anchors are read unchecked, and the note says so.
fn store_settings_shared(store: &StoreSettings) -> bool {
    !matches!(store, StoreSettings::Sled)
}

fn read_anchors(
    dir: &Path,
    store_settings: &StoreSettings,
    passphrase: Option<&SecretString>,
) -> Result<Anchors, String> {
    let unavailable = |note: String| Anchors {
        start: None,
        head: None,
        note,
    };
    let store_dir = crate::server::store_dir(dir);
    let store = store_settings;
    let opened: Result<Arc<dyn StoreBackend>, StoreError> = match store {
        // Opening makes a store where there is none: not beside metadata kept in etcd.
        StoreSettings::Sled if !store_dir.exists() => Err(StoreError(format!(
            "no sled store at {}: the metadata is on etcd? give --store etcd and its --etcd-* \
             settings",
            store_dir.display()
        ))),
        StoreSettings::Sled => SledBackend::open(&store_dir).map(|b| Arc::new(b) as _),
        #[cfg(feature = "etcd")]
        StoreSettings::Etcd(_) => crate::server::open_backend(store, dir),
    };
    let backend = match opened {
        Ok(backend) => backend,
        Err(e) => {
            return Ok(unavailable(format!(
                "chain start and head not compared ({e}; is the daemon running?)"
            )));
        }
    };
    let (store, how) = match passphrase {
        Some(passphrase) => {
            let (_, master) = seal::unseal(dir, passphrase).map_err(|e| e.to_string())?;
            let store = Store::open(backend, Barrier::new(master.record_integrity_key()))
                .map_err(|e| format!("the stored chain start and head cannot be trusted: {e}"))?;
            (store, "integrity checked")
        }
        None => (
            Store::unchecked_reader(backend),
            "read unchecked: give --passphrase-file or KEYHAVEN_PASSPHRASE to check their integrity",
        ),
    };
    // A daemon of a shared store keeps its chain's anchors under its own id.
    let chain = match store_settings_shared(store_settings) {
        true => crate::server::daemon_id(dir, false).map_err(|e| e.to_string())?,
        false => None,
    };
    let head = stored_head(&store, chain.as_deref());
    let start = stored_start(&store, chain.as_deref());
    store.close();
    Ok(match (start, head) {
        (Ok(start), Ok(head)) => Anchors {
            start: Some(start),
            head,
            note: format!("chain head compared, chain start compared ({how})"),
        },
        (Err(e), _) | (_, Err(e)) => {
            unavailable(format!("chain start and head unreadable: {e} ({how})"))
        }
    })
}

/// Runs `audit verify`; returns the exit code.
pub fn verify(
    file: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    passphrase_file: Option<PathBuf>,
    store: super::serve::StoreArgs,
    json_output: bool,
) -> i32 {
    let refuse = |problem: String| {
        if json_output {
            println!("{}", json!({ "Valid": false, "Problem": problem }));
        }
        eprintln!("keyhaven: {problem}");
        1
    };
    let store = match store.settings("sled") {
        Ok(store) => store,
        Err(problem) => return refuse(problem),
    };
    let (log, start, head, head_note) = match (&file, &data_dir) {
        (Some(file), _) => (
            file.clone(),
            None,
            None,
            "no chain start or head given (use --data-dir)".to_owned(),
        ),
        (None, Some(dir)) => {
            // A passphrase only when one is given: verify never prompts.
            let passphrase = if passphrase_file.is_some()
                || std::env::var_os(crate::server::PASSPHRASE_ENV).is_some()
            {
                match crate::server::read_passphrase(passphrase_file.as_deref(), false) {
                    Ok(passphrase) => Some(passphrase),
                    Err(e) => return refuse(e),
                }
            } else {
                None
            };
            match read_anchors(dir, &store, passphrase.as_ref()) {
                Ok(anchors) => (
                    dir.join("audit").join("audit.log"),
                    anchors.start,
                    anchors.head,
                    anchors.note,
                ),
                Err(problem) => return refuse(problem),
            }
        }
        (None, None) => {
            eprintln!("keyhaven: audit verify needs --file or --data-dir");
            return 2;
        }
    };
    let files = chain_files(&log);
    if files.is_empty() {
        eprintln!("keyhaven: no audit log at {}", log.display());
        return 1;
    }
    match verify_chain(&files, start, head) {
        Ok(report) => {
            if json_output {
                println!(
                    "{}",
                    json!({
                        "Valid": true,
                        "Records": report.records,
                        "FirstSequence": report.first_seq,
                        "LastSequence": report.last_seq,
                        "Files": report.files,
                        "Head": head_note,
                    })
                );
            } else {
                println!(
                    "ok: {} records (sequence {}–{}) in {} file(s); {head_note}",
                    report.records, report.first_seq, report.last_seq, report.files
                );
            }
            0
        }
        Err(error) => {
            if json_output {
                println!(
                    "{}",
                    json!({
                        "Valid": false,
                        "File": error.file.display().to_string(),
                        "Line": error.line,
                        "Problem": error.message,
                    })
                );
            }
            eprintln!("keyhaven: audit chain broken at {error}");
            1
        }
    }
}
