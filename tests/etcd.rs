//! The metadata store on etcd, end to end: a real etcd of the test's own (Debian's `etcd`,
//! `tests/etcd/setup.sh`), real daemons and the real `keyhaven` binary. The behavioural suite
//! runs on etcd too (`tests/conformance.rs`, instance `etcd`); this file holds what is
//! particular to etcd: where the records are, one init per prefix, edits made in etcd itself,
//! and the backend's own mapping of the store trait.
//!
//! Built with the `etcd` feature only (`cargo test --features etcd --test etcd`; `make test`
//! runs it): without it the backend is not in the crate.

#![cfg(feature = "etcd")]

mod common;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_lives_in_etcd_and_survives_a_daemon_restart() {
    let mut d = TestDaemon::start(Backend::SealedOnEtcd).await;
    let key = d.create_key("durable on etcd").await.key_id;
    let blob = d.encrypt(&key, b"kept", &[]).await.expect("Encrypt");
    // The records are in etcd, not in the data directory.
    assert!(
        !keyhaven::server::store_dir(&d.config.data_dir).exists(),
        "a sled store was made beside an etcd one"
    );
    let records = records_of(&d, &key).await;
    assert!(!records.is_empty(), "no record of {key} in etcd");
    let everything = dump(etcd_of(&d), "keyhaven/").await;
    assert!(
        everything
            .iter()
            .any(|(name, _)| name == "keyhaven/store/barrier/digest")
    );
    assert!(
        everything.iter().all(|(name, _)| name == "keyhaven/init"
            || name == "keyhaven/seal"
            || name.starts_with("keyhaven/daemons/")
            || name.starts_with("keyhaven/leader/")
            || name.starts_with("keyhaven/store/")),
        "{:?}",
        everything.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );

    d.restart().await;
    assert_eq!(d.state(&key).await, keyhaven::proto::v1::KeyState::Enabled);
    assert_eq!(d.decrypt(&blob, &[]).await.expect("Decrypt"), b"kept");
    assert!(d.list_all_keys().await.contains(&key));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_claims_an_etcd_prefix_once() {
    let etcd = EtcdProcess::start().await;
    let top = tempfile::tempdir().unwrap();
    let first = keyhaven_init(&top.path().join("a"), &etcd.endpoint, None);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains("export KEYHAVEN_ACCESS_KEY_ID="));
    let before = dump(&etcd, "").await;
    assert!(before.iter().any(|(name, _)| name == "keyhaven/init"));

