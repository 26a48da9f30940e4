//! Record integrity: offline edits of the data directory are refused at load; destroyed material
//! is gone.

use super::common::{Backend, DAY, TestDaemon};
use keyhaven::keystore::MaterialRef;
use keyhaven::keystore::sealed::{KEYRING_FILE, material_record};
use keyhaven::store::{SledBackend, StoreBackend, WriteBatch};
use std::path::{Path, PathBuf};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use uuid::Uuid;

/// Bytes a record's stored form starts with before its value (format byte and tag).
const HEADER: usize = 33;

fn store_of(d: &TestDaemon) -> SledBackend {
    super::common::open_sled(&keyhaven::server::store_dir(d.dir.path()))
}

fn put_raw(d: &TestDaemon, name: &[u8], stored: Vec<u8>) {
    let store = store_of(d);
    let mut batch = WriteBatch::new();
    batch.put(name.to_vec(), stored);
    store.apply(batch).unwrap();
    store.sync().unwrap();
}

/// The `credential/…` record of the access key whose principal is `principal`.
fn credential_of(d: &TestDaemon, principal: &str) -> (Vec<u8>, Vec<u8>) {
    store_of(d)
        .scan(b"credential/", None, usize::MAX)
        .unwrap()
        .into_iter()
        .find(|(_, stored)| {
            serde_json::from_slice::<serde_json::Value>(&stored[HEADER..])
                .is_ok_and(|v| v["principal"] == principal)
        })
        .expect("the access key's record")
}

