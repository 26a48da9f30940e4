//! In-process hot paths: blob parsing and assembly, context canonicalisation, request
//! signature verification and the sealed keystore's AES-256-GCM. Run with
//! `cargo bench --bench crypto`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keyhaven::auth::signature::{self, SigningCredentials};
use keyhaven::crypto::{CiphertextBlob, EncryptionContext};
use keyhaven::keystore::sealed::SealedKeyStore;
use keyhaven::keystore::{KeyStore, MaterialRef};
use keyhaven::seal::{self, KdfParams};
use keyhaven::secret::SecretString;
use keyhaven::store::{SledBackend, Store};
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
    let signed = signature::sign_request(credentials, "local", path, &body, now, "00ff");
    let authorization = signed
        .headers
        .iter()
        .find(|(n, _)| *n == signature::AUTHORIZATION)
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let date = signature::format_amz_date(now);
    c.bench_function("signature/verify", |b| {
        b.iter(|| {
            let parsed = signature::parse_authorization(black_box(&authorization)).ok();
            let parsed = parsed.as_ref().map(|p| {
                let headers = [
                    (signature::DATE_HEADER, date.as_str()),
                    (signature::NONCE_HEADER, "00ff"),
                ];
                let to_sign = signature::string_to_sign(
                    path,
                    &headers,
                    &signature::sha256_hex(&body),
                    &date,
                    &p.scope(),
                );
                let key = signature::signing_key(secret.expose(), &p.date, &p.region);
                signature::verify(&key, &to_sign, &p.signature)
            });
            assert_eq!(parsed, Some(true));
        })
    });
}

fn sealed_keystore(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let passphrase = SecretString::new("benchmark passphrase".into());
    let (_, master) =
        seal::init(dir.path(), &passphrase, KdfParams::MINIMUM, "1", 0).expect("seal");
    let backend = SledBackend::open(&dir.path().join("store")).expect("store");
    let store = Arc::new(Store::new(Arc::new(backend)));
    let keystore = SealedKeyStore::new(Arc::new(master), store.clone());
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

criterion_group!(
    benches,
    blob,
    context,
    signature_verification,
    sealed_keystore
);
criterion_main!(benches);
