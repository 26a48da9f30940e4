//! Several daemons on one prefix: the same keys, concurrent changes carried out once, the
//! scheduler's lead, members lost under load, shared tokens, identities, nonces and accounts.

use super::*;

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