    // A second installation on the same prefix, from another data directory: refused before
    // anything is written, in etcd or on disk.
    let second_dir = top.path().join("b");
    let second = keyhaven_init(&second_dir, &etcd.endpoint, Some("keyhaven/"));
    assert_eq!(second.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&second.stderr),
        "keyhaven: metadata store: etcd prefix 'keyhaven/' is already initialised: give \
         another etcd_prefix, \
         or remove the prefix (etcdctl del --prefix) to start over\n"
    );
    assert!(second.stdout.is_empty());
    assert!(
        !second_dir.exists(),
        "the refused init made its data directory"
    );
    assert_eq!(dump(&etcd, "").await, before);

    // The offline sled commands refuse it, and make no sled store beside it.
    for command in [&["store", "compact"][..], &["store", "authenticate"][..]] {
        let out = Command::new(BIN)
            .args(command)
            .arg("--data-dir")
            .arg(top.path().join("a"))
            .env("KEYHAVEN_PASSPHRASE", PASSPHRASE)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{command:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!(
                "keyhaven: {} has no sled store (its metadata is on etcd?): this command works \
                 on sled stores only\n",
                top.path().join("a").display()
            )
        );
    }
    // Nor does `audit verify` make one to read the chain head from.
    let verify = Command::new(BIN)
        .args(["audit", "verify", "--data-dir"])
        .arg(top.path().join("a"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(1));
    assert!(!top.path().join("a").join("store").exists());

    // Another prefix of the same cluster is another installation.
    let other = keyhaven_init(&top.path().join("c"), &etcd.endpoint, Some("team-b/"));
    assert!(
        other.status.success(),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    let after = dump(&etcd, "keyhaven/").await;
    assert_eq!(after, before);
    assert!(!dump(&etcd, "team-b/store/").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_edited_in_etcd_is_refused_at_start() {
    let mut d = TestDaemon::start(Backend::SealedOnEtcd).await;
    let key = d.create_key("edited behind the daemon's back").await.key_id;
    d.stop().await;
    let (name, original) = records_of(&d, &key)
        .await
        .into_iter()
        .find(|(name, _)| name.ends_with(&key))
        .expect("the key's record");
    let record = name.trim_start_matches("keyhaven/store/").to_owned();
    let mut client = etcd_of(&d).client().await;

    // One byte of the value changed (as an operator with etcdctl could).
    let mut edited = original.clone();
    let last = edited.len() - 1;
    edited[last] ^= 1;
    client.put(name.as_str(), edited, None).await.unwrap();
    let refused = d.try_start_again().await.expect_err("refused");
    assert_eq!(
        refused.to_string(),
        format!(
            "etcd store 'keyhaven/' refused: metadata store: record {record} failed its \
             integrity check: it was changed or moved while the daemon was not looking"
        )
    );

    // The record removed: the set no longer matches its digest.
    client.delete(name.as_str(), None).await.unwrap();
    let refused = d.try_start_again().await.expect_err("refused");
    assert_eq!(
        refused.to_string(),
        "etcd store 'keyhaven/' refused: metadata store: the store's records do not match its \
         digest: a record was rolled back, removed or added while the daemon was not looking"
    );

    // Put back as it was, the store is served again, the key with it.
    client.put(name.as_str(), original, None).await.unwrap();
    d.start_again().await;
    assert_eq!(d.state(&key).await, keyhaven::proto::v1::KeyState::Enabled);
}

/// A daemon of the previous version writes the digest in its format (`0x02 ‖ root` of the
/// earlier tree): a daemon of this version that hears it from the change feed stops serving
/// (the daemons of a shared store move to this version together), and restarted it checks that
/// store as it is and serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_in_the_earlier_format_written_beside_a_daemon_stops_it_until_restarted() {
    use keyhaven::store::barrier::{self, DIGEST_RECORD};
    let mut d = TestDaemon::start(Backend::SealedOnEtcd).await;
    let key = d.create_key("before the earlier digest").await.key_id;
    let (_, master) = keyhaven::seal::unseal(
        &d.config.data_dir,
        &keyhaven::secret::SecretString::new(PASSPHRASE.into()),
    )
    .expect("unseal the data directory");
    let integrity = keyhaven::store::Barrier::new(master.record_integrity_key());
    // Written only if no batch came between the read and the write (every batch writes the
    // digest): the records are then exactly those the earlier root is over.
    let mut client = etcd_of(&d).client().await;
    loop {
        let read = client
            .get("keyhaven/store/", Some(GetOptions::new().with_prefix()))
            .await
            .expect("read etcd");
        let mut digest_revision = 0;
        let mut tags = Vec::new();
        for kv in read.kvs() {
            let name = &kv.key()["keyhaven/store/".len()..];
            if name == DIGEST_RECORD {
                digest_revision = kv.mod_revision();
                continue;
            }
            let tag = barrier::stored_tag(kv.value()).expect("a tagged record");
            tags.push((name.to_vec(), tag));
        }
        let value = barrier::narrow_digest_value(tags);
        let earlier = integrity.seal(DIGEST_RECORD, &value).unwrap().0;
        let digest = "keyhaven/store/barrier/digest";
        let written = client
            .txn(
                etcd_client::Txn::new()
                    .when([etcd_client::Compare::mod_revision(
                        digest,
                        etcd_client::CompareOp::Equal,
                        digest_revision,
                    )])
                    .and_then([etcd_client::TxnOp::put(digest, earlier, None)]),
            )
            .await
            .expect("write etcd");
        if written.succeeded() {
            break;
        }
    }

    within("the daemon stops serving", || async {
        d.describe(&key).await.is_err()
    })
    .await;
    let result = d.describe(&key).await;
    assert!(
        result
            .as_ref()
            .is_err_and(|s| s.message().contains("failed its integrity checks")),
        "{result:?}"
    );
    common::assert_refused(
        result,
        tonic::Code::Unavailable,
        "DependencyTimeoutException",
    );

    d.restart().await;
    assert_eq!(d.state(&key).await, keyhaven::proto::v1::KeyState::Enabled);
}

#[tokio::test]
async fn the_backend_maps_the_store_trait_onto_etcd() {
    let etcd = EtcdProcess::start().await;
    let StoreSettings::Etcd(settings) = etcd.store_settings("mapping/") else {
        unreachable!()
    };
    // On a single-threaded runtime the backend's calls simply wait: its client has its own.
    let backend = EtcdBackend::connect(&settings).expect("connect");
    let mut client = etcd.client().await;
    client.put("mapping/store-not", "x", None).await.unwrap();
    client.put("mappinh", "x", None).await.unwrap();

    // The last change to a record in a batch counts, as in order.
    let mut batch = WriteBatch::new();
    for name in ["k/3", "k/1", "k/2", "l/1"] {
        batch.put(name, name);
    }
    batch.put("k/2", "second");
    batch.delete("l/1");
    backend.apply(batch).unwrap();
    assert_eq!(backend.get(b"k/2").unwrap(), Some(b"second".to_vec()));
    assert_eq!(backend.get(b"l/1").unwrap(), None);
    let names = |entries: Vec<(Vec<u8>, Vec<u8>)>| {
        entries
            .into_iter()
            .map(|(name, _)| String::from_utf8(name).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(backend.scan(b"k/", None, 10).unwrap()),
        ["k/1", "k/2", "k/3"]
    );
    assert_eq!(
        names(backend.scan(b"k/", Some(b"k/1"), 1).unwrap()),
        ["k/2"]
    );
    assert_eq!(
        names(backend.scan(b"k/", Some(b"k/3"), 10).unwrap()),
        Vec::<String>::new()
    );
    // Keys beside the prefix are not the store's.
    assert_eq!(
        names(backend.scan(b"", None, 100).unwrap()),
        ["k/1", "k/2", "k/3"]
    );
    assert_eq!(backend.max_batch_ops(), 128);

    // Scans longer than a range request's page (256) are read page by page, in order.
    for chunk in 0..5 {
        let mut batch = WriteBatch::new();
        for i in 0..120 {
            batch.put(format!("many/{:03}", chunk * 120 + i), "v");
        }
        backend.apply(batch).unwrap();
    }
    let all = names(backend.scan(b"many/", None, usize::MAX).unwrap());
    assert_eq!(all.len(), 600);
    assert!(all.windows(2).all(|w| w[0] < w[1]));
    let middle = names(backend.scan(b"many/", Some(b"many/099"), 300).unwrap());
    assert_eq!(middle.first().map(String::as_str), Some("many/100"));
    assert_eq!(middle.last().map(String::as_str), Some("many/399"));
    assert_eq!(middle.len(), 300);

    // A page larger than gRPC's default 4 MiB answer is still read.
    for chunk in 0..5 {
        let mut batch = WriteBatch::new();
        for i in 0..8 {
            batch.put(format!("large/{chunk}{i}"), vec![b'x'; 128 * 1024]);
        }
        backend.apply(batch).unwrap();
    }
    let large = backend.scan(b"large/", None, usize::MAX).unwrap();
    assert_eq!(large.len(), 40);
    assert!(large.iter().all(|(_, value)| value.len() == 128 * 1024));

    // A batch is one transaction: one etcd refuses (more operations than its --max-txn-ops,
    // 128 by default) leaves nothing of it behind.
    let mut big = WriteBatch::new();
    for i in 0..200 {
        big.put(format!("big/{i:03}"), "v");
    }
    big.delete("k/1");
    let error = backend.apply(big).unwrap_err();
    assert!(
        error.0.contains("too many operations in txn request"),
        "{error}"
    );
    assert!(backend.scan(b"big/", None, 1000).unwrap().is_empty());
    assert_eq!(backend.get(b"k/1").unwrap(), Some(b"k/1".to_vec()));
    backend.sync().unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_while_etcd_is_down_and_resume_when_it_is_back() {
    let mut d = TestDaemon::start(Backend::SealedOnEtcd).await;
    let before = d.create_key("before the outage").await.key_id;
    d.etcd.as_mut().unwrap().members[0].kill();
    // The watch breaks at once and cannot be mended: past the grace, the daemon knows its
    // view may be out of date.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    // Refused, promptly, before anything is tried: nothing served from a view that may be old.
    let started = std::time::Instant::now();
    let refused = try_create_key(&d, "during the outage").await;
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    assert!(
        refused.as_ref().is_err_and(|s| s
            .message()
            .contains("view of the cluster's store may be out of date")),
        "{refused:?}"
    );
    common::assert_refused(
        refused,
        tonic::Code::Unavailable,
        "DependencyTimeoutException",
    );
    common::assert_refused(
        d.describe(&before).await,
        tonic::Code::Unavailable,
        "DependencyTimeoutException",
    );

    d.etcd.as_mut().unwrap().members[0].restart();
    d.etcd.as_mut().unwrap().wait_until_serving().await;
    // The daemon's client reconnects by itself.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let after = loop {
        match try_create_key(&d, "after the outage").await {
            Ok(key) => break key,
            Err(status) if std::time::Instant::now() < deadline => {
                let _ = status;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(status) => panic!("no CreateKey 15 s after etcd came back: {status:?}"),
        }
    };

    // Every acknowledged key is there, nothing else, and the store passes its checks.
    d.restart().await;
    let mut keys = d.list_all_keys().await;
    keys.sort();
    let mut expected = vec![before, after];
    expected.sort();
    assert_eq!(keys, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_killed_mid_load_loses_no_acknowledged_key() {
    let etcd = EtcdProcess::cluster(3).await;
    let mut d = TestDaemon::start_on_etcd(etcd, |_| {}).await;
    // The leader, so that the cluster has to elect another under load.
    let killed = d.etcd.as_ref().unwrap().leader().await;
    let mut acknowledged = Vec::new();
    let mut failed = Vec::new();
    let mut slowest = (std::time::Duration::ZERO, 0);
    for i in 0..60 {
        if i == 20 {
            d.etcd.as_mut().unwrap().members[killed].kill();
        }
        if i == 40 {
            d.etcd.as_mut().unwrap().members[killed].restart();
        }
        let started = std::time::Instant::now();
        match try_create_key(&d, &format!("load {i}")).await {
            Ok(key) => acknowledged.push(key),
            // With how long the call took, and the slowest call of all: a failure tells a slow
            // election (calls before it slow too) from a client that kept a dead member.
            Err(status) => failed.push((i, started.elapsed(), status)),
        }
        slowest = slowest.max((started.elapsed(), i));
    }
    // Two of three members are a quorum: every call succeeded (the backend tries another
    // member when one does not answer).
    assert!(
        failed.is_empty(),
        "{failed:?}; slowest call (any outcome): {slowest:?}"
    );

    d.restart().await;
    let mut keys = d.list_all_keys().await;
    keys.sort();
    acknowledged.sort();
    assert_eq!(keys, acknowledged);
}

/// The operator's path: `keyhaven init --store etcd`, then `keyhaven serve --config` with the
/// etcd settings in the file; a key created is in etcd at once (the daemon is killed, not
/// stopped, right after the answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_from_etcd_as_its_config_says() {
    let etcd = EtcdProcess::start().await;
    let top = tempfile::tempdir().unwrap();
    let data_dir = top.path().join("data");
    let init = keyhaven_init(&data_dir, &etcd.endpoint, Some("ops/"));
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let exports = exports_of(&init);
    let (serve, addr) = serve_on_etcd(top.path(), &data_dir, &etcd.endpoint, "ops/").await;
    let client = keyhaven::client::Client::connect(
        &format!("http://{addr}"),
        keyhaven::client::ClientCredentials {
            access_key_id: exports["KEYHAVEN_ACCESS_KEY_ID"].clone(),
            secret_access_key: keyhaven::secret::SecretString::new(
                exports["KEYHAVEN_SECRET_ACCESS_KEY"].clone(),
            ),
            session_token: None,
            region: "local".into(),
        },
    )
    .await
    .expect("connect");
    let key = client
        .kms()
        .create_key(client.signed(
            "CreateKey",
            keyhaven::proto::v1::CreateKeyRequest::default(),
        ))
        .await
        .expect("CreateKey")
        .into_inner()
        .key_metadata
        .unwrap()
        .key_id;
    drop(serve);
    let stored = dump(&etcd, "ops/store/").await;
    assert!(
        stored.iter().any(|(name, _)| name.contains(&key)),
        "{key} is not in etcd"
    );
    assert!(!data_dir.join("store").exists());
}

/// A CA, a certificate for the etcd member (127.0.0.1) and one for Keyhaven as its client, in
/// PEM files.
fn etcd_pki(dir: &std::path::Path) -> MemberTls {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let issue = |name: &str, names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        )
    };
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let (cert_file, key_file) = issue(
        "member",
        vec!["127.0.0.1".into(), "localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let client = issue(
        "keyhaven",
        vec!["keyhaven".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    MemberTls {
        cert_file,
        key_file,
        client_ca_file: dir.join("ca.pem"),
        client: EtcdTls {
            ca_file: dir.join("ca.pem"),
            identity: Some(client),
        },
    }
}

/// etcd serving TLS only, with client certificates required: the daemon connects with its
/// certificate and verifies the member's; without its certificate, or trusting another CA,
/// it does not start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_reaches_etcd_over_tls_with_a_client_certificate() {
    let pki = tempfile::tempdir().unwrap();
    let etcd = EtcdProcess::start_with_tls(etcd_pki(pki.path())).await;
    assert!(etcd.endpoint.starts_with("https://"));
    let mut d = TestDaemon::start_on_etcd(etcd, |_| {}).await;
    let key = d.create_key("over TLS").await.key_id;
    assert!(!records_of(&d, &key).await.is_empty());

    d.stop().await;
    let good = d.config.store.clone();
    let StoreSettings::Etcd(settings) = &good else {
        unreachable!()
    };
    // No client certificate: the member refuses the handshake.
    let mut without = settings.clone();
    without.tls.as_mut().unwrap().identity = None;
    d.config.store = StoreSettings::Etcd(without);
    let refused = d.try_start_again().await.expect_err("refused");
    assert!(
        refused.to_string().starts_with(&format!(
            "etcd store 'keyhaven/' refused: metadata store: cannot reach etcd at {}",
            settings.endpoints[0]
        )),
        "{refused}"
    );
    // A CA that did not sign the member's certificate: the daemon refuses the member.
    let other = tempfile::tempdir().unwrap();
    let mut untrusting = settings.clone();
    untrusting.tls.as_mut().unwrap().ca_file = etcd_pki(other.path()).client.ca_file;
    d.config.store = StoreSettings::Etcd(untrusting);
    let refused = d.try_start_again().await.expect_err("refused");
    assert!(
        refused.to_string().contains("cannot reach etcd at")
            && refused.to_string().contains("invalid peer certificate"),
        "{refused}"
    );

    d.config.store = good;
    d.start_again().await;
    assert_eq!(d.state(&key).await, keyhaven::proto::v1::KeyState::Enabled);
}

/// etcd with authentication on, and a user allowed only the prefix `keyhaven/`: the daemon
/// logs in with the password from its file; a wrong password does not start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_logs_in_to_etcd_as_a_user_confined_to_its_prefix() {
    use etcd_client::Permission;
    let mut d = TestDaemon::start(Backend::SealedOnEtcd).await;
    let before = d.create_key("before authentication").await.key_id;
    d.stop().await;
    let endpoint = etcd_of(&d).endpoint.clone();
    let mut admin = etcd_of(&d).client().await;
    admin.user_add("root", "root password", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin
        .user_add("keyhaven", "keyhaven password", None)
        .await
        .unwrap();
    admin.role_add("keyhaven").await.unwrap();
    admin
        .role_grant_permission(
            "keyhaven",
            Permission::read_write("keyhaven/").with_prefix(),
        )
        .await
        .unwrap();
    admin.user_grant_role("keyhaven", "keyhaven").await.unwrap();
    admin.auth_enable().await.unwrap();
    drop(admin);

    let secrets = tempfile::tempdir().unwrap();
    let login = |password: &str| {
        let password_file = secrets.path().join("etcd-password");
        std::fs::write(&password_file, format!("{password}\n")).unwrap();
        let file = keyhaven::server::ConfigFile::parse(&format!(
            "store = \"etcd\"\netcd_endpoints = [\"{endpoint}\"]\netcd_user = \"keyhaven\"\n\
             etcd_password_file = \"{}\"",
            password_file.display()
        ))
        .unwrap();
        keyhaven::server::DaemonConfig::from_file(&file, Some("/tmp/unused".into()))
            .unwrap()
            .store
    };

    // Without the login, etcd refuses the daemon.
    let refused = d.try_start_again().await.expect_err("refused");
    assert!(
        refused.to_string().contains("user name is empty"),
        "{refused}"
    );
    let wrong = login("not the password");
    d.config.store = wrong;
    let refused = d.try_start_again().await.expect_err("refused");
    assert!(
        refused
            .to_string()
            .contains("authentication failed, invalid user ID or password"),
        "{refused}"
    );

    d.config.store = login("keyhaven password");
    d.start_again().await;
    let after = d.create_key("as a confined user").await.key_id;
    d.restart().await;
    for key in [before, after] {
        assert_eq!(d.state(&key).await, keyhaven::proto::v1::KeyState::Enabled);
    }
}

/// A child process killed (SIGKILL) when the test is done with it, or fails.
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Destroying a key retires its epoch and re-wraps every other key's material in pages of
/// batches; each batch must fit in one etcd transaction (etcd's default --max-txn-ops is 128),
/// with more keys than that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroying_a_key_among_many_fits_etcd_transactions() {
    const DAY: i64 = 86_400;
    let d = TestDaemon::start(Backend::SealedOnEtcd).await;
    let doomed = d.create_key("doomed").await.key_id;
    let mut kept = Vec::new();
    for i in 0..140 {
        kept.push(d.create_key(&format!("kept {i}")).await.key_id);
    }
    let blob = d.encrypt(&kept[139], b"still readable", &[]).await.unwrap();
    d.schedule_deletion(&doomed, Some(7)).await.unwrap();
    d.clock.advance(7 * DAY + 60);
    let report = d.run_due_tasks().await;
    assert_eq!((report.destroyed, report.failed), (1, 0));
    // The retirement is done: every other key re-wrapped, the old epoch key forgotten.
    // On etcd the keyring is a record of the store (behind its 33-byte integrity header).
    assert!(!d.config.data_dir.join("keyring.json").exists());
    let stored = dump(etcd_of(&d), "keyhaven/store/keystore/sealed/keyring").await;
    let keyring: serde_json::Value = serde_json::from_slice(&stored[0].1[33..]).unwrap();
    assert_eq!(keyring["epochs"].as_array().unwrap().len(), 1, "{keyring}");
    assert_ne!(keyring["current"], 0, "{keyring}");
    assert_eq!(
        d.decrypt(&blob, &[]).await.expect("Decrypt"),
        b"still readable"
    );
}

/// The signatures of state changes are kept against replay, then swept once stale in pages;
/// each page is one batch and must fit in one etcd transaction, with more than 128 of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_signatures_are_swept_in_batches_etcd_accepts() {
    let d = TestDaemon::start(Backend::SealedOnEtcd).await;
    for i in 0..150 {
        d.create_key(&format!("signed {i}")).await;
    }
    let seen = || async { dump(etcd_of(&d), "keyhaven/store/auth/seen/").await.len() };
    assert_eq!(seen().await, 150);
    d.clock.advance(keyhaven::auth::MAX_SKEW_SECONDS + 1);
    // The sweeper runs every second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while seen().await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} stale signatures left",
            seen().await
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
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

/// Two daemons on one prefix serve one set of keys: what one makes, the other uses; what one
/// disables, the other refuses within the bound (1 s, measured); identities made on one sign
/// in on the other; the second daemon's data directory was made from the seal etcd keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_on_one_prefix_serve_the_same_keys() {
    let a = TestDaemon::start(Backend::SealedOnEtcd).await;
    let b = a.join().await;
    // B's data directory holds its seal (from etcd), its id, its audit log: no keyring, no store.
    let mut files: Vec<String> = std::fs::read_dir(&b.config.data_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["audit", "daemon-id", "seal.json"]);

    let key = a.create_key("made on A").await.key_id;
    let seen = within("B knows A's key", || async {
        b.describe(&key).await.is_ok()
    })
    .await;
    assert!(seen < std::time::Duration::from_secs(1), "{seen:?}");
    let from_b = b
        .encrypt(&key, b"sealed on B", &[])
        .await
        .expect("Encrypt on B");
    assert_eq!(a.decrypt(&from_b, &[]).await.unwrap(), b"sealed on B");
    let from_a = a.encrypt(&key, b"sealed on A", &[]).await.unwrap();
    assert_eq!(b.decrypt(&from_a, &[]).await.unwrap(), b"sealed on A");

    // An alias made on B resolves on A.
    b.create_alias("alias/shared", &key).await.unwrap();
    within("A resolves B's alias", || async {
        a.describe("alias/shared").await.is_ok()
    })
    .await;

    // A user (and access key) made on A signs in on B.
    let user = a.create_user("operator", None).await;
    let on_b = b.client_with(user.credentials().clone()).await;
    within("B authenticates A's user", || async {
        on_b.kms()
            .list_keys(on_b.signed("ListKeys", v1::ListKeysRequest::default()))
            .await
            .is_err_and(|s| s.code() == tonic::Code::PermissionDenied)
    })
    .await;

    // Disabled on A: refused on B within the bound.
    a.disable(&key).await.unwrap();
    let disabled = std::time::Instant::now();
    let refused_after = within("B refuses the disabled key", || async {
        b.encrypt(&key, b"x", &[]).await.is_err_and(|s| {
            s.message().contains("DisabledException") || s.code() == tonic::Code::FailedPrecondition
        })
    })
    .await;
    assert!(
        disabled.elapsed() < std::time::Duration::from_secs(1),
        "B served a key disabled {refused_after:?} ago"
    );
    common::assert_refused(
        b.encrypt(&key, b"x", &[]).await,
        tonic::Code::FailedPrecondition,
        "KMSInvalidStateException",
    );

    // Two-person approval turned on for the account on A: B asks for approval too, and the
    // request it makes is listed on A.
    a.client
        .kms()
        .put_approval_settings(a.client.signed(
            "PutApprovalSettings",
            v1::PutApprovalSettingsRequest {
                account_actions: vec!["kms:ScheduleKeyDeletion".into()],
                keys: Vec::new(),
            },
        ))
        .await
        .expect("PutApprovalSettings on A");
    within("B requires approval", || async {
        b.schedule_deletion(&key, Some(7))
            .await
            .is_err_and(|s| s.message().contains("ApprovalRequiredException"))
    })
    .await;
    let listed = || async {
        a.client
            .kms()
            .list_approval_requests(a.client.signed(
                "ListApprovalRequests",
                v1::ListApprovalRequestsRequest::default(),
            ))
            .await
            .expect("ListApprovalRequests on A")
            .into_inner()
            .requests
            .len()
    };
    within("A lists the request B made", || async {
        listed().await == 1
    })
    .await;
    assert_eq!(b.state(&key).await, v1::KeyState::Disabled);
}

/// Both daemons change the same key at once (a tag each, 2 × 20 calls in flight): every change
/// is kept, none lost to the other daemon's, and both read the same record afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_on_two_daemons_lose_no_update() {
    let a = TestDaemon::start(Backend::SealedOnEtcd).await;
    let b = a.join().await;
    let key = a.create_key("contended").await.key_id;
    within("B knows the key", || async {
        b.describe(&key).await.is_ok()
    })
    .await;
    let tag = |d: &TestDaemon, n: usize| {
        let client = d.client.clone();
        let key = key.clone();
        async move {
            client
                .kms()
                .tag_resource(client.signed(
                    "TagResource",
                    v1::TagResourceRequest {
                        key_id: key,
                        tags: vec![v1::Tag {
                            tag_key: format!("t{n:02}"),
                            tag_value: "v".into(),
                        }],
                    },
                ))
                .await
        }
    };
    let mut calls = Vec::new();
    for n in 0..20 {
        calls.push(tokio::spawn(tag(&a, n)));
        calls.push(tokio::spawn(tag(&b, 20 + n)));
    }
    for call in calls {
        call.await.unwrap().expect("TagResource");
    }
    let tags = |d: &TestDaemon| {
        let client = d.client.clone();
        let key = key.clone();
        async move {
            let mut tags: Vec<String> = client
                .kms()
                .list_resource_tags(client.signed(
                    "ListResourceTags",
                    v1::ListResourceTagsRequest { key_id: key },
                ))
                .await
                .expect("ListResourceTags")
                .into_inner()
                .tags
                .into_iter()
                .map(|t| t.tag_key)
                .collect();
            tags.sort();
            tags
        }
    };
    let expected: Vec<String> = (0..40).map(|n| format!("t{n:02}")).collect();
    // Every tag is in the stored record; each daemon reads them all within the bound.
    let stored = records_of(&a, &key).await;
    let record = stored
        .iter()
        .find(|(name, _)| name.starts_with("keyhaven/store/key/"))
        .map(|(_, value)| String::from_utf8_lossy(&value[33..]).into_owned())
        .unwrap_or_default();
    let lost: Vec<_> = expected
        .iter()
        .filter(|t| !record.contains(t.as_str()))
        .collect();
    assert!(lost.is_empty(), "lost: {lost:?}");
    within("A reads every tag", || async { tags(&a).await == expected }).await;
    within("B reads every tag", || async { tags(&b).await == expected }).await;

    // Keys made on both at once are all there, on both.
    let mut made = Vec::new();
    for n in 0..10 {
        made.push(tokio::spawn({
            let (a, b) = (a.client.clone(), b.client.clone());
            async move {
                let client = if n % 2 == 0 { a } else { b };
                client
                    .kms()
                    .create_key(client.signed("CreateKey", v1::CreateKeyRequest::default()))
                    .await
                    .expect("CreateKey")
                    .into_inner()
                    .key_metadata
                    .unwrap()
                    .key_id
            }
        }));
    }
    let mut made: Vec<String> = futures_collect(made).await;
    made.push(key.clone());
    made.sort();
    let listed = |d: &TestDaemon| {
        let d = d.client.clone();
        let made = made.clone();
        async move {
            let mut keys: Vec<String> = d
                .kms()
                .list_keys(d.signed(
                    "ListKeys",
                    v1::ListKeysRequest {
                        limit: 1000,
                        ..Default::default()
                    },
                ))
                .await
                .unwrap()
                .into_inner()
                .keys
                .into_iter()
                .map(|k| k.key_id)
                .collect();
            keys.sort();
            keys == made
        }
    };
    within("A lists every key", || listed(&a)).await;
    within("B lists every key", || listed(&b)).await;
}

async fn futures_collect<T: std::fmt::Debug>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

/// A state change captured on its way to one daemon is refused as a replay by another:
/// after the first answered, and when both are sent at once (exactly one is carried out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_sent_to_two_daemons_is_carried_out_once() {
    let a = TestDaemon::start(Backend::SealedOnEtcd).await;
    let b = a.join().await;
    let key = a.create_key("replayed across daemons").await.key_id;
    within("B knows the key", || async {
        b.describe(&key).await.is_ok()
    })
    .await;
    // Behind a load balancer every daemon is reached by one name, and a signature made for
    // it verifies on each of them.
    let (on_a, on_b) = (balanced(&a).await, balanced(&b).await);
    let captured = |request: &tonic::Request<v1::DisableKeyRequest>| {
        let mut copy = tonic::Request::new(request.get_ref().clone());
        *copy.metadata_mut() = request.metadata().clone();
        copy
    };
    let first = on_a.signed(
        "DisableKey",
        v1::DisableKeyRequest {
            key_id: key.clone(),
        },
    );
    let replayed = captured(&first);
    on_a.kms()
        .disable_key(first)
        .await
        .expect("DisableKey on A");
    let refused = on_b.kms().disable_key(replayed).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|s| s.message().contains("replayed")),
        "{refused:?}"
    );
    common::assert_refused(
        refused,
        tonic::Code::Unauthenticated,
        "InvalidSignatureException",
    );

    // Both at once, ten times over: one is carried out, the other refused as a replay.
    for _ in 0..10 {
        let request = on_a.signed(
            "EnableKey",
            v1::EnableKeyRequest {
                key_id: key.clone(),
            },
        );
        let mut copy = tonic::Request::new(request.get_ref().clone());
        *copy.metadata_mut() = request.metadata().clone();
        let (to_a, to_b) = (on_a.kms(), on_b.kms());
        let (x, y) = tokio::join!(
            async move { to_a.clone().enable_key(request).await },
            async move { to_b.clone().enable_key(copy).await }
        );
        let carried_out = [x.is_ok(), y.is_ok()];
        assert_eq!(
            carried_out.iter().filter(|ok| **ok).count(),
            1,
            "{x:?} {y:?}"
        );
        for answer in [x, y] {
            if let Err(status) = answer {
                assert!(status.message().contains("replayed"), "{status:?}");
            }
        }
    }
}

