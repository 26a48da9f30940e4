//! HSM objects are never destroyed on a guess: pending generations are journalled; orphans are reported.
//!
//! - Metadata rolled back (a data-directory backup restored) leaves the token objects made
//!   since in place: start-up reports them, `keystore orphans` lists them, rotation refuses
//!   to make a second object under an orphan's label, and only an authorised, audited
//!   `keystore destroy-orphan` destroys one.
//! - A generation the journal names and no key record has (a crash between the two) is
//!   destroyed at start-up, and its journal entry cleared; a completed create or rotation
//!   leaves no journal entry.

use crate::common::device::{independent_session, objects};
use crate::common::{Backend, TestDaemon, assert_refused};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use keyhaven::audit::{AuditRecord, chain_files};
use keyhaven::keys::PendingGeneration;
use keyhaven::proto::v1;
use keyhaven::store::WriteBatch;
use std::path::Path;
use std::process::Command;
use tonic::Code;

const KEYSTORE: &str = "pkcs11:default";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for entry in std::fs::read_dir(from).expect("read the data directory") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

/// Replaces the daemon's data directory with `backup` (the daemon stopped).
fn restore(d: &TestDaemon, backup: &Path) {
    for entry in std::fs::read_dir(d.dir.path()).expect("read the data directory") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).expect("remove");
        } else {
            std::fs::remove_file(&path).expect("remove");
        }
    }
    copy_dir(backup, d.dir.path());
}

/// `keyhaven <args>` against the daemon, as its root; (exit code, stdout, stderr).
async fn cli(d: &TestDaemon, args: &[&str]) -> (Option<i32>, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keyhaven"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KEYHAVEN_") {
            command.env_remove(&name);
        }
    }
    command
        .args(args)
        .env("KEYHAVEN_ENDPOINT", d.endpoint())
        .env("KEYHAVEN_ACCESS_KEY_ID", &d.credentials.access_key_id)
        .env(
            "KEYHAVEN_SECRET_ACCESS_KEY",
            d.credentials.secret_access_key.expose(),
        )
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run keyhaven");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn list_orphans(
    client: &keyhaven::client::Client,
) -> Result<Vec<(String, String, u32)>, tonic::Status> {
    let orphans = client
        .kms()
        .list_orphaned_key_material(client.signed(
            "ListOrphanedKeyMaterial",
            v1::ListOrphanedKeyMaterialRequest {},
        ))
        .await?
        .into_inner()
        .orphans;
    Ok(orphans
        .into_iter()
        .map(|o| (o.keystore, o.key_id, o.key_version))
        .collect())
}

async fn destroy_orphan(
    client: &keyhaven::client::Client,
    key: &str,
    version: u32,
) -> Result<v1::DestroyOrphanedKeyMaterialResponse, tonic::Status> {
    Ok(client
        .kms()
        .destroy_orphaned_key_material(client.signed(
            "DestroyOrphanedKeyMaterial",
            v1::DestroyOrphanedKeyMaterialRequest {
                keystore: KEYSTORE.into(),
                key_id: key.into(),
                key_version: version,
            },
        ))
        .await?
        .into_inner())
}

fn audit_records(path: &Path) -> Vec<AuditRecord> {
    chain_files(path)
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .expect("read the audit log")
                .lines()
                .map(|l| serde_json::from_str(l).expect("an audit record"))
                .collect::<Vec<AuditRecord>>()
        })
        .collect()
}

fn scrape(address: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connect to /metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("ask for /metrics");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read /metrics");
    response
}

