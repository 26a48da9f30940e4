//! Secret hygiene (issue 5): a session with known canary values, on both keystores, with the
//! whole process logging at trace level, and then a search for every canary in everything the
//! daemon and the library let out: the log output, the audit log (rotated files included),
//! every error and gRPC status the calls returned, and the `Debug` output of the request,
//! response, configuration and credential types used.
//!
//! Canaries: plaintexts (Encrypt, ReEncrypt, a too-large plaintext, plaintexts of refused
//! calls), data keys (GenerateDataKey's `Plaintext`, and the plaintext of a
//! GenerateDataKeyWithoutPlaintext blob), GenerateRandom output, encryption-context values,
//! the passphrase (and a wrong one), the root's, a user's and a role session's secret access
//! keys, the session token, secrets and tokens of refused calls, and the PKCS#11 PIN. Each is
//! searched as text and, where it is bytes or could travel as bytes, as hex, base64 and Rust's
//! `Debug` of a byte vector.
//!
//! The test's subscriber uses the daemon's own filter, [`keyhaven::server::log_filter`] (the
//! one `keyhaven serve` installs), asked for `trace`: what is checked is what an operator who
//! sets `log_level = "trace"` would get. `KEYHAVEN_HYGIENE_UNCAPPED=1` replaces it by a bare
//! `trace` filter for every target, to see what the filter's caps on the transport crates
//! keep out.
//!
//! PKCS#11 needs the SoftHSM2 token `eval "$(hsm-sim/setup.sh DIR)"` prepares; give it a
//! distinctive PIN (`KEYHAVEN_HSM_PIN=...`) to make the PIN canary sharper.

mod common;

use base64::Engine as _;
use common::{Backend, PASSPHRASE, TestDaemon, pairs};
use keyhaven::api::reason_of;
use keyhaven::client::ClientCredentials;
use keyhaven::keystore::pkcs11::{Pkcs11Settings, TokenSelector};
use keyhaven::proto::v1;
use keyhaven::secret::SecretString;
use std::fmt::Debug;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use tonic::Code;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

// ------------------------------------------------------------------ captured log output

type Buffer = Arc<Mutex<Vec<u8>>>;

/// A `tracing` writer appending to a shared in-memory buffer.
struct Sink(Buffer);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn lock(buffer: &Buffer) -> std::sync::MutexGuard<'_, Vec<u8>> {
    buffer
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

const UNCAPPED_ENV: &str = "KEYHAVEN_HYGIENE_UNCAPPED";

/// Installs, once per test binary, the global subscriber every test here logs to.
fn captured() -> Buffer {
    static CAPTURE: OnceLock<Buffer> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let buffer: Buffer = Arc::default();
            let sink = buffer.clone();
            let filter = if std::env::var_os(UNCAPPED_ENV).is_some() {
                tracing_subscriber::filter::Targets::new()
                    .with_default(tracing_subscriber::filter::LevelFilter::TRACE)
            } else {
                // What `keyhaven serve` installs (src/cli/serve.rs, init_logging) for
                // `log_level = "trace"`.
                keyhaven::server::log_filter(Some("trace"))
            };
            tracing_subscriber::registry()
                .with(filter)
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(false)
                        .with_target(true)
                        .with_writer(move || Sink(sink.clone())),
                )
                .try_init()
                .expect("no other global subscriber in this test binary");
            buffer
        })
        .clone()
}

fn log_text(buffer: &Buffer) -> String {
    String::from_utf8_lossy(&lock(buffer)).into_owned()
}

// ------------------------------------------------------------------ canaries

/// The values that must never come out, each with the forms it is searched in.
#[derive(Default)]
struct Canaries {
    list: Vec<(String, Vec<(&'static str, String)>)>,
}

fn byte_forms(bytes: &[u8]) -> Vec<(&'static str, String)> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let mut forms = vec![
        ("hex", hex::encode(bytes)),
        ("HEX", hex::encode_upper(bytes)),
        ("base64", STANDARD.encode(bytes)),
        ("base64 unpadded", STANDARD_NO_PAD.encode(bytes)),
        ("base64url", URL_SAFE_NO_PAD.encode(bytes)),
    ];
    // `{:?}` of a Vec<u8> (what a derived Debug of a bytes field prints): the first 8 bytes.
    let head: Vec<String> = bytes.iter().take(8).map(u8::to_string).collect();
    forms.push(("Debug byte list", head.join(", ")));
    forms
}

impl Canaries {
    /// A secret that is text (a secret access key, a token, a context value, a PIN).
    fn text(&mut self, what: impl Into<String>, value: &str) {
        let mut forms = vec![("text", value.to_owned())];
        forms.extend(
            byte_forms(value.as_bytes())
                .into_iter()
                .filter(|(kind, _)| *kind != "Debug byte list"),
        );
        self.push(what.into(), forms);
    }

    /// Secret bytes (a plaintext, a data key, random bytes): every encoding, the text too when
    /// they are text, and the encodings of the first 12 bytes (a partial or truncated print).
    fn bytes(&mut self, what: impl Into<String>, value: &[u8]) {
        let mut forms = Vec::new();
        if let Ok(text) = std::str::from_utf8(value)
            && text.len() >= 8
        {
            forms.push(("text", text.to_owned()));
        }
        forms.extend(byte_forms(value));
        if value.len() > 12 {
            for (kind, form) in byte_forms(&value[..12]) {
                if kind != "Debug byte list" && kind != "base64 unpadded" {
                    forms.push((kind, form));
                }
            }
        }
        self.push(what.into(), forms);
    }