async fn refused_start(d: &mut TestDaemon) -> String {
    d.try_start_again()
        .await
        .expect_err("the daemon served an edited store")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_key_edited_into_the_roots_is_refused_at_start() {
    let mut d = TestDaemon::start(Backend::Sealed).await;
    d.create_user("app", None).await;
    d.stop().await;

    // The reviewer's edit: the app user's access key now says it is the root's.
    let (name, original) = credential_of(&d, "user/app");
    let text = String::from_utf8(original[HEADER..].to_vec()).unwrap();
    let escalated = text.replace("\"user/app\"", "\"root\"");
    assert_ne!(text, escalated);
    let mut edited = original[..HEADER].to_vec();
    edited.extend_from_slice(escalated.as_bytes());
    put_raw(&d, &name, edited);

    let message = refused_start(&mut d).await;
    assert!(
        message.contains(&String::from_utf8_lossy(&name).into_owned())
            && message.contains("integrity"),
        "{message}"
    );

    // Put back as it was, the store is served again, the app user still no more than itself.
    put_raw(&d, &name, original);
    d.start_again().await;
    let app = d.create_user("app2", None).await;
    let denied = app
        .kms()
        .create_key(app.signed(
            "CreateKey",
            keyhaven::proto::v1::CreateKeyRequest::default(),
        ))
        .await;
    assert_eq!(denied.unwrap_err().code(), tonic::Code::PermissionDenied);
}

/// A key made, the daemon stopped, its record (as stored) read, then the key disabled and the
/// daemon stopped again: the key, its record's name and its enabled record, to roll back to.
async fn disabled_after_a_stop(d: &mut TestDaemon) -> (String, Vec<u8>, Vec<u8>) {
    let key = d.create_key("rollback").await.key_id;
    d.stop().await;
    let record = format!("key/{key}").into_bytes();
    let enabled = store_of(d).get(&record).unwrap().expect("the key record");
    d.start_again().await;
    d.disable(&key).await.unwrap();
    d.stop().await;
    (key, record, enabled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_rolled_back_or_removed_on_its_own_is_refused_at_start() {
    let mut d = TestDaemon::start(Backend::Sealed).await;
    let (key, record, enabled) = disabled_after_a_stop(&mut d).await;
    let disabled = store_of(&d).get(&record).unwrap().expect("the key record");

    // The old record is validly tagged (the daemon wrote it), but the store moved on: the
    // digest of all records gives it away.
    put_raw(&d, &record, enabled);
    let message = refused_start(&mut d).await;
    assert!(message.contains("rolled back"), "{message}");

    // Put right, the key is served as last written: disabled.
    put_raw(&d, &record, disabled);
    d.start_again().await;
    assert_eq!(d.state(&key).await, keyhaven::proto::v1::KeyState::Disabled);
    d.stop().await;

    // Removed on its own: the same.
    {
        let store = store_of(&d);
        let mut batch = WriteBatch::new();
        batch.delete(record.clone());
        store.apply(batch).unwrap();
        store.sync().unwrap();
    }
    let message = refused_start(&mut d).await;
    assert!(message.contains("removed"), "{message}");

    // The digest removed too: refused, never adopted on the quiet.
    {
        let store = store_of(&d);
        let mut batch = WriteBatch::new();
        batch.delete(b"barrier/digest".to_vec());
        store.apply(batch).unwrap();
        store.sync().unwrap();
    }
    let message = refused_start(&mut d).await;
    assert!(message.contains("no integrity digest"), "{message}");
}

/// The server's overall health (service `""`), once it is `NOT_SERVING` or `seconds` have
/// passed.
async fn health_within(d: &TestDaemon, seconds: u64) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(d.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        let status = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        if status == ServingStatus::NotServing || std::time::Instant::now() >= deadline {
            return status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// With `store_check = "beside-serving"` a restart after a clean stop reads no record: the
/// tree and the key index kept at the stop stand in for them. A key record rolled back
/// meanwhile is refused when read (never served as it was), and from then on every call is,
/// and the health check says `NOT_SERVING`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checked_beside_serving_a_rolled_back_record_is_refused_when_read() {
    let mut d = TestDaemon::start_with(Backend::Sealed, |config| {
        config.store_check = keyhaven::store::StoreCheck::BesideServing;
    })
    .await;
    let other = d.create_key("other").await.key_id;
    let (key, record, enabled) = disabled_after_a_stop(&mut d).await;
    let aside = keyhaven::server::store_dir(d.dir.path()).join("aside");
    assert!(aside.join("tree").is_file() && aside.join("key-index").is_file());

    // Unedited, the restart serves from what was kept.
    d.start_again().await;
    assert_eq!(d.state(&key).await, keyhaven::proto::v1::KeyState::Disabled);
    assert_eq!(health_within(&d, 0).await, ServingStatus::Serving);
    d.stop().await;

    put_raw(&d, &record, enabled);
    // The pass beside serving may reach the record while the daemon is still starting (the
    // start then fails, naming it) or after (every call is then refused).
    let named = format!("record key/{key} failed its integrity check");
    match d.try_start_again().await {
        Err(refused) => assert!(refused.to_string().contains(&named), "{refused}"),
        Ok(()) => {
            // Never served as Enabled: refused when read (by this call, or by the material
            // check beside serving before it), and every call after it.
            let refused = d.describe(&key).await.unwrap_err();
            assert_eq!(refused.code(), tonic::Code::Internal, "{refused:?}");
            let after = d.describe(&other).await.unwrap_err();
            assert_eq!(after.code(), tonic::Code::Internal, "{after:?}");
            // And the health check says so (it looks every second).
            assert_eq!(health_within(&d, 5).await, ServingStatus::NotServing);
            d.stop().await;
        }
    }
    // Nothing was kept over the edit: checked at start, the store is refused there (once the
    // refused start has let go of the store: its checks end on their own threads).
    d.config.store_check = keyhaven::store::StoreCheck::AtStart;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let message = loop {
        let message = refused_start(&mut d).await;
        if !message.contains("could not acquire lock") || std::time::Instant::now() > deadline {
            break message;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(message.contains("rolled back"), "{message}");
}

fn every_file(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(every_file(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    every_file(dir)
        .into_iter()
        .filter(|path| {
            std::fs::read(path)
                .unwrap_or_default()
                .windows(needle.len())
                .any(|w| w == needle)
        })
        .collect()
}

/// The wrapped epoch keys in the keyring, decoded, and as the file spells them.
fn epoch_wraps(data_dir: &Path) -> Vec<Vec<u8>> {
    let text = std::fs::read_to_string(data_dir.join(KEYRING_FILE)).expect("the keyring");
    let keyring: serde_json::Value = serde_json::from_str(&text).unwrap();
    use base64::Engine as _;
    keyring["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|epoch| {
            let spelt = epoch["wrapped"].as_str().unwrap().to_owned();
            let raw = base64::engine::general_purpose::STANDARD
                .decode(&spelt)
                .unwrap();
            [spelt.into_bytes(), raw]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroyed_material_is_gone_from_every_file_after_compaction() {
    let mut d = TestDaemon::start(Backend::Sealed).await;
    let live = d.create_key("lives on").await.key_id;
    let doomed = d.create_key("destroyed").await.key_id;
    let of_live = d.encrypt(&live, b"still readable", &[]).await.unwrap();
    d.stop().await;

    let doomed_record = material_record(MaterialRef {
        key_id: Uuid::parse_str(&doomed).unwrap(),
        version: 1,
    });
    let stored = store_of(&d).get(&doomed_record).unwrap().expect("material");
    // Past the barrier's header and the epoch number: the wrap itself.
    let wrap = stored[HEADER + 5..].to_vec();
    let old_epochs = epoch_wraps(d.dir.path());
    assert!(!files_holding(d.dir.path(), &wrap).is_empty());

    d.start_again().await;
    d.schedule_deletion(&doomed, Some(7)).await.unwrap();
    d.clock.advance(8 * DAY);
    let report = d.run_due_tasks().await;
    assert_eq!(
        report.destroyed_keys,
        vec![Uuid::parse_str(&doomed).unwrap()]
    );
    d.stop().await;

    // Right after the destruction, nothing under the data directory unwraps the old wrap any
    // more: its epoch key is gone from the keyring (the wrap itself may linger in the log).
    for epoch in &old_epochs {
        assert_eq!(
            files_holding(d.dir.path(), epoch),
            Vec::<PathBuf>::new(),
            "a retired epoch key is still on disk"
        );
    }

    // The documented compaction step removes the lingering copies of the wrap too.
    let compacted = std::process::Command::new(env!("CARGO_BIN_EXE_keyhaven"))
        .args(["store", "compact", "--data-dir"])
        .arg(d.dir.path())
        .output()
        .expect("run keyhaven store compact");
    assert!(
        compacted.status.success(),
        "{}",
        String::from_utf8_lossy(&compacted.stderr)
    );
    assert_eq!(
        files_holding(d.dir.path(), &wrap),
        Vec::<PathBuf>::new(),
        "the destroyed material's wrap survived compaction"
    );

    // Everything else is as it was, and the destruction is on record.
    d.start_again().await;
    assert_eq!(d.decrypt(&of_live, &[]).await.unwrap(), b"still readable");
    let log = std::fs::read_to_string(&d.config.audit_log).unwrap();
    let destroyed = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|r| r["operation"] == "DeleteKey")
        .expect("an audit record of the scheduled destruction");
    assert_eq!(destroyed["principal"], "keyhaven:scheduler");
    assert!(destroyed["keys"][0].as_str().unwrap().ends_with(&doomed));
}

fn audit_records(d: &TestDaemon, operation: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(&d.config.audit_log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|r| r["operation"] == operation)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_scheduler_does_on_its_own_is_audited() {
    use keyhaven::proto::v1;
    let d = TestDaemon::start_with(Backend::Sealed, |config| {
        config.scheduler_interval = std::time::Duration::from_secs(1);
    })
    .await;
    // An automatic rotation.
    let key = d.create_key("rotates by itself").await.key_id;
    d.client
        .kms()
        .enable_key_rotation(d.client.signed(
            "EnableKeyRotation",
            v1::EnableKeyRotationRequest {
                key_id: key.clone(),
                rotation_period_in_days: Some(90),
            },
        ))
        .await
        .expect("EnableKeyRotation");
    // A session that will expire.
    let root_arn = format!("arn:keyhaven:iam::{}:root", d.account_id);
    let trust = format!(
        r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{root_arn}"}},"Action":"sts:AssumeRole"}}]}}"#
    );
    let role = d
        .client
        .iam()
        .create_role(d.client.signed_iam(
            "CreateRole",
            v1::CreateRoleRequest {
                role_name: "short".into(),
                assume_role_policy_document: trust,
            },
        ))
        .await
        .expect("CreateRole")
        .into_inner()
        .role
        .expect("role");
    let session = d
        .client
        .iam()
        .assume_role(d.client.signed_iam(
            "AssumeRole",
            v1::AssumeRoleRequest {
                role_arn: role.arn.clone(),
                role_session_name: "brief".into(),
                duration_seconds: Some(900),
                ..Default::default()
            },
        ))
        .await
        .expect("AssumeRole")
        .into_inner();
    let session_key = session.credentials.expect("credentials").access_key_id;
    assert!(audit_records(&d, "RotateKey").is_empty());
    assert!(audit_records(&d, "DeleteExpiredCredentials").is_empty());

    d.clock.advance(91 * DAY);
    let report = d.run_due_tasks().await;
    assert_eq!(report.rotated_keys, vec![Uuid::parse_str(&key).unwrap()]);
    let rotated = audit_records(&d, "RotateKey");
    assert_eq!(rotated.len(), 1, "{rotated:?}");
    assert_eq!(rotated[0]["principal"], "keyhaven:scheduler");
    assert!(rotated[0]["keys"][0].as_str().unwrap().ends_with(&key));

    // The sweep (every second here) removes the expired session and says so.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let expired = loop {
        let found = audit_records(&d, "DeleteExpiredCredentials");
        if !found.is_empty() || std::time::Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(expired[0]["principal"], "keyhaven:scheduler");
    assert_eq!(expired[0]["access_key_id"], session_key.as_str());
    assert!(
        expired[0]["keys"][0]
            .as_str()
            .unwrap()
            .ends_with(":assumed-role/short/brief")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_digest_was_removed_is_not_adopted() {
    let mut d = TestDaemon::start(Backend::Sealed).await;
    d.create_user("app", None).await;
    d.stop().await;
    // The attacker's edit, and the digest removed so that the operator is tempted to adopt.
    let (name, original) = credential_of(&d, "user/app");
    let text = String::from_utf8(original[HEADER..].to_vec()).unwrap();
    let mut edited = original[..HEADER].to_vec();
    edited.extend_from_slice(text.replace("\"user/app\"", "\"root\"").as_bytes());
    put_raw(&d, &name, edited);
    {
        let store = store_of(&d);
        let mut batch = WriteBatch::new();
        batch.delete(b"barrier/digest".to_vec());
        store.apply(batch).unwrap();
        store.sync().unwrap();
    }
    let message = refused_start(&mut d).await;
    assert!(message.contains("no integrity digest"), "{message}");
    let adopted = std::process::Command::new(env!("CARGO_BIN_EXE_keyhaven"))
        .args(["store", "authenticate", "--data-dir"])
        .arg(d.dir.path())
        .env("KEYHAVEN_PASSPHRASE", super::common::PASSPHRASE)
        .output()
        .expect("run keyhaven store authenticate");
    assert!(!adopted.status.success());
    let stderr = String::from_utf8_lossy(&adopted.stderr);
    assert!(
        stderr.contains("authenticated since it was made") && stderr.contains("tampered"),
        "{stderr}"
    );
    // Nothing was adopted: the daemon still refuses the store.
    let message = refused_start(&mut d).await;
    assert!(message.contains("no integrity digest"), "{message}");
}