/// A root client of `d` that addresses it as `kms.cluster.test`, the name a load balancer in
/// front of the cluster would have.
async fn balanced(d: &TestDaemon) -> keyhaven::client::Client {
    let channel = tonic::transport::Endpoint::from_shared(d.endpoint())
        .unwrap()
        .origin("http://kms.cluster.test".parse().unwrap())
        .connect()
        .await
        .expect("connect");
    keyhaven::client::Client::from_channel(channel, "kms.cluster.test", d.credentials.clone())
        .with_clock(std::sync::Arc::new(d.clock.clone()))
}

/// The scheduler runs on one daemon of the prefix (its leader, an etcd lease): a deletion
/// that falls due is carried out there once, and when the leader stops another daemon takes
/// over and carries out the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_daemon_runs_the_scheduler_and_another_takes_over() {
    const DAY: i64 = 86_400;
    let fast = |config: &mut keyhaven::server::DaemonConfig| {
        config.scheduler_interval = std::time::Duration::from_millis(200);
    };
    let mut a = TestDaemon::start_with(Backend::SealedOnEtcd, fast).await;
    let b = a.join().await;
    let id = |d: &TestDaemon| {
        std::fs::read_to_string(d.config.data_dir.join("daemon-id"))
            .unwrap()
            .trim()
            .to_owned()
    };
    let etcd_client = etcd_of(&a).client().await;
    let leader = || async {
        etcd_client
            .clone()
            .get("keyhaven/leader/scheduler", None)
            .await
            .unwrap()
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
    };
    assert_eq!(leader().await, Some(id(&a)));
    let audited = |d: &TestDaemon, key: &str| {
        std::fs::read_to_string(&d.config.audit_log)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains("keyhaven:scheduler") && line.contains("DeleteKey"))
            .filter(|line| line.contains(key))
            .count()
    };

    let first = a.create_key("due while A leads").await.key_id;
    b.schedule_deletion(&first, Some(7)).await.unwrap();
    a.clock.advance(7 * DAY + 60);
    within("the first deletion is carried out", || async {
        b.state(&first).await == v1::KeyState::Deleted
    })
    .await;
    within("A audits the deletion it carried out", || async {
        audited(&a, &first) == 1
    })
    .await;
    // Several passes of both schedulers later, still once.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(audited(&a, &first), 1);
    assert_eq!(audited(&b, &first), 0, "B carried it out too");

    let b_id = id(&b);
    a.stop().await;
    let second = b.create_key("due once A is gone").await.key_id;
    b.schedule_deletion(&second, Some(7)).await.unwrap();
    b.clock.advance(7 * DAY + 60);
    within("B takes the lead and carries out the second", || async {
        b.state(&second).await == v1::KeyState::Deleted
    })
    .await;
    assert_eq!(leader().await, Some(b_id));
    within("B audits the deletion it carried out", || async {
        audited(&b, &second) == 1
    })
    .await;
}