    fn push(&mut self, what: String, mut forms: Vec<(&'static str, String)>) {
        forms.dedup_by(|a, b| a.1 == b.1);
        for (kind, form) in &forms {
            assert!(
                form.len() >= 8,
                "canary {what} ({kind}) is too short to search for: {form:?}"
            );
        }
        self.list.push((what, forms));
    }
}

// ------------------------------------------------------------------ what came out

/// Everything the session let out, by where it came from.
#[derive(Default)]
struct Evidence {
    surfaces: Vec<(String, String)>,
    statuses: usize,
    debugs: usize,
    /// The `x-request-id` of every answer, to find this session's lines in the log.
    request_ids: Vec<String>,
}

impl Evidence {
    fn add(&mut self, label: impl Into<String>, text: impl Into<String>) {
        self.surfaces.push((label.into(), text.into()));
    }

    fn debug<T: Debug + ?Sized>(&mut self, label: &str, value: &T) {
        self.debugs += 1;
        self.add(format!("Debug of {label}"), format!("{value:?}"));
    }

    fn request_id(&mut self, metadata: &tonic::metadata::MetadataMap) {
        if let Some(id) = metadata.get("x-request-id").and_then(|v| v.to_str().ok()) {
            self.request_ids.push(id.to_owned());
        }
    }

    fn status(&mut self, label: &str, status: &tonic::Status) {
        self.statuses += 1;
        self.request_id(status.metadata());
        self.add(
            format!("{label}: status message"),
            status.message().to_owned(),
        );
        self.add(format!("{label}: status Display"), status.to_string());
        self.add(format!("{label}: status Debug"), format!("{status:?}"));
        self.add(
            format!("{label}: status details"),
            String::from_utf8_lossy(status.details()).into_owned(),
        );
        self.add(
            format!("{label}: status details (hex)"),
            hex::encode(status.details()),
        );
        self.add(
            format!("{label}: status metadata"),
            format!("{:?}", status.metadata()),
        );
    }

    /// A call's outcome: the `Debug` of the response (metadata and message), or the status.
    fn outcome<T: Debug>(
        &mut self,
        label: &str,
        result: &Result<tonic::Response<T>, tonic::Status>,
    ) {
        match result {
            Ok(response) => {
                self.request_id(response.metadata());
                self.debug(&format!("{label} response"), response);
            }
            Err(status) => self.status(label, status),
        }
    }