/// The journal entries in a (stopped) daemon's store.
fn journal(d: &TestDaemon) -> Vec<PendingGeneration> {
    let store = d.open_store();
    store
        .scan(b"generation/", None, usize::MAX)
        .expect("scan the journal")
        .into_iter()
        .map(|(_, value)| serde_json::from_slice(&value).expect("a journal entry"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_metadata_backup_leaves_newer_hsm_keys_as_reported_orphans() {
    let mut d = TestDaemon::start_with(Backend::Pkcs11, |c| {
        c.set_metrics_listen("127.0.0.1:0")
            .expect("metrics listener");
    })
    .await;
    let account = d.account_id.clone();
    let kept = d.create_key("in the backup").await.key_id;
    d.stop().await;
    let backup = tempfile::tempdir().expect("backup directory");
    copy_dir(d.dir.path(), backup.path());

    // After the backup: a new key with data under it, and a new version of the old key.
    d.start_again().await;
    let newer = d.create_key("made after the backup").await.key_id;
    d.encrypt(&newer, b"only this key opens me", &[])
        .await
        .unwrap();
    assert_eq!(d.rotate(&kept).await.unwrap(), 2);
    d.stop().await;

    // The backup restored: the metadata no longer knows `newer`, nor version 2 of `kept`.
    restore(&d, backup.path());
    d.start_again().await;
    let session = independent_session();
    assert_eq!(
        objects(&session, &account, &newer, 1).len(),
        1,
        "the newer key was destroyed at start-up"
    );
    assert_eq!(
        objects(&session, &account, &kept, 2).len(),
        1,
        "the newer version was destroyed at start-up"
    );
    assert_eq!(objects(&session, &account, &kept, 1).len(), 1);

    // Reported: the listing, the CLI and the gauge.
    let mut expected = vec![
        (KEYSTORE.to_owned(), newer.clone(), 1),
        (KEYSTORE.to_owned(), kept.clone(), 2),
    ];
    expected.sort();
    assert_eq!(list_orphans(&d.client).await.unwrap(), expected);
    let (code, stdout, stderr) = cli(&d, &["keystore", "orphans", "--output", "json"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let listed: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let mut from_cli: Vec<(String, String, u32)> = listed["Orphans"]
        .as_array()
        .expect("Orphans")
        .iter()
        .map(|o| {
            (
                o["KeyStore"].as_str().unwrap().to_owned(),
                o["KeyId"].as_str().unwrap().to_owned(),
                o["KeyVersion"].as_u64().unwrap() as u32,
            )
        })
        .collect();
    from_cli.sort();
    assert_eq!(from_cli, expected);
    let metrics = scrape(d.metrics_addr().expect("metrics"));
    assert!(
        metrics.contains(&format!(
            "keyhaven_keystore_orphans{{keystore=\"{KEYSTORE}\"}} 2"
        )),
        "{metrics}"
    );

    // Rotating the old key again would make a second object under the orphan's label.
    let rotate = d.rotate(&kept).await;
    assert_refused(rotate, Code::FailedPrecondition, "KMSInvalidStateException");
    assert_eq!(d.describe(&kept).await.unwrap().current_key_version, 1);
    assert_eq!(objects(&session, &account, &kept, 2).len(), 1);

    // Destroying is authorised like other key-less actions: a user without a policy may not.
    let user = d.create_user("orphan-curious", None).await;
    assert_refused(
        destroy_orphan(&user, &newer, 1).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    assert_refused(
        list_orphans(&user).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    // Material a key record names is not an orphan, whoever asks.
    assert_refused(
        destroy_orphan(&d.client, &kept, 1).await,
        Code::FailedPrecondition,
        "KMSInvalidStateException",
    );
    assert_refused(
        destroy_orphan(&d.client, &newer, 7).await,
        Code::NotFound,
        "NotFoundException",
    );
    assert_eq!(objects(&session, &account, &newer, 1).len(), 1);
    assert_eq!(objects(&session, &account, &kept, 1).len(), 1);

    // Nothing is destroyed by another restart either.
    d.restart().await;
    assert_eq!(list_orphans(&d.client).await.unwrap(), expected);

    // The explicit command destroys one, and the audit log says who did.
    let (code, stdout, stderr) =
        cli(&d, &["keystore", "destroy-orphan", KEYSTORE, &newer, "1"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(&newer), "{stdout}");
    assert!(objects(&session, &account, &newer, 1).is_empty());
    assert_eq!(
        list_orphans(&d.client).await.unwrap(),
        vec![(KEYSTORE.to_owned(), kept.clone(), 2)]
    );
    let arn = format!("arn:keyhaven:kms:local:{account}:key/{newer}");
    let records = audit_records(&d.config.audit_log);
    let destroyed: Vec<&AuditRecord> = records
        .iter()
        .filter(|r| r.operation == "kms:DestroyOrphanedKeyMaterial" && r.keys.contains(&arn))
        .collect();
    assert!(
        destroyed
            .iter()
            .any(|r| r.outcome.as_ref().is_some_and(|o| o.code == "Ok")
                && r.principal.as_deref() == Some(&format!("arn:keyhaven:iam::{account}:root"))),
        "no audit record of the destruction: {destroyed:?}"
    );
    assert!(
        destroyed.iter().any(|r| r
            .outcome
            .as_ref()
            .is_some_and(|o| o.reason.as_deref() == Some("AccessDeniedException"))),
        "no audit record of the refused destruction: {destroyed:?}"
    );

    // Once the orphan is gone, the old key rotates again, to a fresh object.
    assert_eq!(
        destroy_orphan(&d.client, &kept, 2)
            .await
            .unwrap()
            .destroyed
            .unwrap()
            .key_version,
        2
    );
    assert_eq!(d.rotate(&kept).await.unwrap(), 2);
    assert_eq!(objects(&session, &account, &kept, 2).len(), 1);
    assert_eq!(list_orphans(&d.client).await.unwrap(), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_cut_short_is_undone_at_start_up_and_completed_ones_leave_no_journal() {
    let mut d = TestDaemon::start(Backend::Pkcs11).await;
    let account = d.account_id.clone();
    let key = d.create_key("journalled").await.key_id;
    assert_eq!(d.rotate(&key).await.unwrap(), 2);
    d.stop().await;
    // Create and rotation cleared their entries in the key record's batch.
    assert_eq!(journal(&d), vec![]);

    // What a crash between generating in the device and writing the key record leaves: the
    // journal entry, and the object (of a new key, and of a new version of `key`).
    let session = independent_session();
    let cut_short = uuid::Uuid::new_v4();
    let mut batch = WriteBatch::new();
    for (id, version) in [(cut_short, 1u32), (uuid::Uuid::parse_str(&key).unwrap(), 3)] {
        let entry = PendingGeneration {
            keystore: KEYSTORE.into(),
            key_id: id,
            version,
            started: d.now(),
        };
        batch.put(
            format!("generation/{}:{version}", id.hyphenated()).into_bytes(),
            serde_json::to_vec(&entry).unwrap(),
        );
        session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(32.into()),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Label(format!("keyhaven:{account}:{id}:{version}").into_bytes()),
                ],
            )
            .expect("make a half-created version");
    }
    d.open_store().commit_blocking(batch).expect("journal");
    // And one the crash cut short before the device made anything.
    let never_made = uuid::Uuid::new_v4();
    {
        let store = d.open_store();
        let mut batch = WriteBatch::new();
        let entry = PendingGeneration {
            keystore: KEYSTORE.into(),
            key_id: never_made,
            version: 1,
            started: d.now(),
        };
        batch.put(
            format!("generation/{}:1", never_made.hyphenated()).into_bytes(),
            serde_json::to_vec(&entry).unwrap(),
        );
        store.commit_blocking(batch).expect("journal");
    }

    d.start_again().await;
    let cut_short = cut_short.hyphenated().to_string();
    assert!(objects(&session, &account, &cut_short, 1).is_empty());
    assert!(objects(&session, &account, &key, 3).is_empty());
    assert_eq!(objects(&session, &account, &key, 1).len(), 1);
    assert_eq!(objects(&session, &account, &key, 2).len(), 1);
    assert_eq!(list_orphans(&d.client).await.unwrap(), vec![]);
    assert_eq!(d.rotate(&key).await.unwrap(), 3);
    d.stop().await;
    assert_eq!(journal(&d), vec![]);
}