/// A key used only through a daemon that does not run the scheduler: that daemon writes the
/// use itself, and the daemon that leads shows it (only the leader wrote uses, and the others'
/// waited in memory until they stopped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_use_seen_by_a_daemon_that_does_not_lead_is_written() {
    let fast = |config: &mut keyhaven::server::DaemonConfig| {
        config.scheduler_interval = std::time::Duration::from_millis(200);
    };
    let a = TestDaemon::start_with(Backend::SealedOnEtcd, fast).await;
    let b = a.join().await;
    let key = a.create_key("used through B only").await.key_id;
    assert_eq!(a.describe(&key).await.unwrap().last_used_date, None);
    b.encrypt(&key, b"x", &[]).await.unwrap();
    within(
        "the daemon that leads shows the use the other saw",
        || async {
            let shown = a.describe(&key).await.unwrap();
            shown.last_used_operation == "Encrypt" && shown.last_used_date.is_some()
        },
    )
    .await;
}

/// A daemon's lease (its listing, its lead) is kept alive across the loss of the member its
/// keep-alive stream was on: well past the lease's life, it is still listed and still writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_outlives_its_life_and_the_loss_of_the_leader() {
    let etcd = EtcdProcess::cluster(3).await;
    let mut d = TestDaemon::start_on_etcd(etcd, |_| {}).await;
    let leader = d.etcd.as_ref().unwrap().leader().await;
    d.etcd.as_mut().unwrap().members[leader].kill();
    let ttl = keyhaven::store::HOLD_TTL_SECONDS as u64;
    tokio::time::sleep(std::time::Duration::from_secs(ttl + 3)).await;
    let key = within_key(&d).await;
    assert!(!records_of(&d, &key).await.is_empty());
    let listed = dump(etcd_of(&d), "keyhaven/daemons/").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
}

/// A CreateKey that succeeds within 5 s (the watch of the killed member moves to another).
async fn within_key(d: &TestDaemon) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match try_create_key(d, "after the lease's life").await {
            Ok(key) => return key,
            Err(status) if std::time::Instant::now() < deadline => {
                let _ = status;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(status) => panic!("the daemon no longer writes: {status:?}"),
        }
    }
}

/// `keyhaven store migrate` of the stopped daemon's data directory with `args` (the etcd
/// settings), and `passphrase`; retried while the daemon that just stopped still holds sled.
fn migrate(data_dir: &std::path::Path, passphrase: &str, args: &[&str]) -> Output {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = Command::new(BIN)
            .args(["store", "migrate", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env("KEYHAVEN_PASSPHRASE", passphrase)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("run keyhaven store migrate");
        let held = String::from_utf8_lossy(&out.stderr).contains("could not acquire lock");
        if !held || std::time::Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A single-node installation on sled moves into an etcd prefix with nothing lost: keys in
/// every state, rotated versions, aliases, users with their policies and access keys; every
/// old ciphertext decrypts from etcd. A wrong passphrase, a prefix another installation holds
/// and a second migration are refused, changing nothing in etcd or on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_migrate_moves_a_sled_installation_into_etcd_with_nothing_lost() {
    let etcd = EtcdProcess::start().await;
    let mut d = TestDaemon::start(Backend::Sealed).await;
    let key = d.create_key("moves to etcd").await.key_id;
    d.create_alias("alias/moved", &key).await.unwrap();
    let context = [("app", "migration")];
    let old = d
        .encrypt(&key, b"before the rotation", &context)
        .await
        .unwrap();
    d.rotate(&key).await.unwrap();
    let new = d
        .encrypt("alias/moved", b"after the rotation", &context)
        .await
        .unwrap();
    let disabled = d.create_key("disabled").await.key_id;
    d.disable(&disabled).await.unwrap();
    d.create_user(
        "alice",
        Some(r#"{"Statement":[{"Effect":"Allow","Action":"kms:Encrypt","Resource":"*"}]}"#),
    )
    .await;
    let alice_key = d
        .client
        .iam()
        .create_access_key(d.client.signed_iam(
            "CreateAccessKey",
            keyhaven::proto::v1::CreateAccessKeyRequest {
                user_name: "alice".into(),
            },
        ))
        .await
        .expect("CreateAccessKey")
        .into_inner();
    let alice_credentials = keyhaven::client::ClientCredentials::long_term(
        alice_key.access_key.expect("access key").access_key_id,
        keyhaven::secret::SecretString::new(alice_key.secret_access_key),
        &d.config.region,
    );
    let keys = d.list_all_keys().await;
    d.stop().await;
    let data_dir = d.config.data_dir.clone();
    let to = [
        "--etcd-endpoints",
        etcd.endpoint.as_str(),
        "--etcd-prefix",
        "moved/",
    ];

    // Where to is etcd: a sled target is refused before anything is read.
    let refused = migrate(&data_dir, PASSPHRASE, &["--store", "sled"]);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr),
        "keyhaven: store migrate moves a sled store to etcd: give --store etcd and its \
         --etcd-* settings\n"
    );
    // A directory that is no installation.
    let empty = tempfile::tempdir().unwrap();
    let refused = migrate(empty.path(), PASSPHRASE, &to);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr),
        format!(
            "keyhaven: {} is not an initialised Keyhaven data directory\n",
            empty.path().display()
        )
    );
    assert!(dump(&etcd, "").await.is_empty());

    // A wrong passphrase: nothing is claimed or copied, the sled store stays.
    let refused = migrate(&data_dir, "not the passphrase", &to);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr),
        format!(
            "keyhaven: the passphrase does not unseal {} (wrong passphrase?)\n",
            data_dir.display()
        )
    );
    assert!(dump(&etcd, "").await.is_empty());
    assert!(data_dir.join("store").is_dir());

    // A prefix another installation holds: refused before anything is copied.
    let top = tempfile::tempdir().unwrap();
    let other = keyhaven_init(&top.path().join("other"), &etcd.endpoint, Some("taken/"));
    assert!(other.status.success());
    let taken = dump(&etcd, "").await;
    let refused = migrate(
        &data_dir,
        PASSPHRASE,
        &[
            "--etcd-endpoints",
            &etcd.endpoint,
            "--etcd-prefix",
            "taken/",
        ],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr),
        "keyhaven: metadata store: etcd prefix 'taken/' is already initialised: give another \
         etcd_prefix, or remove the prefix (etcdctl del --prefix) to start over\n"
    );
    assert_eq!(dump(&etcd, "").await, taken);
    assert!(data_dir.join("store").is_dir());

    let moved = migrate(&data_dir, PASSPHRASE, &to);
    assert!(
        moved.status.success(),
        "{}",
        String::from_utf8_lossy(&moved.stderr)
    );
    let stdout = String::from_utf8_lossy(&moved.stdout);
    assert!(stdout.starts_with("migrated the "), "{stdout}");
    assert!(!data_dir.join("store").exists());
    assert!(data_dir.join("store.migrated-to-etcd").is_dir());
    let records = dump(&etcd, "moved/store/").await;
    assert!(records.iter().any(|(name, _)| name.contains(&key)));
    assert!(
        records
            .iter()
            .any(|(name, _)| name == "moved/store/barrier/digest")
    );
    // Once is enough: the data directory has no sled store left to move.
    let again = migrate(&data_dir, PASSPHRASE, &to);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&again.stderr),
        format!(
            "keyhaven: {} has no sled store to migrate (it was migrated already)\n",
            data_dir.display()
        )
    );
    assert_eq!(dump(&etcd, "moved/store/").await, records);

    // The same data directory served from etcd: everything is there.
    d.config.store = etcd.store_settings("moved/");
    d.start_again().await;
    assert_eq!(d.list_all_keys().await, keys);
    assert_eq!(
        d.decrypt(&old, &context).await.unwrap(),
        b"before the rotation"
    );
    assert_eq!(
        d.decrypt(&new, &context).await.unwrap(),
        b"after the rotation"
    );
    assert_eq!(
        d.state(&disabled).await,
        keyhaven::proto::v1::KeyState::Disabled
    );
    assert_eq!(d.describe("alias/moved").await.unwrap().key_id, key);
    assert_eq!(d.describe(&key).await.unwrap().current_key_version, 2);
    // Alice's access key and policy came along.
    let alice = d.client_with(alice_credentials).await;
    alice
        .kms()
        .encrypt(alice.signed(
            "Encrypt",
            keyhaven::proto::v1::EncryptRequest {
                key_id: key.clone(),
                plaintext: b"alice, after".to_vec(),
                ..Default::default()
            },
        ))
        .await
        .expect("alice encrypts after the migration");
    // And what changes now goes to etcd.
    let made = d.create_key("made on etcd").await.key_id;
    assert!(
        dump(&etcd, "moved/store/")
            .await
            .iter()
            .any(|(name, _)| name.contains(&made))
    );
    assert!(!data_dir.join("store").exists());
    // The keyring is in the store now, the file gone; the seal is kept for joining daemons;
    // the audit chain's anchors are under the daemon's id, and its chain verifies.
    assert!(!data_dir.join("keyring.json").exists());
    let kept = dump(&etcd, "moved/").await;
    let names: Vec<&str> = kept.iter().map(|(name, _)| name.as_str()).collect();
    assert!(
        names.contains(&"moved/store/keystore/sealed/keyring"),
        "{names:?}"
    );
    assert_eq!(
        kept.iter()
            .find(|(name, _)| name == "moved/seal")
            .map(|(_, v)| v.clone()),
        Some(std::fs::read(data_dir.join("seal.json")).unwrap())
    );
    let id = std::fs::read_to_string(data_dir.join("daemon-id")).unwrap();
    assert!(names.contains(&format!("moved/store/audit/head/{}", id.trim()).as_str()));
    assert!(!names.contains(&"moved/store/audit/head"), "{names:?}");
    let joined = d.join().await;
    assert_eq!(
        joined.decrypt(&old, &context).await.unwrap(),
        b"before the rotation"
    );
    d.stop().await;
    let verified = Command::new(BIN)
        .args(["--output", "json", "audit", "verify", "--data-dir"])
        .arg(&data_dir)
        .args([
            "--store",
            "etcd",
            "--etcd-endpoints",
            &etcd.endpoint,
            "--etcd-prefix",
            "moved/",
        ])
        .env("KEYHAVEN_PASSPHRASE", PASSPHRASE)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!(report["Valid"], true, "{report}");
    assert_eq!(
        report["Head"],
        "chain head compared, chain start compared (integrity checked)"
    );
}

