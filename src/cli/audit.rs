//! `keyhaven audit tail` (through the daemon) and `keyhaven audit verify` (offline).

use super::commands::{CliError, Context};
use crate::audit::{chain_files, stored_head, stored_start, verify_chain};
use crate::proto::v1;
use crate::store::{SledBackend, Store};
use clap::Subcommand;
use serde_json::json;
use std::path::PathBuf;
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

/// Runs `audit verify`; returns the exit code.
pub fn verify(file: Option<PathBuf>, data_dir: Option<PathBuf>, json_output: bool) -> i32 {
    let (log, start, head, head_note) = match (&file, &data_dir) {
        (Some(file), _) => (
            file.clone(),
            None,
            None,
            "no chain start or head given (use --data-dir)".to_owned(),
        ),
        (None, Some(dir)) => {
            let log = dir.join("audit").join("audit.log");
            let store_dir = crate::server::store_dir(dir);
            // Opening makes a store where there is none: not beside metadata kept in etcd.
            let opened = if store_dir.exists() {
                SledBackend::open(&store_dir)
            } else {
                Err(crate::store::StoreError(format!(
                    "no sled store at {}: the metadata is on etcd?",
                    store_dir.display()
                )))
            };
            match opened {
                Ok(backend) => {
                    let store = Store::unchecked_reader(Arc::new(backend));
                    let head = stored_head(&store);
                    let start = stored_start(&store);
                    store.close();
                    match (start, head) {
                        (Ok(start), Ok(head)) => (
                            log,
                            Some(start),
                            head,
                            "chain head compared, chain start compared".to_owned(),
                        ),
                        (Err(e), _) | (_, Err(e)) => (
                            log,
                            None,
                            None,
                            format!("chain start and head unreadable: {e}"),
                        ),
                    }
                }
                Err(e) => (
                    log,
                    None,
                    None,
                    format!("chain start and head not compared ({e}; is the daemon running?)"),
                ),
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
