//! The metadata store on etcd, end to end: a real etcd of the test's own (Debian's `etcd`,
//! `tests/etcd/setup.sh`), real daemons and the real `keyhaven` binary. The behavioural suite
//! runs on etcd too (`tests/conformance.rs`, instance `etcd`); this target holds what is
//! particular to etcd, by concern: one daemon's store (`store`), the binary's commands
//! (`tools`), several daemons on one prefix (`cluster`), replays across them (`replays`), and
//! what one daemon made found at once through another (`found_at_once`). Helpers more than one of them use are here.
//!
//! Built with the `etcd` feature only (`cargo test --features etcd --test etcd`; `make test`
//! runs it): without it the backend is not in the crate.

#![cfg(feature = "etcd")]

mod cluster;
#[path = "../common/mod.rs"]
mod common;
mod found_at_once;
mod replays;
mod store;
mod tools;

use common::etcd::{EtcdProcess, MemberTls};
use common::{Backend, PASSPHRASE, TestDaemon, assert_refused};
use etcd_client::GetOptions;
use keyhaven::proto::v1;
use keyhaven::server::StoreSettings;
use keyhaven::store::{EtcdBackend, EtcdTls, StoreBackend, WriteBatch};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_keyhaven");

/// Every key and value under `prefix`, in key order.
async fn dump(etcd: &EtcdProcess, prefix: &str) -> Vec<(String, Vec<u8>)> {
    etcd.client()
        .await
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .expect("read etcd")
        .kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.value().to_vec(),
            )
        })
        .collect()
}

fn etcd_of(d: &TestDaemon) -> &EtcdProcess {
    d.etcd.as_ref().expect("the daemon's store is on etcd")
}

/// The etcd keys under `keyhaven/store/` naming `key_id`.
async fn records_of(d: &TestDaemon, key_id: &str) -> Vec<(String, Vec<u8>)> {
    dump(etcd_of(d), "keyhaven/store/")
        .await
        .into_iter()
        .filter(|(name, _)| name.contains(key_id))
        .collect()
}

/// Polls `check` every 10 ms until it holds; returns how long that took (failing past 5 s).
async fn within<F, Fut>(what: &str, check: F) -> std::time::Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within_secs(5, what, check).await
}

/// [`within`], failing past `limit` seconds.
async fn within_secs<F, Fut>(limit: u64, what: &str, mut check: F) -> std::time::Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(limit),
            "not within {limit} s: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

fn keyhaven_init(data_dir: &std::path::Path, endpoint: &str, prefix: Option<&str>) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(["init", "--store", "etcd", "--etcd-endpoints", endpoint])
        .arg("--data-dir")
        .arg(data_dir)
        .env("KEYHAVEN_PASSPHRASE", PASSPHRASE)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    if let Some(prefix) = prefix {
        command.args(["--etcd-prefix", prefix]);
    }
    command.output().expect("run keyhaven init")
}

async fn try_create_key(d: &TestDaemon, description: &str) -> Result<String, tonic::Status> {
    let request = keyhaven::proto::v1::CreateKeyRequest {
        description: description.into(),
        ..Default::default()
    };
    Ok(d.client
        .kms()
        .create_key(d.client.signed("CreateKey", request))
        .await?
        .into_inner()
        .key_metadata
        .expect("metadata")
        .key_id)
}

/// A child process killed (SIGKILL) when the test is done with it, or fails.
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `export NAME=VALUE` lines `keyhaven init` printed.
fn exports_of(init: &Output) -> std::collections::HashMap<String, String> {
    String::from_utf8_lossy(&init.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// `keyhaven serve` of a data directory on the etcd prefix `prefix`; the process (killed when
/// dropped) and the address it listens on.
async fn serve_on_etcd(
    top: &std::path::Path,
    data_dir: &std::path::Path,
    endpoint: &str,
    prefix: &str,
) -> (KilledOnDrop, String) {
    use std::io::BufRead;
    let config = top.join(format!(
        "{}.toml",
        data_dir.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nstore = \"etcd\"\n\
             etcd_endpoints = [\"{endpoint}\"]\netcd_prefix = \"{prefix}\"\n",
            data_dir.display(),
        ),
    )
    .unwrap();
    let mut serve = KilledOnDrop(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .env("KEYHAVEN_PASSPHRASE", PASSPHRASE)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn keyhaven serve"),
    );
    let stdout = serve.0.stdout.take().unwrap();
    let addr = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("# listening on ").map(str::to_owned))
    })
    .await
    .unwrap()
    .expect("the daemon printed its listening line");
    (serve, addr)
}
