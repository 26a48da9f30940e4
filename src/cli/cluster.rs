//! `keyhaven cluster …`: the daemons that share one etcd prefix.

use super::OutputFormat;
use crate::server;
use clap::Subcommand;
use serde_json::json;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Make the data directory of a daemon joining an etcd prefix that `init --store etcd`
    /// initialised: the seal the prefix keeps, once the passphrase opens it. Then serve it
    /// with the same etcd settings; keys, keyring and identities are in etcd already.
    Join {
        #[arg(long)]
        data_dir: PathBuf,
        /// Read the passphrase from this file's first line (else KEYHAVEN_PASSPHRASE, else a prompt).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// `--store etcd` (the default here) and the `--etcd-*` settings.
        #[command(flatten)]
        store: super::serve::StoreArgs,
    },
    /// The daemons serving from an etcd prefix: id, address, version, which one runs the
    /// scheduler, and how long ago each last renewed its lease.
    Status {
        #[command(flatten)]
        store: super::serve::StoreArgs,
    },
}

fn fail(message: impl std::fmt::Display) -> i32 {
    eprintln!("keyhaven: {message}");
    1
}

pub fn run(command: ClusterCommand, output: OutputFormat) -> i32 {
    match command {
        ClusterCommand::Join {
            data_dir,
            passphrase_file,
            store,
        } => {
            let store = match store.settings("etcd") {
                Ok(store) => store,
                Err(e) => return fail(e),
            };
            let passphrase = match server::read_passphrase(passphrase_file.as_deref(), false) {
                Ok(p) => p,
                Err(e) => return fail(e),
            };
            match server::join_data_dir(&data_dir, &store, &passphrase) {
                Ok(account_id) => {
                    if output == OutputFormat::Json {
                        println!(
                            "{}",
                            json!({ "AccountId": account_id, "DataDir": data_dir.display().to_string() })
                        );
                    } else {
                        println!(
                            "{} joins account {account_id}: serve it with store = \"etcd\" and \
                             the same etcd settings",
                            data_dir.display()
                        );
                    }
                    0
                }
                Err(e) => fail(e),
            }
        }
        ClusterCommand::Status { store } => {
            let store = match store.settings("etcd") {
                Ok(store) => store,
                Err(e) => return fail(e),
            };
            match server::cluster_status(&store) {
                Ok(daemons) => {
                    if output == OutputFormat::Json {
                        println!("{}", json!({ "Daemons": daemons }));
                    } else if daemons.is_empty() {
                        println!("no daemon serves from this prefix");
                    } else {
                        for daemon in &daemons {
                            let field = |name: &str| {
                                daemon[name]
                                    .as_str()
                                    .map(str::to_owned)
                                    .unwrap_or_else(|| daemon[name].to_string())
                            };
                            println!(
                                "{}  {}  version {}  {}  {}heartbeat {} s ago",
                                field("Id"),
                                field("Address"),
                                field("Version"),
                                field("Process"),
                                if daemon["Scheduler"] == true {
                                    "scheduler leader  "
                                } else {
                                    ""
                                },
                                field("LastHeartbeatSecondsAgo"),
                            );
                        }
                    }
                    0
                }
                Err(e) => fail(e),
            }
        }
    }
}
