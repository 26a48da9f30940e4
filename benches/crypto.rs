//! In-process hot paths: blob parsing and assembly, context canonicalisation, policy
//! evaluation with 1, 10 and 100 statements, request signature verification, the sealed
//! keystore's AES-256-GCM, a key record read in its binary and its JSON form, and one change
//! to the record-integrity tree of a store of two million records. Run with
//! `cargo bench --bench crypto`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keyhaven::auth::signature::{self, SigningCredentials};
use keyhaven::crypto::{CiphertextBlob, EncryptionContext};
use keyhaven::keys::{KeyRecord, KeyUse, KeyVersion, RotationSchedule, RotationType};
use keyhaven::keystore::sealed::SealedKeyStore;
use keyhaven::keystore::{KeyStore, MaterialRef};
use keyhaven::policy::{
    Identity, NamedPolicy, Policy, PolicyKind, Request as PolicyRequest, RequestContext,
    default_key_policy, evaluate,
};
use keyhaven::seal::{self, KdfParams};
use keyhaven::secret::SecretString;
use keyhaven::store::barrier::SetDigest;
use keyhaven::store::{Barrier, SledBackend, Store};
use std::hint::black_box;
use std::sync::Arc;
use uuid::Uuid;

fn blob(c: &mut Criterion) {
    let id = Uuid::new_v4();
    let sealed = vec![0u8; 48];
    let bytes = CiphertextBlob::assemble(id, 1, &[7; 12], &sealed);
    let mut group = c.benchmark_group("blob");
    group.throughput(Throughput::Elements(1));
    group.bench_function("assemble_32B", |b| {
        b.iter(|| CiphertextBlob::assemble(black_box(id), 1, &[7; 12], black_box(&sealed)))
    });
    group.bench_function("parse", |b| {
        b.iter(|| CiphertextBlob::parse(black_box(&bytes)))
    });
    group.finish();
}

fn context(c: &mut Criterion) {
    let mut group = c.benchmark_group("encryption_context");
    for pairs in [1usize, 8, 32] {
        let map = (0..pairs)
            .map(|i| (format!("key-{i}"), format!("value-{i}")))
            .collect();
        let context = EncryptionContext::new(map).unwrap_or_default();
        group.bench_function(format!("canonical_{pairs}_pairs"), |b| {
            b.iter(|| black_box(&context).canonical())
        });
    }
    group.finish();
}

fn signature_verification(c: &mut Criterion) {
    let secret = SecretString::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into());
    let credentials = SigningCredentials {
        access_key_id: "KHAKEXAMPLE",
        secret: &secret,
        session_token: None,
    };
    let body = vec![1u8; 64];
    let path = "/keyhaven.v1.KeyManagementService/Encrypt";
    let now = 1_700_000_000;
    let signed = signature::sign_request(
        credentials,
        "local",
        signature::RequestTarget {
            host: "127.0.0.1:7878",
            method_path: path,
        },
        &body,
        now,
        "00ff",
    );
    let authorization = signed
        .headers
        .iter()
        .find(|(n, _)| *n == signature::AUTHORIZATION)
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let date = signature::format_amz_date(now);
    // The daemon derives the signing key once per access key and day.
    let key = signature::signing_key(secret.expose(), &date[..8], "local");
    c.bench_function("signature/verify", |b| {
        b.iter(|| {
            let parsed = signature::parse_authorization(black_box(&authorization)).ok();
            let parsed = parsed.as_ref().map(|p| {
                let headers = [
                    (signature::HOST_HEADER, "127.0.0.1:7878"),
                    (signature::DATE_HEADER, date.as_str()),
                    (signature::NONCE_HEADER, "00ff"),
                ];
                signature::RequestToSign {
                    method_path: path,
                    headers: &headers,
                    body_sha256_hex: &signature::sha256_hex(&body),
                    amz_date: &date,
                    date: p.date,
                    region: p.region,
                }
                .verify(&key, &p.signature)
            });
            assert_eq!(parsed, Some(true));
        })
    });
}

/// A user's identity policy of `statements` statements, the one that allows the call last (so
/// every statement is looked at), each with a condition on the encryption context, evaluated
/// with the default key policy as a real Encrypt is.
fn policy_evaluation(c: &mut Criterion) {
    let account = "111122223333";
    let key_arn =
        format!("arn:keyhaven:kms:local:{account}:key/1234abcd-12ab-34cd-56ef-1234567890ab");
    let key_policy = NamedPolicy {
        name: "key policy".into(),
        policy: Arc::new(
            Policy::parse(
                &default_key_policy("keyhaven", account),
                PolicyKind::Resource,
            )
            .expect("default key policy"),
        ),
    };
    let principals = vec![format!("arn:keyhaven:iam::{account}:user/alice")];
    let root = format!("arn:keyhaven:iam::{account}:root");
    let mut context = RequestContext::new();
    context
        .set("aws:PrincipalArn", principals[0].clone())
        .set("aws:SourceIp", "127.0.0.1")
        .set("kms:EncryptionContext:tenant", "blue");
    let request = PolicyRequest {
        principals: &principals,
        account_root: &root,
        action: "kms:Encrypt",
        resource: &key_arn,
        context: &context,
    };
    let mut group = c.benchmark_group("policy_evaluate");
    for statements in [1usize, 10, 100] {
        let body: Vec<String> = (0..statements)
            .map(|i| {
                let (action, tenant) = if i + 1 == statements {
                    ("kms:Encrypt", "blue".to_owned())
                } else {
                    ("kms:Decrypt", format!("tenant-{i}"))
                };
                format!(
                    r#"{{"Sid":"S{i}","Effect":"Allow","Action":["{action}","kms:GenerateDataKey*"],"Resource":"arn:keyhaven:kms:local:{account}:key/*","Condition":{{"StringEquals":{{"kms:EncryptionContext:tenant":"{tenant}"}},"IpAddress":{{"aws:SourceIp":"127.0.0.0/8"}}}}}}"#
                )
            })
            .collect();
        let text = format!(
            r#"{{"Version":"2012-10-17","Statement":[{}]}}"#,
            body.join(",")
        );
        let policies = vec![NamedPolicy {
            name: "alice".into(),
            policy: Arc::new(Policy::parse(&text, PolicyKind::Identity).expect("identity policy")),
        }];
        assert!(
            evaluate(&request, Some(&key_policy), &Identity::Policies(&policies)).allowed(),
            "the last statement allows the call"
        );
        group.bench_function(format!("{statements}_statements"), |b| {
            b.iter(|| {
                evaluate(
                    black_box(&request),
                    Some(&key_policy),
                    &Identity::Policies(&policies),
                )
            })
        });
    }
    group.finish();
}