/// `keyhaven audit verify --data-dir` of an installation on etcd reads the chain start and
/// head from etcd (with `--store etcd` and its settings), checked under the barrier with the
/// passphrase; while the daemon holds the prefix it says so and checks the log alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_reads_the_chain_anchors_from_etcd() {
    let etcd = EtcdProcess::start().await;
    let endpoint = etcd.endpoint.clone();
    let mut d = TestDaemon::start_on_etcd(etcd, |_| {}).await;
    let mut joined = d.join().await;
    let key = d.create_key("audited").await.key_id;
    d.encrypt(&key, b"audited", &[]).await.unwrap();
    within("the joined daemon knows the key", || async {
        joined.describe(&key).await.is_ok()
    })
    .await;
    joined.encrypt(&key, b"audited there", &[]).await.unwrap();
    let verify = |data_dir: &std::path::Path, store: &[&str]| {
        Command::new(BIN)
            .args(["--output", "json", "audit", "verify", "--data-dir"])
            .arg(data_dir)
            .args(store)
            .env("KEYHAVEN_PASSPHRASE", PASSPHRASE)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("run keyhaven audit verify")
    };
    let on_etcd = ["--store", "etcd", "--etcd-endpoints", endpoint.as_str()];
    let json = |out: &Output| -> serde_json::Value {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "not JSON: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    };
    // Each daemon writes its own chain, its anchors under its id; both are checked while the
    // daemons run (a shared prefix is never held by one process) and once they stopped.
    for running in [true, false] {
        if !running {
            d.stop().await;
            joined.stop().await;
        }
        for dir in [&d.config.data_dir, &joined.config.data_dir] {
            let checked = verify(dir, &on_etcd);
            assert!(
                checked.status.success(),
                "{}",
                String::from_utf8_lossy(&checked.stderr)
            );
            let report = json(&checked);
            assert_eq!(report["Valid"], true);
            assert_eq!(
                report["Head"],
                "chain head compared, chain start compared (integrity checked)"
            );
            assert!(report["Records"].as_u64().unwrap_or(0) >= 2, "{report}");
        }
    }
    let heads: Vec<String> = dump(etcd_of(&d), "keyhaven/store/audit/head")
        .await
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let id = |dir: &std::path::Path| {
        std::fs::read_to_string(dir.join("daemon-id"))
            .unwrap()
            .trim()
            .to_owned()
    };
    // Every record names its daemon.
    for dir in [&d.config.data_dir, &joined.config.data_dir] {
        let log = std::fs::read_to_string(dir.join("audit").join("audit.log")).unwrap();
        let daemon = format!("\"daemon\":\"{}\"", id(dir));
        assert!(log.lines().count() >= 2);
        assert!(log.lines().all(|line| line.contains(&daemon)), "{log}");
    }
    let mut expected = vec![
        format!("keyhaven/store/audit/head/{}", id(&d.config.data_dir)),
        format!("keyhaven/store/audit/head/{}", id(&joined.config.data_dir)),
    ];
    expected.sort();
    assert_eq!(heads, expected);
    // Without --store etcd it is told where to look.
    let sled = verify(&d.config.data_dir, &[]);
    let note = json(&sled)["Head"].as_str().unwrap_or_default().to_owned();
    assert!(note.contains("give --store etcd"), "{note}");
    assert!(!d.config.data_dir.join("store").exists());
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

/// `keyhaven cluster join` makes a second daemon's data directory from what the prefix keeps
/// (refused with a wrong passphrase or on a prefix never initialised, writing nothing); both
/// daemons serve the same keys; `keyhaven cluster status` lists them with the scheduler's
/// leader, and one fewer once a daemon stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_joins_a_daemon_and_lists_the_cluster() {
    let etcd = EtcdProcess::start().await;
    let top = tempfile::tempdir().unwrap();
    let first_dir = top.path().join("first");
    let init = keyhaven_init(&first_dir, &etcd.endpoint, Some("ops/"));
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let exports = exports_of(&init);
    let cluster = |args: &[&str], passphrase: &str| {
        Command::new(BIN)
            .args(["--output", "json", "cluster"])
            .args(args)
            .args(["--etcd-endpoints", etcd.endpoint.as_str()])
            .env("KEYHAVEN_PASSPHRASE", passphrase)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("run keyhaven cluster")
    };
    let second_dir = top.path().join("second");
    let second = second_dir.to_str().unwrap();

    // Refused: a wrong passphrase, a prefix nobody initialised. Nothing is written.
    let wrong = cluster(
        &["join", "--data-dir", second, "--etcd-prefix", "ops/"],
        "another passphrase, not this cluster's",
    );
    assert_eq!(wrong.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&wrong.stderr),
        format!("keyhaven: the passphrase does not unseal {second} (wrong passphrase?)\n")
    );
    assert!(!second_dir.join("seal.json").exists());
    let nowhere = cluster(
        &["join", "--data-dir", second, "--etcd-prefix", "other/"],
        PASSPHRASE,
    );
    assert_eq!(nowhere.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&nowhere.stderr),
        "keyhaven: etcd prefix 'other/' keeps no seal: initialise it first (keyhaven init \
         --store etcd), or give the prefix it was initialised on\n"
    );
    assert!(!second_dir.join("seal.json").exists());

    let joined = cluster(
        &["join", "--data-dir", second, "--etcd-prefix", "ops/"],
        PASSPHRASE,
    );
    assert!(
        joined.status.success(),
        "{}",
        String::from_utf8_lossy(&joined.stderr)
    );
    let said: serde_json::Value = serde_json::from_slice(&joined.stdout).unwrap();
    let (first_seal, _) = keyhaven::seal::unseal(
        &first_dir,
        &keyhaven::secret::SecretString::new(PASSPHRASE.into()),
    )
    .unwrap();
    assert_eq!(said["AccountId"], first_seal.account_id.as_str());
    // The same seal: the same file.
    assert_eq!(
        std::fs::read(second_dir.join("seal.json")).unwrap(),
        std::fs::read(first_dir.join("seal.json")).unwrap()
    );

    let (first, first_addr) = serve_on_etcd(top.path(), &first_dir, &etcd.endpoint, "ops/").await;
    let (second_daemon, second_addr) =
        serve_on_etcd(top.path(), &second_dir, &etcd.endpoint, "ops/").await;
    let connect = |addr: String| {
        let exports = exports.clone();
        async move {
            keyhaven::client::Client::connect(
                &format!("http://{addr}"),
                keyhaven::client::ClientCredentials::long_term(
                    exports["KEYHAVEN_ACCESS_KEY_ID"].clone(),
                    keyhaven::secret::SecretString::new(
                        exports["KEYHAVEN_SECRET_ACCESS_KEY"].clone(),
                    ),
                    "local",
                ),
            )
            .await
            .expect("connect")
        }
    };
    let (on_first, on_second) = (
        connect(first_addr.clone()).await,
        connect(second_addr.clone()).await,
    );
    let key = on_second
        .kms()
        .create_key(on_second.signed("CreateKey", v1::CreateKeyRequest::default()))
        .await
        .expect("CreateKey on the joined daemon")
        .into_inner()
        .key_metadata
        .unwrap()
        .key_id;
    within(
        "the first daemon encrypts under the second's key",
        || async {
            on_first
                .kms()
                .encrypt(on_first.signed(
                    "Encrypt",
                    v1::EncryptRequest {
                        key_id: key.clone(),
                        plaintext: b"shared".to_vec(),
                        ..Default::default()
                    },
                ))
                .await
                .is_ok()
        },
    )
    .await;

    let status = |expected: usize| {
        let cluster = &cluster;
        async move {
            let out = cluster(&["status", "--etcd-prefix", "ops/"], "");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let daemons = report["Daemons"].as_array().unwrap().clone();
            (daemons.len() == expected).then_some(daemons)
        }
    };
    within("both daemons are listed", || async {
        status(2).await.is_some()
    })
    .await;
    let daemons = status(2).await.expect("both daemons listed");
    let mut addresses: Vec<_> = daemons
        .iter()
        .map(|d| d["Address"].as_str().unwrap().to_owned())
        .collect();
    addresses.sort();
    let mut expected = vec![first_addr.clone(), second_addr];
    expected.sort();
    assert_eq!(addresses, expected);
    assert_eq!(daemons.iter().filter(|d| d["Scheduler"] == true).count(), 1);
    for daemon in &daemons {
        assert_eq!(daemon["Version"], env!("CARGO_PKG_VERSION"));
        assert!(
            daemon["LastHeartbeatSecondsAgo"].as_i64().unwrap() <= 10,
            "{daemon}"
        );
        let id = daemon["Id"].as_str().unwrap();
        let dir = if daemon["Address"] == first_addr.as_str() {
            &first_dir
        } else {
            &second_dir
        };
        assert_eq!(
            std::fs::read_to_string(dir.join("daemon-id"))
                .unwrap()
                .trim(),
            id
        );
    }
    // Killed: it leaves the list when its lease runs out.
    drop(second_daemon);
    let ttl = keyhaven::store::HOLD_TTL_SECONDS as u64;
    within_secs(ttl + 5, "a killed daemon leaves the list", || async {
        status(1).await.is_some()
    })
    .await;
    drop(first);
}

