//! One daemon's store on etcd: where the records are, one init per prefix, edits made in etcd
//! itself, the backend's mapping of the store trait, outages, TLS and users, large transactions.

use super::*;

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
