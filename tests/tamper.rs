//! Tamper resistance, through a real daemon on each keystore: no changed ciphertext is ever
//! accepted, and every refusal looks the same from outside (no oracle).
//!
//! - every single-bit flip, every truncation and an appended byte of sample blobs (with and
//!   without an encryption context) answer `INVALID_ARGUMENT` / `InvalidCiphertextException`
//!   with one and the same message and details;
//! - contexts that differ only in how the pairs are split (`{"ab":"c"}`, `{"a":"bc"}`) do not
//!   decrypt each other's ciphertexts;
//! - a blob naming an unknown key, a forged blob naming a key that exists, and a blob of a
//!   destroyed key answer the same way; a caller without rights gets one AccessDeniedException
//!   for all of them and for the genuine blob; a caller who may decrypt gets one refusal
//!   whichever byte was changed;
//! - a sealed record moved to another record's place fails to unwrap, in the library and in a
//!   real data directory edited while the daemon is stopped.

mod common;

use common::{Backend, DAY, TestDaemon};
use keyhaven::api::reason_of;
use keyhaven::client::Client;
use keyhaven::crypto::CiphertextBlob;
use keyhaven::keystore::MaterialRef;
use keyhaven::keystore::sealed::material_record;
use keyhaven::proto::v1;
use keyhaven::seal::{self, KdfParams, SealError};
use keyhaven::secret::SecretString;
use keyhaven::store::{StoreBackend, WriteBatch};
use rand::RngCore;
use std::collections::{BTreeMap, BTreeSet};
use tonic::Code;
use uuid::Uuid;

/// What a caller can see of a refusal: code, message and the encoded details.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Refusal {
    code: i32,
    reason: Option<String>,
    message: String,
    details: Vec<u8>,
}

impl Refusal {
    fn of(status: &tonic::Status) -> Self {
        Refusal {
            code: status.code() as i32,
            reason: reason_of(status),
            message: status.message().to_owned(),
            details: status.details().to_vec(),
        }
    }
}