/// Three daemons on a three-member etcd cluster under concurrent load on the same keys
/// (CreateKey, Encrypt, TagResource from each, 45 tags on one key: a key holds at most 50), with the etcd leader killed and restarted
/// mid-load: a call may be refused while the cluster elects (and is then tried again), but
/// every acknowledged key and tag is there afterwards on every daemon, and every ciphertext
/// decrypts on a daemon other than the one that made it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_under_load_lose_nothing_when_a_member_dies() {
    let etcd = EtcdProcess::cluster(3).await;
    let mut a = TestDaemon::start_on_etcd(etcd, |_| {}).await;
    let b = a.join().await;
    let c = a.join().await;
    let shared = a.create_key("shared under load").await.key_id;
    for d in [&b, &c] {
        within("every daemon knows the shared key", || async {
            d.describe(&shared).await.is_ok()
        })
        .await;
    }
    /// One call, tried again while it is refused as unavailable (an election), for up to 10 s;
    /// signed anew a second later each time (a signature is used once, even by a call whose
    /// answer was lost).
    async fn retried<T, F, Fut>(mut call: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            match call().await {
                Ok(answer) => return answer,
                Err(status)
                    if status.code() == tonic::Code::Unavailable
                        && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
                }
                Err(status) => panic!("a call failed for good: {status:?}"),
            }
        }
    }
    let mut workers = Vec::new();
    for (n, client) in [a.client.clone(), b.client.clone(), c.client.clone()]
        .into_iter()
        .enumerate()
    {
        let shared = shared.clone();
        workers.push(tokio::spawn(async move {
            let (mut keys, mut tags, mut blobs) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..15 {
                let key = retried(|| {
                    let client = client.clone();
                    async move {
                        client
                            .kms()
                            .create_key(client.signed("CreateKey", v1::CreateKeyRequest::default()))
                            .await
                    }
                })
                .await
                .into_inner()
                .key_metadata
                .unwrap()
                .key_id;
                keys.push(key);
                let tag = format!("d{n}-{i:02}");
                retried(|| {
                    let (client, shared, tag) = (client.clone(), shared.clone(), tag.clone());
                    async move {
                        client
                            .kms()
                            .tag_resource(client.signed(
                                "TagResource",
                                v1::TagResourceRequest {
                                    key_id: shared,
                                    tags: vec![v1::Tag {
                                        tag_key: tag,
                                        tag_value: "kept".into(),
                                    }],
                                },
                            ))
                            .await
                    }
                })
                .await;
                tags.push(tag);
                let blob = retried(|| {
                    let (client, shared) = (client.clone(), shared.clone());
                    async move {
                        client
                            .kms()
                            .encrypt(client.signed(
                                "Encrypt",
                                v1::EncryptRequest {
                                    key_id: shared,
                                    plaintext: format!("from {n} #{i}").into_bytes(),
                                    ..Default::default()
                                },
                            ))
                            .await
                    }
                })
                .await
                .into_inner()
                .ciphertext_blob;
                blobs.push((n, i, blob));
            }
            (keys, tags, blobs)
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let killed = a.etcd.as_ref().unwrap().leader().await;
    a.etcd.as_mut().unwrap().members[killed].kill();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    a.etcd.as_mut().unwrap().members[killed].restart();
    a.etcd.as_mut().unwrap().wait_until_serving().await;
    let (mut keys, mut tags, mut blobs) = (Vec::new(), Vec::new(), Vec::new());
    for worker in workers {
        let (k, t, b) = worker.await.expect("a worker");
        keys.extend(k);
        tags.extend(t);
        blobs.extend(b);
    }
    keys.push(shared.clone());
    keys.sort();
    tags.sort();
    let daemons = [&a, &b, &c];
    for d in daemons {
        within("every acknowledged key is on every daemon", || async {
            let mut listed = d.list_all_keys().await;
            listed.sort();
            listed == keys
        })
        .await;
        let on_shared = || async {
            let mut on_shared: Vec<String> = d
                .client
                .kms()
                .list_resource_tags(d.client.signed(
                    "ListResourceTags",
                    v1::ListResourceTagsRequest {
                        key_id: shared.clone(),
                    },
                ))
                .await
                .unwrap()
                .into_inner()
                .tags
                .into_iter()
                .map(|t| t.tag_key)
                .collect();
            on_shared.sort();
            on_shared
        };
        // Within the bound every daemon has heard the last change; a tag missing then is lost.
        let started = std::time::Instant::now();
        while on_shared().await != tags && started.elapsed() < std::time::Duration::from_secs(5) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let stored = records_of(&a, &shared).await;
        let record = stored
            .iter()
            .find(|(name, _)| name.starts_with("keyhaven/store/key/"))
            .map(|(_, value)| String::from_utf8_lossy(&value[33..]).into_owned())
            .unwrap_or_default();
        let missing: Vec<_> = tags
            .iter()
            .filter(|t| !record.contains(t.as_str()))
            .collect();
        assert!(missing.is_empty(), "lost from the store: {missing:?}");
        assert_eq!(
            on_shared().await,
            tags,
            "the store has them; a cache does not"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
    for (n, i, blob) in blobs {
        let other = daemons[(n + 1) % 3];
        let plaintext = other.decrypt(&blob, &[]).await.expect("Decrypt elsewhere");
        assert_eq!(plaintext, format!("from {n} #{i}").into_bytes());
    }
}

/// Two daemons of a cluster with their key material in one PKCS#11 token both reach (one
/// SoftHSM2 token directory): a key made in the token by one daemon encrypts and decrypts on
/// the other, and a version rotated on the other is found by the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_share_a_pkcs11_token() {
    let etcd = EtcdProcess::start().await;
    let a = TestDaemon::start_on_etcd(etcd, |config| {
        config
            .add_pkcs11(common::pkcs11_settings())
            .expect("PKCS#11 keystore");
        config.keystore = "pkcs11:default".into();
    })
    .await;
    let b = a.join().await;
    let key = a.create_key("in the shared token").await.key_id;
    within("B knows the key", || async {
        b.describe(&key).await.is_ok()
    })
    .await;
    assert_eq!(b.describe(&key).await.unwrap().origin, "AWS_CLOUDHSM");
    let from_b = b
        .encrypt(&key, b"sealed by B's session", &[])
        .await
        .expect("Encrypt on B");
    assert_eq!(
        a.decrypt(&from_b, &[]).await.unwrap(),
        b"sealed by B's session"
    );
    let version = b.rotate(&key).await.expect("rotate on B");
    assert_eq!(version, 2);
    within("A sees the rotation", || async {
        a.describe(&key).await.unwrap().current_key_version == 2
    })
    .await;
    let from_a = a
        .encrypt(&key, b"under version 2", &[])
        .await
        .expect("Encrypt on A");
    assert_eq!(&from_a[17..21], &2u32.to_be_bytes());
    assert_eq!(b.decrypt(&from_a, &[]).await.unwrap(), b"under version 2");
}

/// The same user made on two daemons at the same moment, ten times over: once each time, the
/// other daemon refusing (`EntityAlreadyExistsException`, or `ConcurrentModificationException`
/// when the two met in the store); no user is made twice or half.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_changed_on_two_daemons_at_once_are_made_once() {
    let a = TestDaemon::start(Backend::SealedOnEtcd).await;
    let b = a.join().await;
    let create = |d: &TestDaemon, name: String| {
        let client = d.client.clone();
        async move {
            client
                .iam()
                .create_user(
                    client.signed_iam("CreateUser", v1::CreateUserRequest { user_name: name }),
                )
                .await
                .map(|answer| answer.into_inner().user.unwrap().user_id)
        }
    };
    let mut made = Vec::new();
    for i in 0..10 {
        let name = format!("twice-{i}");
        let (x, y) = tokio::join!(create(&a, name.clone()), create(&b, name.clone()));
        let answers = [x, y];
        let ok: Vec<_> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
        assert_eq!(ok.len(), 1, "{answers:?}");
        made.push((name, ok[0].clone()));
        for refused in answers.iter().filter_map(|a| a.as_ref().err()) {
            let reason = keyhaven::api::reason_of(refused).unwrap_or_default();
            assert!(
                reason == "EntityAlreadyExistsException"
                    || reason == "ConcurrentModificationException",
                "{refused:?}"
            );
            if reason == "ConcurrentModificationException" {
                assert_eq!(refused.code(), tonic::Code::Aborted);
            }
        }
    }
    // Both daemons hold each user with the id the one that made it answered.
    made.sort();
    for d in [&a, &b] {
        let client = d.client.clone();
        let made = made.clone();
        within("every user is there, once, as made", || {
            let (client, made) = (client.clone(), made.clone());
            async move {
                let mut users: Vec<(String, String)> = client
                    .iam()
                    .list_users(client.signed_iam("ListUsers", v1::ListUsersRequest {}))
                    .await
                    .expect("ListUsers")
                    .into_inner()
                    .users
                    .into_iter()
                    .filter(|u| u.user_name.starts_with("twice-"))
                    .map(|u| (u.user_name, u.user_id))
                    .collect();
                users.sort();
                users == made
            }
        })
        .await;
    }
}

/// A daemon whose etcd lease ran out (here revoked, as etcd does once a daemon was out of its
/// reach for longer than the lease's life) takes a new lease and is listed again under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_whose_lease_ran_out_is_listed_again() {
    let d = TestDaemon::start(Backend::SealedOnEtcd).await;
    let mut client = etcd_of(&d).client().await;
    let listing = |client: etcd_client::Client| async move {
        let mut client = client;
        client
            .get("keyhaven/daemons/", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap()
            .kvs()
            .iter()
            .map(|kv| (kv.key_str().unwrap().to_owned(), kv.lease()))
            .collect::<Vec<_>>()
    };
    let before = listing(client.clone()).await;
    assert_eq!(before.len(), 1, "{before:?}");
    client
        .lease_revoke(before[0].1)
        .await
        .expect("revoke the lease");
    assert!(listing(client.clone()).await.is_empty());
    within_secs(10, "listed again under a new lease", || {
        let client = client.clone();
        let before = before.clone();
        async move {
            let now = listing(client).await;
            now.len() == 1 && now[0].0 == before[0].0 && now[0].1 != before[0].1
        }
    })
    .await;
    d.create_key("after a new lease").await;
}

/// Nonce reservations are taken by transaction on the key record: two daemons encrypting
/// under one key (blocks of 3 counts, a version retired after 10) never share a block, so no
/// version encrypts more than its bound however the calls alternate, and the key rotates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_never_share_a_nonce_block() {
    let limit = 10u64;
    let a = TestDaemon::start_with(Backend::SealedOnEtcd, |config| {
        config.nonce_limit = limit;
        config.nonce_reservation_block = 3;
    })
    .await;
    let b = a.join().await;
    let key = a.create_key("counted on both").await.key_id;
    within("B knows the key", || async {
        b.describe(&key).await.is_ok()
    })
    .await;
    let mut per_version: std::collections::BTreeMap<u32, u64> = Default::default();
    for i in 0..40u32 {
        let d = if i % 3 == 0 { &a } else { &b };
        let blob = d
            .encrypt(&key, &i.to_be_bytes(), &[])
            .await
            .expect("Encrypt");
        let version = u32::from_be_bytes(blob[17..21].try_into().unwrap());
        *per_version.entry(version).or_default() += 1;
        // Every ciphertext decrypts on the other daemon.
        let other = if i % 3 == 0 { &b } else { &a };
        assert_eq!(other.decrypt(&blob, &[]).await.unwrap(), i.to_be_bytes());
    }
    assert!(per_version.len() >= 4, "{per_version:?}");
    for (version, count) in &per_version {
        assert!(
            *count <= limit,
            "version {version} encrypted {count} times: {per_version:?}"
        );
    }
}

/// An account one daemon of a cluster makes is served by the others: its root signs in on
/// them, its keys are its own there too, and a guardrail attached on one daemon caps the
/// member on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_made_on_one_daemon_is_served_by_the_others() {
    let etcd = EtcdProcess::start().await;
    let a = TestDaemon::start_on_etcd(etcd, |_| {}).await;
    let b = a.join().await;
    let (account, credentials) = a.create_account("on-a").await;
    let on_b = b.client_with(credentials).await;
    let list = |client: keyhaven::client::Client| async move {
        client
            .kms()
            .list_keys(client.signed("ListKeys", v1::ListKeysRequest::default()))
            .await
            .map(|r| r.into_inner().keys.len())
    };
    within("daemon b serves the account daemon a made", || {
        let on_b = on_b.clone();
        async move { list(on_b).await.is_ok() }
    })
    .await;
    let key = on_b
        .kms()
        .create_key(on_b.signed("CreateKey", v1::CreateKeyRequest::default()))
        .await
        .expect("CreateKey on b")
        .into_inner()
        .key_metadata
        .expect("metadata");
    let member_id = account.id;
    assert!(key.arn.contains(&member_id), "{}", key.arn);
    assert_eq!(list(on_b.clone()).await.unwrap(), 1);
    assert_eq!(
        list(a.client.clone()).await.unwrap(),
        0,
        "the member's key is not a's"
    );

    // A guardrail detached on a caps the member on b within a second.
    a.client
        .iam()
        .detach_guardrail_policy(a.client.signed_iam(
            "DetachGuardrailPolicy",
            v1::DetachGuardrailPolicyRequest {
                policy_name: "FullAccess".into(),
                target_id: member_id,
            },
        ))
        .await
        .expect("DetachGuardrailPolicy");
    within("daemon b caps the member", || {
        let on_b = on_b.clone();
        async move {
            list(on_b)
                .await
                .is_err_and(|s| s.code() == tonic::Code::PermissionDenied)
        }
    })
    .await;
}

/// Two daemons making an account of one name, and a guardrail of one name, at the same
/// moment: one of each is made, the other refused, and both daemons see the same one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_never_make_two_accounts_or_guardrails_of_one_name() {
    let etcd = EtcdProcess::start().await;
    let a = TestDaemon::start_on_etcd(etcd, |_| {}).await;
    let b = a.join().await;
    let make = |d: &TestDaemon| {
        let client = d.client.clone();
        async move {
            client
                .iam()
                .create_account(client.signed_iam(
                    "CreateAccount",
                    v1::CreateAccountRequest {
                        account_name: "twice".into(),
                    },
                ))
                .await
        }
    };
    let (on_a, on_b) = tokio::join!(make(&a), make(&b));
    let made = [&on_a, &on_b].iter().filter(|r| r.is_ok()).count();
    assert_eq!(made, 1, "a: {on_a:?}\nb: {on_b:?}");
    let policy = |d: &TestDaemon| {
        let client = d.client.clone();
        async move {
            client
                .iam()
                .create_guardrail_policy(client.signed_iam(
                    "CreateGuardrailPolicy",
                    v1::CreateGuardrailPolicyRequest {
                        policy_name: "Once".into(),
                        description: String::new(),
                        document: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"kms:Decrypt","Resource":"*"}]}"#.into(),
                    },
                ))
                .await
        }
    };
    let (on_a, on_b) = tokio::join!(policy(&a), policy(&b));
    let made = [&on_a, &on_b].iter().filter(|r| r.is_ok()).count();
    assert_eq!(made, 1, "a: {on_a:?}\nb: {on_b:?}");
    for d in [&a, &b] {
        within("both daemons list one account", || async {
            d.client
                .iam()
                .list_accounts(
                    d.client
                        .signed_iam("ListAccounts", v1::ListAccountsRequest {}),
                )
                .await
                .is_ok_and(|r| r.into_inner().accounts.len() == 1)
        })
        .await;
    }
}

