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
use common::{Backend, PASSPHRASE, TestDaemon};
use etcd_client::GetOptions;
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
            || name == "keyhaven/holder"
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

    // A change cannot be made durable: refused, promptly, and not acknowledged.
    let started = std::time::Instant::now();
    let refused = try_create_key(&d, "during the outage").await;
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    // The signature is recorded against replay first: that write is what fails.
    common::assert_refused(refused, tonic::Code::Unavailable, "KMSInternalException");

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
    for i in 0..60 {
        if i == 20 {
            d.etcd.as_mut().unwrap().members[killed].kill();
        }
        if i == 40 {
            d.etcd.as_mut().unwrap().members[killed].restart();
        }
        match try_create_key(&d, &format!("load {i}")).await {
            Ok(key) => acknowledged.push(key),
            Err(status) => failed.push((i, status)),
        }
    }
    // Two of three members are a quorum: every call succeeded (the backend tries another
    // member when one does not answer).
    assert!(failed.is_empty(), "{failed:?}");

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
    use std::io::BufRead;
    let etcd = EtcdProcess::start().await;
    let top = tempfile::tempdir().unwrap();
    let data_dir = top.path().join("data");
    let init = keyhaven_init(&data_dir, &etcd.endpoint, Some("ops/"));
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let exports: std::collections::HashMap<String, String> = String::from_utf8_lossy(&init.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let config = top.path().join("keyhaven.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nstore = \"etcd\"\n\
             etcd_endpoints = [\"{}\"]\netcd_prefix = \"ops/\"\n",
            data_dir.display(),
            etcd.endpoint
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
    let keyring: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.config.data_dir.join("keyring.json")).unwrap())
            .unwrap();
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

/// One process holds a prefix at a time (an etcd lease on `<prefix>holder`): a second is
/// refused while the first runs and let in as soon as it stops; a daemon whose hold another
/// took writes nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_holds_a_prefix_and_one_that_lost_it_writes_nothing() {
    let mut d = TestDaemon::start(Backend::SealedOnEtcd).await;
    let kept = d.create_key("before the takeover").await.key_id;
    let refused = keyhaven::server::open_backend(&d.config.store, &d.config.data_dir)
        .err()
        .expect("a second holder is refused");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(
        refused.to_string(),
        format!(
            "metadata store: etcd prefix 'keyhaven/' is in use by another process ({} pid {}): \
             one daemon per prefix for now; a daemon that died releases it within 10 s",
            host.trim(),
            std::process::id()
        )
    );

    // Another process takes the prefix (as it could once this daemon's lease had expired).
    let mut client = etcd_of(&d).client().await;
    client.delete("keyhaven/holder", None).await.unwrap();
    client
        .put("keyhaven/holder", "intruder", None)
        .await
        .unwrap();
    let before = dump(etcd_of(&d), "keyhaven/store/").await;
    let refused = try_create_key(&d, "after the takeover").await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(dump(etcd_of(&d), "keyhaven/store/").await, before);

    d.stop().await;
    client.delete("keyhaven/holder", None).await.unwrap();
    // A stopped daemon lets go at once.
    let started = std::time::Instant::now();
    d.start_again().await;
    d.stop().await;
    let backend = keyhaven::server::open_backend(&d.config.store, &d.config.data_dir)
        .expect("the prefix is free once the daemon stopped");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    drop(backend);
    d.start_again().await;
    assert_eq!(d.list_all_keys().await, vec![kept]);
}

/// The hold's lease is kept alive, across the loss of the member its keep-alive stream was on:
/// well past the lease's life, the daemon still writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hold_outlives_its_lease_and_the_loss_of_the_leader() {
    let etcd = EtcdProcess::cluster(3).await;
    let mut d = TestDaemon::start_on_etcd(etcd, |_| {}).await;
    let leader = d.etcd.as_ref().unwrap().leader().await;
    d.etcd.as_mut().unwrap().members[leader].kill();
    let ttl = keyhaven::store::HOLD_TTL_SECONDS as u64;
    tokio::time::sleep(std::time::Duration::from_secs(ttl + 3)).await;
    let key = try_create_key(&d, "after the lease's life")
        .await
        .expect("the daemon still holds its prefix");
    assert!(!records_of(&d, &key).await.is_empty());
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
}

/// `keyhaven audit verify --data-dir` of an installation on etcd reads the chain start and
/// head from etcd (with `--store etcd` and its settings), checked under the barrier with the
/// passphrase; while the daemon holds the prefix it says so and checks the log alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_reads_the_chain_anchors_from_etcd() {
    let etcd = EtcdProcess::start().await;
    let endpoint = etcd.endpoint.clone();
    let mut d = TestDaemon::start_on_etcd(etcd, |_| {}).await;
    let key = d.create_key("audited").await.key_id;
    d.encrypt(&key, b"audited", &[]).await.unwrap();
    let data_dir = d.config.data_dir.clone();
    let verify = |store: &[&str]| {
        Command::new(BIN)
            .args(["--output", "json", "audit", "verify", "--data-dir"])
            .arg(&data_dir)
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
    // The daemon holds the prefix: the log alone, and the note says why.
    let held = verify(&on_etcd);
    assert!(held.status.success());
    let note = json(&held)["Head"].as_str().unwrap_or_default().to_owned();
    assert!(
        note.starts_with("chain start and head not compared") && note.contains("daemon running"),
        "{note}"
    );
    d.stop().await;
    let checked = verify(&on_etcd);
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
    // Without --store etcd it is told where to look.
    let sled = verify(&[]);
    let note = json(&sled)["Head"].as_str().unwrap_or_default().to_owned();
    assert!(note.contains("give --store etcd"), "{note}");
    assert!(!data_dir.join("store").exists());
}
