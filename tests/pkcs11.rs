//! What only the PKCS#11 keystore must show, checked through a second, independent PKCS#11
//! session on the same SoftHSM2 token: the objects exist with the right attributes, their value
//! cannot be read, deletion destroys them, a missing object is reported, a lost login is
//! recovered, and many clients at once get correct answers through the session pool.

mod common;

use common::device::{independent_session, objects, session_copies};
use common::{Backend, DAY, TestDaemon, assert_refused, pkcs11_settings};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType};
use keyhaven::proto::v1;
use tonic::Code;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_objects_stay_in_the_device() {
    let d = TestDaemon::start(Backend::Pkcs11).await;
    let key = d.create_key("in the device").await;
    assert_eq!(key.keystore, "pkcs11:default");
    assert_eq!(key.origin, "AWS_CLOUDHSM");
    d.rotate(&key.key_id).await.unwrap();
    let session = independent_session();
    assert!(session_copies(&session, &d.account_id, &key.key_id, 2).is_empty());
    // Use makes one session copy of the version, in the device.
    let blob = d.encrypt(&key.key_id, b"copied", &[]).await.unwrap();
    assert_eq!(d.decrypt(&blob, &[]).await.unwrap(), b"copied");
    let copies = session_copies(&session, &d.account_id, &key.key_id, 2);
    assert_eq!(copies.len(), 1, "one session copy of the version in use");
    let mut checked = vec![(copies[0], 2, false)];
    for version in [1, 2] {
        let found = objects(&session, &d.account_id, &key.key_id, version);
        assert_eq!(found.len(), 1, "version {version}");
        checked.push((found[0], version, true));
    }
    // Token objects and session copies alike: sensitive, not extractable, value unreadable.
    for (object, version, token) in checked {
        let attributes = session
            .get_attributes(
                object,
                &[
                    AttributeType::Token,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::Private,
                    AttributeType::ValueLen,
                    AttributeType::Id,
                ],
            )
            .expect("attributes");
        let mut id = Uuid::parse_str(&key.key_id).unwrap().as_bytes().to_vec();
        id.extend_from_slice(&version.to_be_bytes());
        for expected in [
            Attribute::Token(token),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Private(true),
            Attribute::ValueLen(32.into()),
            Attribute::Id(id),
        ] {
            assert!(
                attributes.contains(&expected),
                "{expected:?} not in {attributes:?}"
            );
        }
        let value = session
            .get_attribute_info(object, &[AttributeType::Value])
            .expect("attribute info");
        assert!(
            matches!(value.as_slice(), [AttributeInfo::Sensitive]),
            "the key's value must not be readable: {value:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_destroys_every_version_in_the_device() {
    let d = TestDaemon::start(Backend::Pkcs11).await;
    let key = d.create_key("to destroy").await.key_id;
    let keep = d.create_key("to keep").await.key_id;
    d.rotate(&key).await.unwrap();
    let blob = d.encrypt(&key, b"in use", &[]).await.unwrap();
    d.decrypt(&blob, &[]).await.unwrap();
    d.schedule_deletion(&key, Some(7)).await.unwrap();
    let session = independent_session();
    assert_eq!(session_copies(&session, &d.account_id, &key, 2).len(), 1);
    assert_eq!(
        objects(&session, &d.account_id, &key, 1).len(),
        1,
        "pending deletion keeps the material"
    );
    d.clock.advance(8 * DAY);
    assert_eq!(d.run_due_tasks().await.destroyed, 1);
    for version in [1, 2] {
        assert!(
            objects(&session, &d.account_id, &key, version).is_empty(),
            "version {version} survived"
        );
        assert!(
            session_copies(&session, &d.account_id, &key, version).is_empty(),
            "a session copy of version {version} survived"
        );
    }
    assert_eq!(objects(&session, &d.account_id, &keep, 1).len(), 1);
    assert_eq!(d.state(&key).await, v1::KeyState::Deleted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_finds_the_same_objects() {
    let mut d = TestDaemon::start(Backend::Pkcs11).await;
    let key = d.create_key("restart").await.key_id;
    let blob = d
        .encrypt(&key, b"kept in hardware", &[("a", "b")])
        .await
        .unwrap();
    d.restart().await;
    assert_eq!(
        d.decrypt(&blob, &[("a", "b")]).await.unwrap(),
        b"kept in hardware"
    );
    assert_eq!(d.state(&key).await, v1::KeyState::Enabled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_object_is_reported_at_start_up() {
    let mut d = TestDaemon::start(Backend::Pkcs11).await;
    let key = d.create_key("vanishing").await.key_id;
    let other = d.create_key("staying").await.key_id;
    let blob = d.encrypt(&other, b"fine", &[]).await.unwrap();
    d.stop().await;
    let session = independent_session();
    for handle in objects(&session, &d.account_id, &key, 1) {
        session
            .destroy_object(handle)
            .expect("destroy behind the daemon's back");
    }
    d.start_again().await;
    let described = d.describe(&key).await.unwrap();
    assert_eq!(described.key_state(), v1::KeyState::Unavailable);
    let status = d.encrypt(&key, b"x", &[]).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        keyhaven::api::reason_of(&status).as_deref(),
        Some("KeyStoreUnavailableException")
    );
    assert!(status.message().contains("missing"), "{status:?}");
    // The other key is untouched.
    assert_eq!(d.state(&other).await, v1::KeyState::Enabled);
    assert_eq!(d.decrypt(&blob, &[]).await.unwrap(), b"fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_at_once_through_the_pool() {
    let d = TestDaemon::start(Backend::Pkcs11).await;
    let keys = [
        d.create_key("a").await.key_id,
        d.create_key("b").await.key_id,
    ];
    let tasks: Vec<_> = (0..64u32)
        .map(|i| {
            let client = d.client.clone();
            let key = keys[i as usize % 2].clone();
            tokio::spawn(async move {
                let mut results = Vec::new();
                for round in 0..5u32 {
                    let plaintext = format!("client {i} round {round}").into_bytes();
                    let request = v1::EncryptRequest {
                        key_id: key.clone(),
                        plaintext: plaintext.clone(),
                        encryption_context: [("client".to_string(), i.to_string())].into(),
                        ..Default::default()
                    };
                    let blob = client
                        .kms()
                        .encrypt(client.signed("Encrypt", request))
                        .await?
                        .into_inner()
                        .ciphertext_blob;
                    let request = v1::DecryptRequest {
                        ciphertext_blob: blob,
                        encryption_context: [("client".to_string(), i.to_string())].into(),
                        key_id: String::new(),
                        ..Default::default()
                    };
                    let decrypted = client
                        .kms()
                        .decrypt(client.signed("Decrypt", request))
                        .await?
                        .into_inner()
                        .plaintext;
                    results.push(decrypted == plaintext);
                }
                Ok::<_, tonic::Status>(results)
            })
        })
        .collect();
    let mut correct = 0;
    for task in tasks {
        let results = task.await.unwrap().expect("no call fails under load");
        correct += results.iter().filter(|ok| **ok).count();
    }
    assert_eq!(correct, 64 * 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_choose_their_keystore() {
    let d = TestDaemon::start_with(Backend::Sealed, |config| {
        config
            .add_pkcs11(pkcs11_settings())
            .expect("PKCS#11 keystore");
    })
    .await;
    let sealed = d.create_key("default").await;
    assert_eq!(sealed.keystore, "sealed");
    let mut created = Vec::new();
    for name in ["pkcs11", "pkcs11:default"] {
        let request = v1::CreateKeyRequest {
            keystore: name.into(),
            ..Default::default()
        };
        let key = d
            .client
            .kms()
            .create_key(d.client.signed("CreateKey", request))
            .await
            .unwrap()
            .into_inner()
            .key_metadata
            .unwrap();
        assert_eq!(key.keystore, "pkcs11:default");
        created.push(key.key_id);
    }
    let session = independent_session();
    assert!(objects(&session, &d.account_id, &sealed.key_id, 1).is_empty());
    for key in &created {
        assert_eq!(objects(&session, &d.account_id, key, 1).len(), 1);
    }
    let request = v1::CreateKeyRequest {
        keystore: "pkcs11:nope".into(),
        ..Default::default()
    };
    assert_refused(
        d.client
            .kms()
            .create_key(d.client.signed("CreateKey", request))
            .await,
        Code::NotFound,
        "CustomKeyStoreNotFoundException",
    );
    // Blobs look the same whichever keystore made them, and each key decrypts its own.
    let a = d
        .encrypt(&sealed.key_id, b"same format", &[])
        .await
        .unwrap();
    let b = d.encrypt(&created[0], b"same format", &[]).await.unwrap();
    assert_eq!(a.len(), b.len());
    assert_eq!((a[0], b[0]), (1, 1));
    assert_eq!(d.decrypt(&b, &[]).await.unwrap(), b"same format");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn material_no_key_names_is_reported_not_destroyed_at_start_up() {
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{KeyType, ObjectClass};
    let mut d = TestDaemon::start(Backend::Pkcs11).await;
    let key = d.create_key("kept").await.key_id;
    let blob = d.encrypt(&key, b"still here", &[]).await.unwrap();
    d.stop().await;
    // Objects no key record and no pending generation names (a metadata backup restored,
    // another daemon's data directory): a version of an existing key the record lacks, and a
    // key the metadata never heard of.
    let session = independent_session();
    let stranger = uuid::Uuid::new_v4().hyphenated().to_string();
    let other_account = "999999999999";
    for (account, id, version) in [
        (d.account_id.as_str(), key.as_str(), 2u32),
        (d.account_id.as_str(), stranger.as_str(), 1),
        (other_account, stranger.as_str(), 1),
    ] {
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
            .expect("make an orphan");
    }
    d.start_again().await;
    // Left in place and reported; another account's objects are not ours to report.
    assert_eq!(objects(&session, &d.account_id, &key, 2).len(), 1);
    assert_eq!(objects(&session, &d.account_id, &stranger, 1).len(), 1);
    assert_eq!(objects(&session, other_account, &stranger, 1).len(), 1);
    assert_eq!(objects(&session, &d.account_id, &key, 1).len(), 1);
    assert_eq!(d.decrypt(&blob, &[]).await.unwrap(), b"still here");
    let listed = d
        .client
        .kms()
        .list_orphaned_key_material(d.client.signed(
            "ListOrphanedKeyMaterial",
            v1::ListOrphanedKeyMaterialRequest {},
        ))
        .await
        .unwrap()
        .into_inner()
        .orphans;
    let mut listed: Vec<(String, u32)> = listed
        .into_iter()
        .map(|o| (o.key_id, o.key_version))
        .collect();
    listed.sort();
    let mut expected = vec![(key.clone(), 2), (stranger.clone(), 1)];
    expected.sort();
    assert_eq!(listed, expected);
    // Destroyed only on request.
    for (id, version) in expected {
        d.client
            .kms()
            .destroy_orphaned_key_material(d.client.signed(
                "DestroyOrphanedKeyMaterial",
                v1::DestroyOrphanedKeyMaterialRequest {
                    keystore: "pkcs11:default".into(),
                    key_id: id.clone(),
                    key_version: version,
                },
            ))
            .await
            .unwrap();
        assert!(objects(&session, &d.account_id, &id, version).is_empty());
    }
    assert_eq!(objects(&session, &d.account_id, &key, 1).len(), 1);
    for handle in objects(&session, other_account, &stranger, 1) {
        session.destroy_object(handle).unwrap();
    }
}
