//! The binary and its commands on etcd: serving as its configuration says, `store migrate`,
//! `audit verify`, `join` and `cluster`.

use super::*;

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