/// A ciphertext one daemon answers decrypts on another at once, even under a key or a
/// version the other has not heard of yet: it catches up with the store rather than refuse
/// a genuine ciphertext as invalid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_ciphertext_decrypts_on_another_daemon_at_once() {
    let a = TestDaemon::start(Backend::SealedOnEtcd).await;
    let b = a.join().await;
    for round in 0..15u32 {
        // A key B may not have heard of, and a version B may not have heard of.
        let key = a.create_key("fresh").await.key_id;
        let blob = a.encrypt(&key, b"new key", &[]).await.expect("Encrypt");
        assert_eq!(
            b.decrypt(&blob, &[]).await.expect("a new key's ciphertext"),
            b"new key",
            "round {round}"
        );
        a.rotate(&key).await.expect("RotateKeyOnDemand");
        let blob = a.encrypt(&key, b"new version", &[]).await.expect("Encrypt");
        assert_eq!(
            b.decrypt(&blob, &[])
                .await
                .expect("a new version's ciphertext"),
            b"new version",
            "round {round}"
        );
    }
    // A version that was never made is still refused, after looking.
    let key = a.create_key("bounded").await.key_id;
    let mut blob = a.encrypt(&key, b"x", &[]).await.expect("Encrypt");
    blob[17..21].copy_from_slice(&9u32.to_be_bytes());
    assert_refused(
        b.decrypt(&blob, &[]).await,
        tonic::Code::InvalidArgument,
        "InvalidCiphertextException",
    );
}

/// A key, an alias and a grant one daemon has just made are found at once through another,
/// as a caller behind a load balancer expects: a daemon that has not heard of what a call
/// names catches up with the store before it judges it missing. What was never made is still
/// refused, after looking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_daemon_just_made_is_found_at_once_through_another() {
    let a = TestDaemon::start(Backend::SealedOnEtcd).await;
    let b = a.join().await;
    let root = format!("arn:aws:iam::{}:root", a.account_id);
    for round in 0..15u32 {
        let key = a.create_key("fresh").await.key_id;
        b.describe(&key)
            .await
            .unwrap_or_else(|s| panic!("round {round}: DescribeKey of a new key: {s:?}"));
        let alias = format!("alias/fresh-{round}");
        a.create_alias(&alias, &key).await.expect("CreateAlias");
        b.encrypt(&alias, b"x", &[])
            .await
            .unwrap_or_else(|s| panic!("round {round}: Encrypt under a new alias: {s:?}"));
        let made = grant_on(&a, &key, &root, "Encrypt").await;
        let mut with_token = b.client.signed(
            "Encrypt",
            v1::EncryptRequest {
                key_id: key.clone(),
                plaintext: b"x".to_vec(),
                ..Default::default()
            },
        );
        with_token.metadata_mut().append(
            keyhaven::api::GRANT_TOKEN_METADATA,
            made.grant_token.parse().expect("ascii"),
        );
        b.client
            .kms()
            .encrypt(with_token)
            .await
            .unwrap_or_else(|s| panic!("round {round}: a new grant's token: {s:?}"));
        let revoked = grant_on(&a, &key, &root, "Decrypt").await;
        b.client
            .kms()
            .revoke_grant(b.client.signed(
                "RevokeGrant",
                v1::RevokeGrantRequest {
                    key_id: key.clone(),
                    grant_id: revoked.grant_id,
                },
            ))
            .await
            .unwrap_or_else(|s| panic!("round {round}: RevokeGrant of a new grant: {s:?}"));
    }
    // Never made: refused as before, and nothing was made by asking.
    let keys_before = b.list_all_keys().await.len();
    assert_refused(
        b.describe("11111111-2222-3333-4444-555555555555").await,
        tonic::Code::NotFound,
        "NotFoundException",
    );
    assert_refused(
        b.encrypt("alias/never-made", b"x", &[]).await,
        tonic::Code::NotFound,
        "NotFoundException",
    );
    assert_eq!(b.list_all_keys().await.len(), keys_before);
}