/// Decrypts `blob`, expecting the uniform InvalidCiphertextException.
async fn refused(d: &TestDaemon, blob: &[u8], context: &[(&str, &str)], what: &str) -> Refusal {
    let status = match d.decrypt(blob, context).await {
        Ok(plaintext) => panic!("{what}: accepted, decrypted to {plaintext:?}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    assert_eq!(
        reason_of(&status).as_deref(),
        Some("InvalidCiphertextException"),
        "{what}: {status:?}"
    );
    Refusal::of(&status)
}

/// Every single-bit flip, every truncation and one appended byte of `blob`; returns the set of
/// distinct refusals seen (one, if there is no oracle) and how many variants were tried.
async fn tamper_with(
    d: &TestDaemon,
    blob: &[u8],
    context: &[(&str, &str)],
) -> (BTreeSet<Refusal>, usize) {
    let mut variants: Vec<(String, Vec<u8>)> = Vec::new();
    for bit in 0..blob.len() * 8 {
        let mut flipped = blob.to_vec();
        flipped[bit / 8] ^= 1 << (bit % 8);
        variants.push((format!("bit {bit} flipped"), flipped));
    }
    for len in 0..blob.len() {
        variants.push((format!("truncated to {len}"), blob[..len].to_vec()));
    }
    let mut longer = blob.to_vec();
    longer.push(0);
    variants.push(("a byte appended".into(), longer));
    let tried = variants.len();
    // A few concurrent callers: faster, and the daemon must stay uniform under concurrency.
    let chunks: Vec<Vec<(String, Vec<u8>)>> = variants
        .chunks(variants.len().div_ceil(4))
        .map(<[_]>::to_vec)
        .collect();
    let mut refusals = BTreeSet::new();
    let results = futures_join(chunks.into_iter().map(|chunk| async move {
        let mut seen = BTreeSet::new();
        for (what, variant) in chunk {
            seen.insert(refused(d, &variant, context, &what).await);
        }
        seen
    }))
    .await;
    for seen in results {
        refusals.extend(seen);
    }
    (refusals, tried)
}

/// Runs futures concurrently on the current task (no extra dependency for `join_all`).
async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let futures: Vec<_> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    let mut pending: Vec<_> = futures.into_iter().enumerate().collect();
    std::future::poll_fn(|cx| {
        pending.retain_mut(|(index, future)| match future.as_mut().poll(cx) {
            std::task::Poll::Ready(output) => {
                outputs[*index] = Some(output);
                false
            }
            std::task::Poll::Pending => true,
        });
        if pending.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("finished")).collect()
}

// ------------------------------------------------------------------------------- the checks

async fn every_bit_flip_is_refused_uniformly(backend: Backend) {
    let d = TestDaemon::start(backend).await;
    let key = d.create_key("tamper: bit flips").await.key_id;
    let context = [("purpose", "tamper"), ("tenant", "42")];
    let bare = d.encrypt(&key, b"sample", &[]).await.unwrap();
    let bound = d.encrypt(&key, b"sample, bound", &context).await.unwrap();
    let mut all = BTreeSet::new();
    let mut tried = 0;
    for (blob, context) in [(&bare, &[][..]), (&bound, &context[..])] {
        let (refusals, count) = tamper_with(&d, blob, context).await;
        all.extend(refusals);
        tried += count;
    }
    assert_eq!(
        tried,
        (bare.len() * 9 + 1) + (bound.len() * 9 + 1),
        "variants tried"
    );
    assert_eq!(
        all.len(),
        1,
        "refusals differ, which is an oracle: {all:#?}"
    );
    // The daemon is unharmed: the originals still decrypt (the PKCS#11 keystore did not take
    // forged tags for device failures).
    assert_eq!(d.decrypt(&bare, &[]).await.unwrap(), b"sample");
    assert_eq!(d.decrypt(&bound, &context).await.unwrap(), b"sample, bound");
}

async fn split_contexts_do_not_collide(backend: Backend) {
    let d = TestDaemon::start(backend).await;
    let key = d.create_key("tamper: contexts").await.key_id;
    let contexts: [&[(&str, &str)]; 5] = [
        &[("ab", "c")],
        &[("a", "bc")],
        &[("a", ""), ("b", "c")],
        &[("abc", "")],
        &[],
    ];
    let mut blobs = Vec::new();
    for context in contexts {
        let plaintext = format!("{context:?}");
        blobs.push(
            d.encrypt(&key, plaintext.as_bytes(), context)
                .await
                .unwrap(),
        );
    }
    let mut refusals = BTreeSet::new();
    for (i, blob) in blobs.iter().enumerate() {
        for (j, context) in contexts.iter().enumerate() {
            if i == j {
                let plaintext = d.decrypt(blob, context).await.unwrap();
                assert_eq!(plaintext, format!("{context:?}").as_bytes());
            } else {
                let what = format!("blob made with {:?} opened with {context:?}", contexts[i]);
                refusals.insert(refused(&d, blob, context, &what).await);
            }
        }
    }
    assert_eq!(refusals.len(), 1, "{refusals:#?}");
}

async fn unknown_forged_and_destroyed_keys_answer_alike(backend: Backend) {
    let d = TestDaemon::start(backend).await;
    let key = d.create_key("tamper: forged").await.key_id;
    let doomed = d.create_key("tamper: destroyed").await.key_id;
    let genuine = d.encrypt(&key, b"genuine", &[]).await.unwrap();
    let of_doomed = d.encrypt(&doomed, b"soon gone", &[]).await.unwrap();
    let id = Uuid::parse_str(&key).unwrap();
    let forge = |key_id: Uuid, version: u32| {
        let mut nonce = [0u8; 12];
        let mut sealed = vec![0u8; genuine.len() - 33];
        rand::thread_rng().fill_bytes(&mut nonce);
        rand::thread_rng().fill_bytes(&mut sealed);
        CiphertextBlob::assemble(key_id, version, &nonce, &sealed)
    };
    let mut refusals = BTreeSet::new();
    refusals.insert(refused(&d, &forge(Uuid::new_v4(), 1), &[], "unknown key").await);
    refusals.insert(refused(&d, &forge(id, 1), &[], "forged blob, existing key").await);
    refusals.insert(refused(&d, &forge(id, 2), &[], "version the key does not hold").await);
    // The genuine blob's header with a forged body.
    let mut spliced = genuine[..33].to_vec();
    spliced.extend_from_slice(&forge(id, 1)[33..]);
    refusals.insert(refused(&d, &spliced, &[], "genuine header, forged body").await);
    // A destroyed key's blob (its tombstone remains).
    d.schedule_deletion(&doomed, Some(7)).await.unwrap();
    d.clock.advance(7 * DAY + 1);
    assert_eq!(d.run_due_tasks().await.destroyed, 1);
    assert_eq!(d.state(&doomed).await, v1::KeyState::Deleted);
    refusals.insert(refused(&d, &of_doomed, &[], "destroyed key").await);
    assert_eq!(
        refusals.len(),
        1,
        "unknown, forged and destroyed differ: {refusals:#?}"
    );
    assert_eq!(d.decrypt(&genuine, &[]).await.unwrap(), b"genuine");
}

// ------------------------------------------------------------------ callers without rights

async fn decrypt_as(client: &Client, blob: &[u8]) -> Result<Vec<u8>, tonic::Status> {
    let request = v1::DecryptRequest {
        ciphertext_blob: blob.to_vec(),
        ..Default::default()
    };
    Ok(client
        .kms()
        .decrypt(client.signed("Decrypt", request))
        .await?
        .into_inner()
        .plaintext
        .to_vec())
}

/// A refusal with the key id the blob names (which the caller supplied) blanked out.
fn blanked(status: &tonic::Status, blob: &[u8]) -> Refusal {
    let mut refusal = Refusal::of(status);
    if let Some(id) = blob.get(1..17).and_then(|b| Uuid::from_slice(b).ok()) {
        refusal.message = refusal
            .message
            .replace(&id.hyphenated().to_string(), "<key id>");
    }
    refusal.details.clear();
    refusal
}

/// Blobs a caller might send: genuine, for an unknown key, for a destroyed key, and tampered
/// in each region, as (what, blob) pairs.
async fn blobs_to_probe(d: &TestDaemon) -> Vec<(String, Vec<u8>)> {
    let key = d.create_key("tamper: probed").await.key_id;
    let doomed = d.create_key("tamper: probed, destroyed").await.key_id;
    let genuine = d.encrypt(&key, b"genuine", &[]).await.unwrap();
    let of_doomed = d.encrypt(&doomed, b"gone", &[]).await.unwrap();
    d.schedule_deletion(&doomed, Some(7)).await.unwrap();
    d.clock.advance(7 * DAY + 1);
    assert_eq!(d.run_due_tasks().await.destroyed, 1);
    let mut probes = vec![
        ("genuine blob".to_owned(), genuine.clone()),
        ("destroyed key".to_owned(), of_doomed),
    ];
    let mut unknown = genuine.clone();
    unknown[1..17].copy_from_slice(Uuid::new_v4().as_bytes());
    probes.push(("unknown key".into(), unknown));
    for (region, index) in [
        ("key id", 5),
        ("key version", 20),
        ("nonce", 25),
        ("body", 35),
        ("tag", genuine.len() - 1),
    ] {
        let mut flipped = genuine.clone();
        flipped[index] ^= 0x10;
        probes.push((format!("{region} flipped"), flipped));
    }
    probes
}

/// A caller with no rights learns nothing from Decrypt: every blob naming a key — real,
/// unknown, destroyed or tampered — answers the same AccessDeniedException (naming the key id
/// the blob gave, as AWS names the resource asked for).
async fn a_caller_without_rights_learns_nothing(backend: Backend) {
    let d = TestDaemon::start(backend).await;
    let probes = blobs_to_probe(&d).await;
    let mallory = d.create_user("mallory", None).await;
    let mut refusals = BTreeSet::new();
    for (what, blob) in &probes {
        let status = decrypt_as(&mallory, blob)
            .await
            .expect_err(&format!("{what}: accepted"));
        assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
        assert_eq!(
            reason_of(&status).as_deref(),
            Some("AccessDeniedException"),
            "{what}"
        );
        refusals.insert(blanked(&status, blob));
    }
    assert_eq!(refusals.len(), 1, "{refusals:#?}");
}

/// A caller allowed to decrypt under every key (but not to list keys) gets one refusal for
/// every blob that does not decrypt — whichever byte was changed.
async fn a_caller_who_may_decrypt_sees_one_refusal(backend: Backend) {
    let d = TestDaemon::start(backend).await;
    let probes = blobs_to_probe(&d).await;
    const DECRYPT_ANYTHING: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:Decrypt","Resource":"*"}]}"#;
    let dora = d.create_user("dora", Some(DECRYPT_ANYTHING)).await;
    let mut refusals: BTreeMap<Refusal, Vec<String>> = BTreeMap::new();
    for (what, blob) in &probes {
        match decrypt_as(&dora, blob).await {
            Ok(plaintext) => assert_eq!(
                (what.as_str(), plaintext.as_slice()),
                ("genuine blob", &b"genuine"[..])
            ),
            Err(status) => refusals
                .entry(blanked(&status, blob))
                .or_default()
                .push(what.clone()),
        }
    }
    assert_eq!(
        refusals.len(),
        1,
        "different refusals for different tampering, an oracle: {refusals:#?}"
    );
}

macro_rules! on_every_keystore {
    ($($check:ident),* $(,)?) => {
        mod sealed {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(super::Backend::Sealed).await;
                }
            )*
        }
        mod pkcs11 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(super::Backend::Pkcs11).await;
                }
            )*
        }
    };
}