fn sealed_keystore(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let passphrase = SecretString::new("benchmark passphrase".into());
    let (_, master) =
        seal::init(dir.path(), &passphrase, KdfParams::MINIMUM, "1", 0).expect("seal");
    let backend = SledBackend::open(&dir.path().join("store")).expect("store");
    let barrier = Barrier::new(master.record_integrity_key());
    let store = Arc::new(Store::open(Arc::new(backend), barrier).expect("store"));
    let keystore =
        SealedKeyStore::open(Arc::new(master), store.clone(), dir.path()).expect("keystore");
    let material = MaterialRef {
        key_id: Uuid::new_v4(),
        version: 1,
    };
    let generated = keystore.generate(material).expect("generate");
    store.commit_blocking(generated.records).expect("commit");
    let aad = [0u8; 40];
    let mut group = c.benchmark_group("sealed_keystore");
    for size in [32usize, 4096] {
        let plaintext = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("encrypt_{size}B"), |b| {
            b.iter(|| keystore.encrypt(material, &[1; 12], &aad, black_box(&plaintext)))
        });
        let sealed = keystore
            .encrypt(material, &[1; 12], &aad, &plaintext)
            .expect("encrypt");
        group.bench_function(format!("decrypt_{size}B"), |b| {
            b.iter(|| keystore.decrypt(material, &[1; 12], &aad, black_box(&sealed)))
        });
    }
    group.finish();
}

/// A key as most are: one version, used once.
fn typical_key_record() -> KeyRecord {
    KeyRecord {
        id: Uuid::new_v4(),
        description: String::new(),
        state: keyhaven::keys::KeyState::Enabled,
        created: 1_800_000_000,
        deletion_date: None,
        pending_window_days: None,
        keystore: "sealed".into(),
        origin: "AWS_KMS".into(),
        versions: vec![KeyVersion {
            number: 1,
            created: 1_800_000_000,
            rotation_type: RotationType::Initial,
            nonces_reserved: 1 << 20,
        }],
        tags: Default::default(),
        policy: None,
        rotation: RotationSchedule::default(),
        last_used: Some(KeyUse {
            time: 1_800_000_100,
            operation: "Encrypt".into(),
        }),
        spec: keyhaven::keys::KeySpec::SymmetricDefault,
        usage: keyhaven::keys::KeyUsage::EncryptDecrypt,
        imported: None,
    }
}

/// A key record read (as on every key-cache miss) and written, in the binary form it is
/// stored in and in the JSON form earlier versions stored.
fn key_records(c: &mut Criterion) {
    let record = typical_key_record();
    let binary = record.to_stored().expect("encode");
    let json = serde_json::to_vec(&record).expect("encode");
    let mut group = c.benchmark_group("key_record");
    group.bench_function(format!("read_binary_{}B", binary.len()), |b| {
        b.iter(|| KeyRecord::from_stored(black_box(&binary)))
    });
    group.bench_function(format!("read_json_{}B", json.len()), |b| {
        b.iter(|| KeyRecord::from_stored(black_box(&json)))
    });
    group.bench_function("write_binary", |b| {
        b.iter(|| black_box(&record).to_stored())
    });
    group.bench_function("write_json", |b| {
        b.iter(|| serde_json::to_vec(black_box(&record)))
    });
    group.finish();
}

/// One record changed in the integrity tree of a store of two million records (a million keys
/// and their material) and the root brought up to date, as every batch of one record does.
fn integrity_tree(c: &mut Criterion) {
    let mut tree = SetDigest::default();
    for i in 0..2_000_000u32 {
        tree.set(format!("key/{i}").as_bytes(), Some([(i % 251) as u8; 32]));
    }
    tree.root();
    let mut group = c.benchmark_group("integrity_tree");
    let mut i = 0u32;
    group.bench_function("one_change_in_2M_records", |b| {
        b.iter(|| {
            i = i.wrapping_add(7919) % 2_000_000;
            tree.set(format!("key/{i}").as_bytes(), Some([(i % 13) as u8; 32]));
            tree.root()
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    key_records,
    integrity_tree,
    blob,
    context,
    policy_evaluation,
    signature_verification,
    sealed_keystore
);
criterion_main!(benches);