/// A grant of `operation` on `key` to `grantee`, made through `d`.
async fn grant_on(
    d: &TestDaemon,
    key: &str,
    grantee: &str,
    operation: &str,
) -> v1::CreateGrantResponse {
    let request = v1::CreateGrantRequest {
        key_id: key.into(),
        grantee_principal: grantee.into(),
        operations: vec![operation.into()],
        ..Default::default()
    };
    d.client
        .kms()
        .create_grant(d.client.signed("CreateGrant", request))
        .await
        .expect("CreateGrant")
        .into_inner()
}

/// A user, a grant and another account's key one daemon has just made are found at once
/// through another: SimulatePrincipalPolicy of the new user, CreateGrant to it, ListGrants by
/// the new grant's id, and a member account's Decrypt of a ciphertext just made under the
/// management account's key (which account holds the key is looked for after catching up).
/// Who was never made is still refused, after looking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principals_grants_and_shared_keys_one_daemon_just_made_are_found_at_once_through_another()
{
    let a = TestDaemon::start(Backend::SealedOnEtcd).await;
    let b = a.join().await;
    let (account, credentials) = a.create_account("partner").await;
    let member_id = account.id;
    let partner = b.client_with(credentials).await;
    until_served("daemon b serves the partner account", &partner).await;
    let key = a.create_key("shared").await;
    let partition = key.arn.split(':').nth(1).expect("partition").to_owned();
    let user_arn = |name: &str| format!("arn:{partition}:iam::{}:user/{name}", a.account_id);
    let simulate = |name: String| {
        let client = b.client.clone();
        let request = v1::SimulatePrincipalPolicyRequest {
            policy_source_arn: user_arn(&name),
            action_name: "kms:Encrypt".into(),
            resource_arn: key.arn.clone(),
            ..Default::default()
        };
        async move {
            client
                .iam()
                .simulate_principal_policy(client.signed_iam("SimulatePrincipalPolicy", request))
                .await
        }
    };
    let shared_policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[
            {{"Sid":"Owner","Effect":"Allow","Principal":{{"AWS":"arn:{partition}:iam::{own}:root"}},"Action":"kms:*","Resource":"*"}},
            {{"Sid":"Partner","Effect":"Allow","Principal":{{"AWS":"arn:{partition}:iam::{member_id}:root"}},"Action":"kms:Decrypt","Resource":"*"}}]}}"#,
        own = a.account_id
    );
    for round in 0..10u32 {
        let grantee = format!("grantee-{round}");
        create_user_on(&a, &grantee).await;
        let request = v1::CreateGrantRequest {
            key_id: key.key_id.clone(),
            grantee_principal: user_arn(&grantee),
            operations: vec!["Encrypt".into()],
            ..Default::default()
        };
        b.client
            .kms()
            .create_grant(b.client.signed("CreateGrant", request))
            .await
            .unwrap_or_else(|s| panic!("round {round}: CreateGrant to a new user: {s:?}"));

        let simulated = format!("simulated-{round}");
        create_user_on(&a, &simulated).await;
        let decision = simulate(simulated)
            .await
            .unwrap_or_else(|s| {
                panic!("round {round}: SimulatePrincipalPolicy of a new user: {s:?}")
            })
            .into_inner();
        assert_eq!(decision.eval_decision, "implicitDeny", "round {round}");

        let grant = grant_on(&a, &key.key_id, &user_arn(&grantee), "Decrypt").await;
        let listed = grants_listed_on(&b, &key.key_id, &grant.grant_id).await;
        assert_eq!(listed.len(), 1, "round {round}: ListGrants of a new grant");
        assert_eq!(listed[0].grant_id, grant.grant_id, "round {round}");

        let shared = a
            .client
            .kms()
            .create_key(a.client.signed(
                "CreateKey",
                v1::CreateKeyRequest {
                    policy: shared_policy.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("CreateKey")
            .into_inner()
            .key_metadata
            .expect("metadata");
        let blob = a
            .encrypt(&shared.key_id, b"for the partner", &[])
            .await
            .expect("Encrypt");
        let decrypted = partner
            .kms()
            .decrypt(partner.signed(
                "Decrypt",
                v1::DecryptRequest {
                    ciphertext_blob: blob,
                    ..Default::default()
                },
            ))
            .await
            .unwrap_or_else(|s| panic!("round {round}: the partner's Decrypt on b: {s:?}"))
            .into_inner();
        assert_eq!(
            decrypted.plaintext.to_vec(),
            b"for the partner".to_vec(),
            "round {round}"
        );
    }
    // Never made: refused as before, and no grant was made to it.
    assert_refused(
        simulate("never-made".into()).await,
        tonic::Code::NotFound,
        "NoSuchEntityException",
    );
    let request = v1::CreateGrantRequest {
        key_id: key.key_id.clone(),
        grantee_principal: user_arn("never-made"),
        operations: vec!["Encrypt".into()],
        ..Default::default()
    };
    assert_refused(
        b.client
            .kms()
            .create_grant(b.client.signed("CreateGrant", request))
            .await,
        tonic::Code::InvalidArgument,
        "ValidationException",
    );
    assert_eq!(
        grants_listed_on(&b, &key.key_id, "").await.len(),
        20,
        "ten grants made on b, ten on a, none to never-made"
    );
}

/// The grants of `key` listed through `d` (the one `grant_id` names, unless it is empty).
async fn grants_listed_on(d: &TestDaemon, key: &str, grant_id: &str) -> Vec<v1::GrantListEntry> {
    let request = v1::ListGrantsRequest {
        key_id: key.into(),
        grant_id: grant_id.into(),
        ..Default::default()
    };
    d.client
        .kms()
        .list_grants(d.client.signed("ListGrants", request))
        .await
        .expect("ListGrants")
        .into_inner()
        .grants
}

/// A user of `name` made through `d`, with nothing else (the next call follows it at once).
async fn create_user_on(d: &TestDaemon, name: &str) {
    d.client
        .iam()
        .create_user(d.client.signed_iam(
            "CreateUser",
            v1::CreateUserRequest {
                user_name: name.into(),
            },
        ))
        .await
        .expect("CreateUser");
}

/// An access key one daemon has just made is accepted at once by another: a daemon that has
/// not heard of the key a signature names catches up with the store before it refuses the
/// call. A key never made is still refused as unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_key_one_daemon_just_made_signs_at_once_for_another() {
    let a = TestDaemon::start(Backend::SealedOnEtcd).await;
    let b = a.join().await;
    let authority = b.endpoint().trim_start_matches("http://").to_owned();
    for round in 0..10u32 {
        // Connected first, so that the call follows the access key at once.
        let channel = tonic::transport::Endpoint::from_shared(b.endpoint())
            .expect("endpoint")
            .connect()
            .await
            .expect("connect to B");
        let name = format!("fresh-{round}");
        let credentials = a.create_user_credentials(&name, None).await;
        let through_b = keyhaven::client::Client::from_channel(channel, &authority, credentials)
            .with_clock(std::sync::Arc::new(b.clock.clone()));
        let identity = through_b
            .iam()
            .get_caller_identity(
                through_b.signed_iam("GetCallerIdentity", v1::GetCallerIdentityRequest {}),
            )
            .await
            .unwrap_or_else(|s| panic!("round {round}: a new access key on B: {s:?}"));
        assert!(
            identity
                .into_inner()
                .arn
                .ends_with(&format!(":user/fresh-{round}")),
            "round {round}"
        );
    }
    let never = b
        .client_with(keyhaven::client::ClientCredentials::long_term(
            "KHAKNEVERMADE0000000".into(),
            keyhaven::secret::SecretString::new("x".repeat(40)),
            &b.config.region,
        ))
        .await;
    assert_refused(
        never
            .iam()
            .get_caller_identity(
                never.signed_iam("GetCallerIdentity", v1::GetCallerIdentityRequest {}),
            )
            .await,
        tonic::Code::Unauthenticated,
        "UnrecognizedClientException",
    );
}

/// Waits until `client`'s account answers a call.
async fn until_served(what: &str, client: &keyhaven::client::Client) {
    within(what, || {
        let client = client.clone();
        async move {
            client
                .kms()
                .list_keys(client.signed("ListKeys", v1::ListKeysRequest::default()))
                .await
                .is_ok()
        }
    })
    .await;
}

/// All the catch-ups of one call are served by its first quorum read: a member account's
/// Decrypt of a ciphertext naming a key never made misses twice (which account holds the
/// key, then the key itself) and costs one read, as does a batch of such ciphertexts each
/// naming another key. What could never have been made (an unreadable ciphertext, a grant id
/// of another form) costs none. Each call is answered as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_naming_what_was_never_made_costs_at_most_one_read_of_the_store() {
    let a = TestDaemon::start(Backend::SealedOnEtcd).await;
    let b = a.join().await;
    let (_, credentials) = a.create_account("partner").await;
    let partner = b.client_with(credentials).await;
    until_served("daemon b serves the partner account", &partner).await;
    let key = a.create_key("real").await.key_id;
    let blob = a.encrypt(&key, b"x", &[]).await.expect("Encrypt");
    // The real blob under another (never made) key id.
    let forged = |n: u128| {
        let mut forged = blob.clone();
        forged[1..17].copy_from_slice(&n.to_be_bytes());
        forged
    };
    let decrypt = |client: &keyhaven::client::Client, blob: Vec<u8>| {
        let client = client.clone();
        async move {
            client
                .kms()
                .decrypt(client.signed("Decrypt", common::batches::decrypt_item(&blob, &[])))
                .await
        }
    };
    let reads = || b.catch_up_reads();

    let before = reads();
    assert_refused(
        decrypt(&partner, forged(1)).await,
        tonic::Code::InvalidArgument,
        "InvalidCiphertextException",
    );
    assert_eq!(
        reads() - before,
        1,
        "a member's Decrypt of a forged ciphertext"
    );

    let before = reads();
    let items = (2..6)
        .map(|n| common::batches::decrypt_item(&forged(n), &[]))
        .collect();
    let results = common::batches::decrypt_batch(&b.client, items)
        .await
        .expect("DecryptBatch");
    assert_eq!(results.len(), 4);
    for result in &results {
        let error = result.error.as_ref().expect("a forged item is refused");
        assert_eq!(error.reason, "InvalidCiphertextException");
    }
    assert_eq!(reads() - before, 1, "a batch of four forged ciphertexts");

    let before = reads();
    assert_refused(
        decrypt(&partner, b"not a ciphertext".to_vec()).await,
        tonic::Code::InvalidArgument,
        "InvalidCiphertextException",
    );
    assert!(
        grants_listed_on(&b, &key, "not-a-grant-id")
            .await
            .is_empty()
    );
    assert_eq!(reads() - before, 0, "names no daemon could have made");

    // The real ciphertext still decrypts, through b, for its account.
    let opened = decrypt(&b.client, blob)
        .await
        .expect("Decrypt")
        .into_inner();
    assert_eq!(opened.plaintext.to_vec(), b"x".to_vec());
}