    fn error<E: Debug + std::fmt::Display>(&mut self, label: &str, error: &E) {
        self.add(format!("{label}: Display"), error.to_string());
        self.add(format!("{label}: Debug"), format!("{error:?}"));
    }
}

/// Sends `$request` with `$client` (signed with `$sign`), recording the `Debug` of the message,
/// of the signed `tonic::Request`, and of the response or status. Gives `Result<message>`.
macro_rules! call {
    ($ev:expr, $client:expr, $service:ident, $sign:ident, $method:literal, $rpc:ident, $request:expr) => {
        call!(
            $ev, $client, $service, $sign, $method, $rpc, $request, $method
        )
    };
    ($ev:expr, $client:expr, $service:ident, $sign:ident, $method:literal, $rpc:ident, $request:expr, $label:expr) => {{
        let request = $request;
        let label: String = $label.to_string();
        $ev.debug(&format!("{} request message ({label})", $method), &request);
        let signed = $client.$sign($method, request);
        $ev.debug(&format!("signed tonic::Request ({label})"), &signed);
        let result = $client.$service().$rpc(signed).await;
        $ev.outcome(&label, &result);
        result.map(tonic::Response::into_inner)
    }};
}

#[track_caller]
fn expect_refused<T>(result: Result<T, tonic::Status>, code: Code, reason: &str) {
    match result {
        Ok(_) => panic!("expected {code:?} {reason}, the call succeeded"),
        Err(status) => {
            assert_eq!(status.code(), code, "{}", status.message());
            assert_eq!(
                reason_of(&status).as_deref(),
                Some(reason),
                "{}",
                status.message()
            );
        }
    }
}

fn credentials(
    d: &TestDaemon,
    access_key_id: &str,
    secret: &str,
    token: Option<&str>,
) -> ClientCredentials {
    ClientCredentials {
        access_key_id: access_key_id.to_owned(),
        secret_access_key: SecretString::new(secret.to_owned()),
        session_token: token.map(|t| SecretString::new(t.to_owned())),
        region: d.config.region.clone(),
    }
}

// ------------------------------------------------------------------ the session

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_leaks_with_the_sealed_keystore() {
    session(Backend::Sealed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_leaks_with_the_pkcs11_keystore() {
    session(Backend::Pkcs11).await;
}

async fn session(backend: Backend) {
    let started = std::time::Instant::now();
    let buffer = captured();
    let tag = match backend {
        Backend::Sealed | Backend::SealedOnEtcd => "sealed",
        Backend::Pkcs11 | Backend::Pkcs11Second => "pkcs11",
    };
    let mut c = Canaries::default();
    let mut ev = Evidence::default();

    // A small audit log limit, so that the session's records rotate across several files.
    let mut d = TestDaemon::start_with(backend, |config| {
        config.audit_max_bytes = 4096;
        config.console_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    c.text("the passphrase", PASSPHRASE);
    c.text(
        "the root's secret access key",
        d.credentials.secret_access_key.expose(),
    );
    let pin_canary;
    if backend == Backend::Pkcs11 {
        let pin = std::env::var("KEYHAVEN_PKCS11_PIN").expect("KEYHAVEN_PKCS11_PIN");
        c.text("the PKCS#11 PIN", &pin);
        pin_canary = pin;
    } else {
        pin_canary = format!("pin-canary-{tag}-3f9e1b");
        c.text("a configured PKCS#11 PIN", &pin_canary);
    }

    // ---- keys
    let k1 = call!(
        ev,
        d.client,
        kms,
        signed,
        "CreateKey",
        create_key,
        v1::CreateKeyRequest {
            description: format!("hygiene source ({tag})"),
            ..Default::default()
        }
    )
    .expect("CreateKey")
    .key_metadata
    .expect("metadata")
    .key_id;
    let k2 = call!(
        ev,
        d.client,
        kms,
        signed,
        "CreateKey",
        create_key,
        v1::CreateKeyRequest {
            description: format!("hygiene destination ({tag})"),
            ..Default::default()
        }
    )
    .expect("CreateKey")
    .key_metadata
    .expect("metadata")
    .key_id;
    assert_eq!(
        d.describe(&k1).await.expect("DescribeKey").keystore,
        backend.keystore_name()
    );

    // ---- Encrypt / Decrypt with an encryption context
    let p1 = format!("plaintext-canary-{tag}-Encrypt-9f1c2e7d").into_bytes();
    c.bytes("Encrypt plaintext", &p1);
    let tenant = format!("ctx-canary-{tag}-tenant-41d7aa");
    let purpose = format!("ctx-canary-{tag}-purpose-b80c31");
    c.text("encryption-context value (tenant)", &tenant);
    c.text("encryption-context value (purpose)", &purpose);
    let ctx1 = [("tenant", tenant.as_str()), ("purpose", purpose.as_str())];
    let blob1 = call!(
        ev,
        d.client,
        kms,
        signed,
        "Encrypt",
        encrypt,
        v1::EncryptRequest {
            key_id: k1.clone(),
            plaintext: p1.clone(),
            encryption_context: pairs(&ctx1),
            ..Default::default()
        }
    )
    .expect("Encrypt")
    .ciphertext_blob;
    let decrypted = call!(
        ev,
        d.client,
        kms,
        signed,
        "Decrypt",
        decrypt,
        v1::DecryptRequest {
            ciphertext_blob: blob1.clone(),
            encryption_context: pairs(&ctx1),
            key_id: String::new(),
            ..Default::default()
        }
    )
    .expect("Decrypt");
    assert_eq!(decrypted.plaintext, p1);

    // ---- ReEncrypt under another key and context
    let moved = format!("ctx-canary-{tag}-reencrypt-5e02f9");
    c.text("encryption-context value (ReEncrypt destination)", &moved);
    let ctx2 = [("tenant", moved.as_str())];
    let blob2 = call!(
        ev,
        d.client,
        kms,
        signed,
        "ReEncrypt",
        re_encrypt,
        v1::ReEncryptRequest {
            ciphertext_blob: blob1.clone(),
            source_encryption_context: pairs(&ctx1),
            source_key_id: String::new(),
            destination_key_id: k2.clone(),
            destination_encryption_context: pairs(&ctx2),
        }
    )
    .expect("ReEncrypt")
    .ciphertext_blob;
    let again = call!(
        ev,
        d.client,
        kms,
        signed,
        "Decrypt",
        decrypt,
        v1::DecryptRequest {
            ciphertext_blob: blob2.clone(),
            encryption_context: pairs(&ctx2),
            key_id: k2.clone(),
            ..Default::default()
        }
    )
    .expect("Decrypt after ReEncrypt");
    assert_eq!(again.plaintext, p1);

    // ---- data keys and random bytes
    let dk_context = format!("ctx-canary-{tag}-datakey-c4a019");
    c.text("encryption-context value (GenerateDataKey)", &dk_context);
    let ctx3 = [("file", dk_context.as_str())];
    let data_key = call!(
        ev,
        d.client,
        kms,
        signed,
        "GenerateDataKey",
        generate_data_key,
        v1::GenerateDataKeyRequest {
            key_id: k1.clone(),
            encryption_context: pairs(&ctx3),
            key_spec: "AES_256".into(),
            number_of_bytes: None,
        }
    )
    .expect("GenerateDataKey");
    assert_eq!(data_key.plaintext.len(), 32);
    c.bytes("GenerateDataKey plaintext (AES_256)", &data_key.plaintext);
    let unwrapped = call!(
        ev,
        d.client,
        kms,
        signed,
        "Decrypt",
        decrypt,
        v1::DecryptRequest {
            ciphertext_blob: data_key.ciphertext_blob.clone(),
            encryption_context: pairs(&ctx3),
            key_id: String::new(),
            ..Default::default()
        },
        "Decrypt of a data key"
    )
    .expect("Decrypt of the data key");
    assert_eq!(unwrapped.plaintext, data_key.plaintext);
    let sized = call!(
        ev,
        d.client,
        kms,
        signed,
        "GenerateDataKey",
        generate_data_key,
        v1::GenerateDataKeyRequest {
            key_id: k2.clone(),
            encryption_context: Default::default(),
            key_spec: String::new(),
            number_of_bytes: Some(48),
        },
        "GenerateDataKey NumberOfBytes=48"
    )
    .expect("GenerateDataKey NumberOfBytes");
    c.bytes("GenerateDataKey plaintext (48 bytes)", &sized.plaintext);
    let without = call!(
        ev,
        d.client,
        kms,
        signed,
        "GenerateDataKeyWithoutPlaintext",
        generate_data_key_without_plaintext,
        v1::GenerateDataKeyWithoutPlaintextRequest {
            key_id: k1.clone(),
            encryption_context: pairs(&ctx3),
            key_spec: "AES_128".into(),
            number_of_bytes: None,
        }
    )
    .expect("GenerateDataKeyWithoutPlaintext");
    let hidden = call!(
        ev,
        d.client,
        kms,
        signed,
        "Decrypt",
        decrypt,
        v1::DecryptRequest {
            ciphertext_blob: without.ciphertext_blob.clone(),
            encryption_context: pairs(&ctx3),
            key_id: String::new(),
            ..Default::default()
        },
        "Decrypt of a data key made without plaintext"
    )
    .expect("Decrypt of the data key made without plaintext");
    assert_eq!(hidden.plaintext.len(), 16);
    c.bytes(
        "GenerateDataKeyWithoutPlaintext key (decrypted)",
        &hidden.plaintext,
    );
    let random = call!(
        ev,
        d.client,
        kms,
        signed,
        "GenerateRandom",
        generate_random,
        v1::GenerateRandomRequest {
            number_of_bytes: 64
        }
    )
    .expect("GenerateRandom");
    assert_eq!(random.plaintext.len(), 64);
    c.bytes("GenerateRandom output", &random.plaintext);

    // ---- failures as the root
    let wrong_context = format!("ctx-canary-{tag}-wrong-77b3de");
    c.text("encryption-context value (wrong context)", &wrong_context);
    expect_refused(
        call!(
            ev,
            d.client,
            kms,
            signed,
            "Decrypt",
            decrypt,
            v1::DecryptRequest {
                ciphertext_blob: blob1.clone(),
                encryption_context: pairs(&[
                    ("tenant", wrong_context.as_str()),
                    ("purpose", purpose.as_str())
                ]),
                key_id: String::new(),
                ..Default::default()
            },
            "Decrypt with a wrong context"
        ),
        Code::InvalidArgument,
        "InvalidCiphertextException",
    );
    let mut tampered = blob1.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    expect_refused(
        call!(
            ev,
            d.client,
            kms,
            signed,
            "Decrypt",
            decrypt,
            v1::DecryptRequest {
                ciphertext_blob: tampered,
                encryption_context: pairs(&ctx1),
                key_id: String::new(),
                ..Default::default()
            },
            "Decrypt of a tampered blob"
        ),
        Code::InvalidArgument,
        "InvalidCiphertextException",
    );
    expect_refused(
        call!(
            ev,
            d.client,
            kms,
            signed,
            "Decrypt",
            decrypt,
            v1::DecryptRequest {
                ciphertext_blob: blob1[..40].to_vec(),
                encryption_context: pairs(&ctx1),
                key_id: String::new(),
                ..Default::default()
            },
            "Decrypt of a truncated blob"
        ),
        Code::InvalidArgument,
        "InvalidCiphertextException",
    );
    // A plaintext over the 4,096-byte limit: the refusal must not echo it.
    let unit = format!("oversized-canary-{tag}-0d5e8b|");
    c.bytes("a too-large plaintext", unit.as_bytes());
    let oversized: Vec<u8> = unit.bytes().cycle().take(4097).collect();
    expect_refused(
        call!(
            ev,
            d.client,
            kms,
            signed,
            "Encrypt",
            encrypt,
            v1::EncryptRequest {
                key_id: k1.clone(),
                plaintext: oversized,
                encryption_context: Default::default(),
                ..Default::default()
            },
            "Encrypt of a too-large plaintext"
        ),
        Code::InvalidArgument,
        "ValidationException",
    );
    // A disabled key.
    call!(
        ev,
        d.client,
        kms,
        signed,
        "DisableKey",
        disable_key,
        v1::DisableKeyRequest { key_id: k2.clone() }
    )
    .expect("DisableKey");
    let p_disabled = format!("plaintext-canary-{tag}-disabled-2aa9f0").into_bytes();
    c.bytes("plaintext sent to a disabled key", &p_disabled);
    expect_refused(
        call!(
            ev,
            d.client,
            kms,
            signed,
            "Encrypt",
            encrypt,
            v1::EncryptRequest {
                key_id: k2.clone(),
                plaintext: p_disabled,
                encryption_context: pairs(&ctx2),
                ..Default::default()
            },
            "Encrypt under a disabled key"
        ),
        Code::FailedPrecondition,
        "KMSInvalidStateException",
    );
    call!(
        ev,
        d.client,
        kms,
        signed,
        "EnableKey",
        enable_key,
        v1::EnableKeyRequest { key_id: k2.clone() }
    )
    .expect("EnableKey");

    // ---- a user and its access key: denied calls
    let user = format!("hygiene-{tag}");
    call!(
        ev,
        d.client,
        iam,
        signed_iam,
        "CreateUser",
        create_user,
        v1::CreateUserRequest {
            user_name: user.clone(),
        }
    )
    .expect("CreateUser");
    let key = call!(
        ev,
        d.client,
        iam,
        signed_iam,
        "CreateAccessKey",
        create_access_key,
        v1::CreateAccessKeyRequest {
            user_name: user.clone()
        }
    )
    .expect("CreateAccessKey");
    c.text("the user's secret access key", &key.secret_access_key);
    let user_key_id = key
        .access_key
        .as_ref()
        .expect("access key")
        .access_key_id
        .clone();
    let user_credentials = credentials(&d, &user_key_id, &key.secret_access_key, None);
    ev.debug("ClientCredentials (user)", &user_credentials);
    let alice = d.client_with(user_credentials).await;
    let p_denied = format!("plaintext-canary-{tag}-denied-e61b04").into_bytes();
    c.bytes("plaintext of a denied Encrypt", &p_denied);
    expect_refused(
        call!(
            ev,
            alice,
            kms,
            signed,
            "Encrypt",
            encrypt,
            v1::EncryptRequest {
                key_id: k1.clone(),
                plaintext: p_denied,
                encryption_context: pairs(&ctx1),
                ..Default::default()
            },
            "Encrypt by a user without permission"
        ),
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    expect_refused(
        call!(
            ev,
            alice,
            kms,
            signed,
            "Decrypt",
            decrypt,
            v1::DecryptRequest {
                ciphertext_blob: blob1.clone(),
                encryption_context: pairs(&ctx1),
                key_id: String::new(),
                ..Default::default()
            },
            "Decrypt by a user without permission"
        ),
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    expect_refused(
        call!(
            ev,
            alice,
            kms,
            signed,
            "GenerateRandom",
            generate_random,
            v1::GenerateRandomRequest {
                number_of_bytes: 32
            },
            "GenerateRandom by a user without permission"
        ),
        Code::PermissionDenied,
        "AccessDeniedException",
    );

    // ---- a role the user may assume: temporary credentials
    let alice_arn = format!("arn:keyhaven:iam::{}:user/{user}", d.account_id);
    let role = call!(ev, d.client, iam, signed_iam, "CreateRole", create_role, v1::CreateRoleRequest {
        role_name: format!("hygiene-role-{tag}"),
        assume_role_policy_document: format!(
            r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{alice_arn}"}},"Action":"sts:AssumeRole"}}]}}"#
        ),
    })
    .expect("CreateRole")
    .role
    .expect("role");
    call!(ev, d.client, iam, signed_iam, "PutEntityPolicy", put_entity_policy,
        v1::PutEntityPolicyRequest {
            entity_type: v1::EntityType::Role as i32,
            entity_name: role.role_name.clone(),
            policy_name: "use".into(),
            policy_document: r#"{"Statement":[{"Effect":"Allow","Action":["kms:Encrypt","kms:Decrypt"],"Resource":"*"}]}"#.into(),
        })
    .expect("PutEntityPolicy");
    let assumed = call!(
        ev,
        alice,
        iam,
        signed_iam,
        "AssumeRole",
        assume_role,
        v1::AssumeRoleRequest {
            role_arn: role.arn.clone(),
            role_session_name: "hygiene".into(),
            duration_seconds: Some(900),
            ..Default::default()
        }
    )
    .expect("AssumeRole");
    let session_credentials = assumed.credentials.clone().expect("credentials");
    ev.debug("Credentials (AssumeRole)", &session_credentials);
    c.text(
        "the role session's secret access key",
        &session_credentials.secret_access_key,
    );
    c.text(
        "the role session's token",
        &session_credentials.session_token,
    );

    // ---- a password: given, used to sign in, and tried wrong
    let password = format!("Password-canary-{tag}-6c1e!");
    c.text("a user's password", &password);
    call!(
        ev,
        d.client,
        iam,
        signed_iam,
        "CreateLoginProfile",
        create_login_profile,
        v1::CreateLoginProfileRequest {
            user_name: user.clone(),
            password: password.clone(),
            password_reset_required: false,
        }
    )
    .expect("CreateLoginProfile");
    let wrong_password = format!("Wrong-password-canary-{tag}-0b7d!");
    c.text("a wrong password tried", &wrong_password);
    for attempt in [&wrong_password, &password] {
        let request = v1::SignInRequest {
            account_id: d.account_id.clone(),
            user_name: user.clone(),
            password: attempt.clone(),
            ..Default::default()
        };
        ev.debug("SignInRequest", &request);
        let result = d.client.iam().sign_in(tonic::Request::new(request)).await;
        ev.outcome("SignIn", &result);
        if attempt == &password {
            let signed_in = result.expect("SignIn").into_inner();
            let credentials = signed_in.credentials.expect("credentials");
            c.text(
                "a signed-in session's secret access key",
                &credentials.secret_access_key,
            );
            c.text("a signed-in session's token", &credentials.session_token);
        }
    }

    // ---- the web console: a wrong password, a sign-in, a plaintext encrypted, a sign-out
    let console = d.console_addr().expect("console");
    let wrong_at_console = format!("Wrong-console-canary-{tag}-5a2c!");
    c.text("a wrong password tried at the console", &wrong_at_console);
    let refused = common::console::sign_in(console, &d.account_id, &user, &wrong_at_console).await;
    assert_eq!(refused.error_type(), "SignInFailedException", "{refused:?}");
    ev.add(
        "the console's refusal of a wrong password",
        format!("{refused:?}"),
    );
    let browser = common::console::Session::sign_in(console, &d.account_id, &user, &password).await;
    c.text("a console session's cookie", &browser.cookie);
    c.text("a console session's CSRF token", &browser.csrf);
    let p_console = format!("plaintext-canary-{tag}-console-7e21d0").into_bytes();
    c.bytes("a plaintext encrypted at the console", &p_console);
    let encrypted = browser
        .kms(
            "Encrypt",
            serde_json::json!({"KeyId": k1, "Plaintext": base64::engine::general_purpose::STANDARD.encode(&p_console)}),
        )
        .await;
    ev.add("the console's Encrypt answer", format!("{encrypted:?}"));
    let cookie = browser.cookie_header();
    let out = common::console::request(
        console,
        "POST",
        "/api/sign-out",
        &[
            (keyhaven::api::console::CONSOLE_HEADER, "1"),
            ("Cookie", cookie.as_str()),
            (keyhaven::api::console::CSRF_HEADER, browser.csrf.as_str()),
        ],
        "",
    )
    .await;
    assert_eq!(out.status, 204, "{out:?}");

    // ---- a member account: its root secret shown once, then used
    let member = call!(
        ev,
        d.client,
        iam,
        signed_iam,
        "CreateAccount",
        create_account,
        v1::CreateAccountRequest {
            account_name: format!("hygiene-member-{tag}"),
        }
    )
    .expect("CreateAccount");
    ev.debug("CreateAccountResponse", &member);
    c.text(
        "a member account's root secret access key",
        &member.root_secret_access_key,
    );
    let member_root = credentials(
        &d,
        &member.root_access_key_id,
        &member.root_secret_access_key,
        None,
    );
    ev.debug("ClientCredentials (member root)", &member_root);
    let member_client = d.client_with(member_root).await;
    call!(
        ev,
        member_client,
        kms,
        signed,
        "CreateKey",
        create_key,
        v1::CreateKeyRequest::default()
    )
    .expect("CreateKey in the member account");

    // ---- a virtual MFA device (its seed, URI and QR code shown once) and an MFA session
    let device = call!(
        ev,
        d.client,
        iam,
        signed_iam,
        "CreateVirtualMFADevice",
        create_virtual_mfa_device,
        v1::CreateVirtualMfaDeviceRequest {
            virtual_mfa_device_name: format!("hygiene-mfa-{tag}"),
        }
    )
    .expect("CreateVirtualMFADevice");
    ev.debug("CreateVirtualMfaDeviceResponse", &device);
    let seed = data_encoding::BASE32_NOPAD
        .decode(device.base32_string_seed.as_bytes())
        .expect("a Base32 seed");
    c.text("a TOTP seed (Base32)", &device.base32_string_seed);
    c.bytes("a TOTP seed", &seed);
    c.text("a TOTP otpauth URI", &device.otpauth_uri);
    c.bytes("a TOTP QR code", &device.qr_code_png);
    let step = keyhaven::auth::totp::step_at(d.now());
    call!(
        ev,
        d.client,
        iam,
        signed_iam,
        "EnableMFADevice",
        enable_mfa_device,
        v1::EnableMfaDeviceRequest {
            user_name: user.clone(),
            serial_number: device.serial_number.clone(),
            authentication_code1: keyhaven::auth::totp::code(&seed, step - 1),
            authentication_code2: keyhaven::auth::totp::code(&seed, step),
        }
    )
    .expect("EnableMFADevice");
    let mfa_session = call!(
        ev,
        alice,
        iam,
        signed_iam,
        "GetSessionToken",
        get_session_token,
        v1::GetSessionTokenRequest {
            duration_seconds: Some(900),
            serial_number: device.serial_number.clone(),
            token_code: keyhaven::auth::totp::code(&seed, step + 1),
        }
    )
    .expect("GetSessionToken")
    .credentials
    .expect("credentials");
    ev.debug("Credentials (GetSessionToken)", &mfa_session);
    c.text(
        "the MFA session's secret access key",
        &mfa_session.secret_access_key,
    );
    c.text("the MFA session's token", &mfa_session.session_token);
    // Deactivated: the device is unassigned again, its seed kept wrapped.
    call!(
        ev,
        d.client,
        iam,
        signed_iam,
        "DeactivateMFADevice",
        deactivate_mfa_device,
        v1::DeactivateMfaDeviceRequest {
            user_name: user.clone(),
            serial_number: device.serial_number.clone(),
        }
    )
    .expect("DeactivateMFADevice");
    let session_client_credentials = credentials(
        &d,
        &session_credentials.access_key_id,
        &session_credentials.secret_access_key,
        Some(&session_credentials.session_token),
    );
    ev.debug(
        "ClientCredentials (role session)",
        &session_client_credentials,
    );
    let temporary = d.client_with(session_client_credentials).await;
    let p_session = format!("plaintext-canary-{tag}-session-93d4c6").into_bytes();
    c.bytes("plaintext encrypted by a role session", &p_session);
    let session_blob = call!(
        ev,
        temporary,
        kms,
        signed,
        "Encrypt",
        encrypt,
        v1::EncryptRequest {
            key_id: k1.clone(),
            plaintext: p_session.clone(),
            encryption_context: pairs(&ctx1),
            ..Default::default()
        },
        "Encrypt by a role session"
    )
    .expect("Encrypt by the role session")
    .ciphertext_blob;
    let back = call!(
        ev,
        temporary,
        kms,
        signed,
        "Decrypt",
        decrypt,
        v1::DecryptRequest {
            ciphertext_blob: session_blob,
            encryption_context: pairs(&ctx1),
            key_id: String::new(),
            ..Default::default()
        },
        "Decrypt by a role session"
    )
    .expect("Decrypt by the role session");
    assert_eq!(back.plaintext, p_session);
    call!(
        ev,
        temporary,
        iam,
        signed_iam,
        "GetCallerIdentity",
        get_caller_identity,
        v1::GetCallerIdentityRequest {},
        "GetCallerIdentity by a role session"
    )
    .expect("GetCallerIdentity");
    // The library's signing types, as a client would build them with session credentials.
    let session_secret = SecretString::new(session_credentials.secret_access_key.clone());
    let signing = keyhaven::auth::signature::SigningCredentials {
        access_key_id: &session_credentials.access_key_id,
        secret: &session_secret,
        session_token: Some(&session_credentials.session_token),
    };
    ev.debug(
        "auth::signature::SigningCredentials (role session)",
        &signing,
    );
    let headers = keyhaven::auth::signature::sign_request(
        signing,
        &d.config.region,
        keyhaven::auth::signature::RequestTarget {
            host: &d.endpoint().replace("http://", ""),
            method_path: "/keyhaven.v1.KeyManagementService/GenerateRandom",
        },
        b"",
        d.now(),
        "00112233445566778899aabbccddeeff",
    );
    ev.debug("auth::signature::SignedHeaders (role session)", &headers);

    // ---- unauthenticated calls
    let p_unauthenticated = format!("plaintext-canary-{tag}-unauth-1c7f5a").into_bytes();
    c.bytes(
        "plaintext of an unauthenticated Encrypt",
        &p_unauthenticated,
    );
    let unauthenticated_encrypt = || v1::EncryptRequest {
        key_id: k1.clone(),
        plaintext: p_unauthenticated.clone(),
        encryption_context: pairs(&ctx1),
        ..Default::default()
    };
    let wrong_secret = format!("wrong-secret-canary-{tag}-Vb3nQ8xZ0pLk7Rt2");
    c.text("a wrong secret access key", &wrong_secret);
    let root_id = d.credentials.access_key_id.clone();
    for (label, creds, reason) in [
        (
            "the root's key id with a wrong secret",
            credentials(&d, &root_id, &wrong_secret, None),
            "InvalidSignatureException",
        ),
        (
            "the user's key id with a wrong secret",
            credentials(&d, &user_key_id, &wrong_secret, None),
            "InvalidSignatureException",
        ),
        (
            "an unknown key id",
            credentials(&d, "KHAKHYGIENEUNKNOWN00", &wrong_secret, None),
            "UnrecognizedClientException",
        ),
        (
            "the session's key id with a wrong secret and the right token",
            credentials(
                &d,
                &session_credentials.access_key_id,
                &wrong_secret,
                Some(&session_credentials.session_token),
            ),
            "InvalidSignatureException",
        ),
        (
            "the session's key id and secret without the token",
            credentials(
                &d,
                &session_credentials.access_key_id,
                &session_credentials.secret_access_key,
                None,
            ),
            "IncompleteSignatureException",
        ),
    ] {
        ev.debug(&format!("ClientCredentials ({label})"), &creds);
        let client = d.client_with(creds).await;
        expect_refused(
            call!(
                ev,
                client,
                kms,
                signed,
                "Encrypt",
                encrypt,
                unauthenticated_encrypt(),
                format!("Encrypt signed with {label}")
            ),
            Code::Unauthenticated,
            reason,
        );
    }
    let forged_token = format!("forged-token-canary-{tag}-Qm9yZ2VkVG9rZW4");
    c.text("a forged session token", &forged_token);
    let forged = credentials(
        &d,
        &session_credentials.access_key_id,
        &session_credentials.secret_access_key,
        Some(&forged_token),
    );
    ev.debug("ClientCredentials (forged token)", &forged);
    let forged = d.client_with(forged).await;
    expect_refused(
        call!(
            ev,
            forged,
            kms,
            signed,
            "Encrypt",
            encrypt,
            unauthenticated_encrypt(),
            "Encrypt with a forged session token"
        ),
        Code::Unauthenticated,
        "InvalidSignatureException",
    );
    let unsigned = d
        .client
        .kms()
        .encrypt(tonic::Request::new(unauthenticated_encrypt()))
        .await;
    ev.outcome("unsigned Encrypt", &unsigned);
    expect_refused(
        unsigned,
        Code::Unauthenticated,
        "MissingAuthenticationTokenException",
    );

    // ---- the audit log read through the daemon
    let mut tail = {
        let request = d.client.signed_audit(
            "TailAuditLog",
            v1::TailAuditLogRequest {
                lines: 10_000,
                follow: false,
            },
        );
        d.client
            .audit()
            .tail_audit_log(request)
            .await
            .expect("TailAuditLog")
            .into_inner()
    };
    let mut tailed = String::new();
    while let Some(line) = tail.message().await.expect("TailAuditLog stream") {
        tailed.push_str(&line.line);
        tailed.push('\n');
    }
    assert!(tailed.lines().count() > 20, "{tailed}");
    ev.add("the audit log tailed through the daemon", tailed);

    call!(
        ev,
        d.client,
        kms,
        signed,
        "DescribeKey",
        describe_key,
        v1::DescribeKeyRequest { key_id: k1.clone() }
    )
    .expect("DescribeKey");

    // ---- a restart with a wrong passphrase, then the right one
    d.stop().await;
    let wrong_passphrase = format!("wrong-passphrase-canary-{tag}-6b1e");
    c.text("a wrong passphrase", &wrong_passphrase);
    match keyhaven::server::Daemon::start(
        d.config.clone(),
        SecretString::new(wrong_passphrase.clone()),
        Arc::new(d.clock.clone()),
    )
    .await
    {
        Ok(_) => panic!("the daemon started with a wrong passphrase"),
        Err(error) => ev.error("Daemon::start with a wrong passphrase", &error),
    }
    d.start_again().await;
    let after = call!(
        ev,
        d.client,
        kms,
        signed,
        "Decrypt",
        decrypt,
        v1::DecryptRequest {
            ciphertext_blob: blob1.clone(),
            encryption_context: pairs(&ctx1),
            key_id: String::new(),
            ..Default::default()
        },
        "Decrypt after a restart"
    )
    .expect("Decrypt after the restart");
    assert_eq!(after.plaintext, p1);
    d.stop().await;

    // ---- the audit log files, rotated ones included
    let audit_dir = d
        .config
        .audit_log
        .parent()
        .expect("audit directory")
        .to_owned();
    let mut files = 0;
    for entry in std::fs::read_dir(&audit_dir).expect("audit directory") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            files += 1;
            let bytes = std::fs::read(&path).expect("audit file");
            ev.add(
                format!("audit file {}", path.display()),
                String::from_utf8_lossy(&bytes).into_owned(),
            );
        }
    }
    assert!(
        files >= 2,
        "the audit log should have rotated at 4096 bytes: {files} file(s) in {}",
        audit_dir.display()
    );

    // ---- the library's configuration and credential types
    ev.debug("ClientCredentials (root)", &d.credentials);
    let settings = match backend {
        Backend::Pkcs11 => common::pkcs11_settings(),
        Backend::Pkcs11Second => common::pkcs11_second_settings(),
        Backend::Sealed | Backend::SealedOnEtcd => Pkcs11Settings {
            name: "hygiene".into(),
            module: "/usr/lib/softhsm/libsofthsm2.so".into(),
            token: TokenSelector::Label("keyhaven".into()),
            pin: SecretString::new(pin_canary.clone()),
            max_idle_sessions: 4,
            init_parameters: None,
        },
    };
    assert_eq!(settings.pin.expose(), &pin_canary);
    ev.debug("keystore::pkcs11::Pkcs11Settings", &settings);
    let mut config = d.config.clone();
    if backend == Backend::Sealed {
        config.add_pkcs11(settings.clone()).expect("add_pkcs11");
    }
    assert!(!config.pkcs11.is_empty());
    ev.debug("server::DaemonConfig (with a PKCS#11 keystore)", &config);
    let file = keyhaven::server::ConfigFile::parse(&format!(
        "keystore = \"pkcs11:hsm\"\n[pkcs11.hsm]\nmodule = \"/usr/lib/x.so\"\ntoken_label = \"keyhaven\"\npin = \"{pin_canary}\"\n"
    ))
    .expect("config file");
    ev.debug("server::ConfigFile (PIN in the file)", &file);
    let from_file = keyhaven::server::DaemonConfig::from_file(&file, Some(d.dir.path().into()))
        .expect("config from file");
    ev.debug("server::DaemonConfig (from a config file)", &from_file);
    let fresh = tempfile::tempdir().expect("temporary directory");
    let initialised = keyhaven::server::init_data_dir(
        fresh.path(),
        &SecretString::new(PASSPHRASE.into()),
        keyhaven::seal::KdfParams::MINIMUM,
        "keyhaven",
        &d.clock,
    )
    .expect("init");
    c.text(
        "the root secret of a freshly initialised data directory",
        initialised.root.credentials.secret_access_key.expose(),
    );
    ev.debug("server::Initialised", &initialised);
    let again = keyhaven::server::init_data_dir(
        fresh.path(),
        &SecretString::new(wrong_passphrase.clone()),
        keyhaven::seal::KdfParams::MINIMUM,
        "keyhaven",
        &d.clock,
    )
    .expect_err("a second init of the same directory");
    ev.error("init_data_dir of an initialised directory", &again);

    // ---- the captured log: real output of this session, at trace level
    tracing::trace!(target: "keyhaven::secret_hygiene", probe = tag, "trace probe");
    let log = log_text(&buffer);
    // Checked after the search, with it: that the log looked at is this session's real output.
    let mut unproven = Vec::new();
    if log.is_empty() {
        unproven.push("nothing was logged".to_owned());
    }
    if !log
        .lines()
        .any(|l| l.contains("TRACE keyhaven::secret_hygiene: trace probe") && l.contains(tag))
    {
        unproven.push(
            "the captured log does not pass trace-level events of keyhaven targets \
             (is RUST_LOG set?)"
                .to_owned(),
        );
    }
    if tracing::level_filters::LevelFilter::current() != tracing::level_filters::LevelFilter::TRACE
    {
        unproven.push("the subscriber is not at trace level (is RUST_LOG set?)".to_owned());
    }
    assert!(ev.request_ids.len() >= 30, "{:?}", ev.request_ids);
    let daemon_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("keyhaven::") && ev.request_ids.iter().any(|id| l.contains(id)))
        .collect();
    if daemon_lines.is_empty() {
        unproven.push(format!(
            "no daemon log line carries any of the {} request ids of this session",
            ev.request_ids.len()
        ));
    }
    if !log
        .lines()
        .any(|l| l.contains("keyhaven serving") && l.contains(&d.account_id))
    {
        unproven.push(format!(
            "the daemon's start-up line for account {} is not in the captured log",
            d.account_id
        ));
    }
    if !log
        .lines()
        .any(|l| l.contains("request refused: not authenticated"))
    {
        unproven.push("the refusals of unauthenticated calls are not in the log".to_owned());
    }
    let mut levels = std::collections::BTreeMap::new();
    for line in log.lines() {
        if let Some(level) = line.split_whitespace().nth(1)
            && ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level)
        {
            *levels.entry(level.to_owned()).or_insert(0usize) += 1;
        }
    }
    ev.add("the captured log output", log.clone());

    // ---- the search: by surface, each line that shows a canary, with the canaries it shows
    let mut leaks: Vec<String> = Vec::new();
    let mut hits = 0;
    for (surface, text) in &ev.surfaces {
        // (start of the line, an excerpt around the first canary on it, what it shows)
        let mut lines: Vec<(usize, String, Vec<String>)> = Vec::new();
        for (what, forms) in &c.list {
            for (kind, form) in forms {
                for (at, _) in text.match_indices(form.as_str()) {
                    hits += 1;
                    let start = text[..at].rfind('\n').map(|i| i + 1).unwrap_or(0);
                    let found = format!("{what} ({kind})");
                    match lines.iter_mut().find(|(s, _, _)| *s == start) {
                        Some((_, _, found_here)) if !found_here.contains(&found) => {
                            found_here.push(found)
                        }
                        Some(_) => {}
                        None => lines.push((start, excerpt(text, at), vec![found])),
                    }
                }
            }
        }
        lines.sort_by_key(|(start, _, _)| *start);
        let shown = lines.len().min(8);
        for (_, line, found) in &lines[..shown] {
            leaks.push(format!("{surface} shows {}:\n    {line}", found.join(", ")));
        }
        if lines.len() > shown {
            leaks.push(format!("{surface}: {} more lines", lines.len() - shown));
        }
    }
    eprintln!(
        "secret hygiene ({tag}): {} canaries in {} forms, searched in {} surfaces ({} statuses, \
         {} Debug outputs, {files} audit files, {} log lines by level {levels:?}, {} lines of \
         this daemon); {hits} canary occurrence(s); {:.1}s",
        c.list.len(),
        c.list.iter().map(|(_, f)| f.len()).sum::<usize>(),
        ev.surfaces.len(),
        ev.statuses,
        ev.debugs,
        log.lines().count(),
        daemon_lines.len(),
        started.elapsed().as_secs_f64(),
    );
    assert!(
        leaks.is_empty() && unproven.is_empty(),
        "{hits} canary occurrence(s) with the {tag} keystore:\n{}\n{}",
        leaks.join("\n"),
        unproven.join("\n"),
    );
}

/// The line of `text` around byte `at`, shortened to about 500 characters around it.
fn excerpt(text: &str, at: usize) -> String {
    let start = text[..at].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let end = text[at..].find('\n').map(|i| at + i).unwrap_or(text.len());
    if end - start <= 600 {
        return text[start..end].to_owned();
    }
    let boundary = |mut i: usize| {
        while !text.is_char_boundary(i) {
            i += 1;
        }
        i
    };
    let from = boundary(at.saturating_sub(250).max(start));
    let to = boundary((from + 500).min(end));
    format!("…{}…", &text[from..to])
}