on_every_keystore!(
    every_bit_flip_is_refused_uniformly,
    split_contexts_do_not_collide,
    unknown_forged_and_destroyed_keys_answer_alike,
    a_caller_without_rights_learns_nothing,
    a_caller_who_may_decrypt_sees_one_refusal,
);

// ------------------------------------------------------------------- moved sealed records

#[test]
fn a_wrapped_record_unwraps_only_under_its_own_name() {
    let dir = tempfile::tempdir().unwrap();
    let (_, master) = seal::init(
        dir.path(),
        &SecretString::new("tamper tests, not a secret".into()),
        KdfParams::MINIMUM,
        "111122223333",
        0,
    )
    .unwrap();
    let a = MaterialRef {
        key_id: Uuid::new_v4(),
        version: 1,
    };
    let elsewhere = [
        MaterialRef {
            key_id: Uuid::new_v4(),
            version: 1,
        },
        MaterialRef { version: 2, ..a },
        MaterialRef {
            version: 1 << 24,
            ..a
        },
    ];
    let key = [0x5au8; 32];
    let wrapped = master.wrap(&material_record(a), &key);
    assert_eq!(
        master
            .unwrap(&material_record(a), &wrapped)
            .unwrap()
            .expose(),
        &key
    );
    for other in elsewhere {
        assert!(
            matches!(
                master.unwrap(&material_record(other), &wrapped),
                Err(SealError::Unwrap)
            ),
            "{a:?}'s record unwrapped as {other:?}"
        );
    }
    // Nor under a secret access key's name, nor under a name one byte longer or shorter.
    let name = material_record(a);
    for other in [
        name[..name.len() - 1].to_vec(),
        [name.as_slice(), b"\0"].concat(),
        b"access-key/AKIDEXAMPLE".to_vec(),
        Vec::new(),
    ] {
        assert!(master.unwrap(&other, &wrapped).is_err(), "{other:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_record_copied_over_another_is_refused_at_start() {
    let mut d = TestDaemon::start(Backend::Sealed).await;
    let donor = d.create_key("tamper: donor").await.key_id;
    let victim = d.create_key("tamper: victim").await.key_id;
    let of_donor = d.encrypt(&donor, b"donor's", &[]).await.unwrap();
    d.stop().await;

    // With the daemon stopped, copy the donor's stored material over the victim's.
    let store_dir = keyhaven::server::store_dir(d.dir.path());
    let victim_record = material_record(MaterialRef {
        key_id: Uuid::parse_str(&victim).unwrap(),
        version: 1,
    });
    let original = {
        let store = common::open_sled(&store_dir);
        let donor_record = material_record(MaterialRef {
            key_id: Uuid::parse_str(&donor).unwrap(),
            version: 1,
        });
        let wrapped = store
            .get(&donor_record)
            .unwrap()
            .expect("the donor's material record");
        let original = store.get(&victim_record).unwrap().expect("the victim's");
        assert_ne!(original, wrapped);
        let mut batch = WriteBatch::new();
        batch.put(victim_record.clone(), wrapped);
        store.apply(batch).unwrap();
        store.sync().unwrap();
        original
    };

    // The record no longer belongs where it is: the daemon refuses the data directory and
    // names the record; nothing is served with the donor's material in the victim's name.
    let refused = d
        .try_start_again()
        .await
        .expect_err("a daemon started on a store with a moved record");
    let message = refused.to_string();
    assert!(
        message.contains(&format!("material/{victim}")) && message.contains("integrity"),
        "{message}"
    );

    // Put back, the store opens again and both keys work.
    {
        let store = common::open_sled(&store_dir);
        let mut batch = WriteBatch::new();
        batch.put(victim_record, original);
        store.apply(batch).unwrap();
        store.sync().unwrap();
    }
    d.start_again().await;
    assert_eq!(d.decrypt(&of_donor, &[]).await.unwrap(), b"donor's");
    let of_victim = d.encrypt(&victim, b"victim's", &[]).await.unwrap();
    assert_eq!(d.decrypt(&of_victim, &[]).await.unwrap(), b"victim's");
}
