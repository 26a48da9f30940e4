//! MFA end to end over gRPC against a real daemon: virtual devices, two-code enabling,
//! GetSessionToken with a code, the MFA condition keys in a policy, and the refusals (a stale
//! code, a replayed code, too many wrong codes), each with its exact status and proof that
//! nothing changed. Codes come from an implementation of RFC 6238 written here, checked first
//! against the RFC's own vectors.

mod common;

use common::{Backend, TestDaemon, assert_refused};
use hmac::{Hmac, Mac};
use keyhaven::api::reason_of;
use keyhaven::client::{Client, ClientCredentials};
use keyhaven::proto::v1;
use keyhaven::secret::SecretString;
use tonic::Code;

// ------------------------------------------------------------------ an independent TOTP

/// RFC 6238 with HMAC-SHA-1 over the big-endian step, RFC 4226's dynamic truncation, and the
/// last `digits` decimal digits.
fn totp(seed: &[u8], unix_time: i64, digits: u32) -> String {
    let counter = (unix_time / 30) as u64;
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(seed).unwrap();
    mac.update(&counter.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = (hash[hash.len() - 1] & 0xf) as usize;
    let binary = ((u32::from(hash[offset]) & 0x7f) << 24)
        | (u32::from(hash[offset + 1]) << 16)
        | (u32::from(hash[offset + 2]) << 8)
        | u32::from(hash[offset + 3]);
    format!(
        "{:0width$}",
        binary % 10u32.pow(digits),
        width = digits as usize
    )
}

/// RFC 4648 Base32 without padding, decoded by hand.
fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u64, 0u32);
    for c in text.trim_end_matches('=').chars() {
        let value = ALPHABET.find(c).expect("a Base32 character") as u64;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

#[test]
fn the_test_totp_matches_rfc_6238_appendix_b() {
    let seed = b"12345678901234567890";
    for (time, expected) in [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ] {
        assert_eq!(totp(seed, time, 8), expected, "T = {time}");
    }
    assert_eq!(base32_decode("GEZDGNBVGY3TQOJQ"), b"1234567890");
}

// ------------------------------------------------------------------ helpers

/// Alice may do anything with keys and manage her own MFA device, but may not schedule a
/// key's deletion without MFA (the AWS idiom), nor disable a key with an MFA sign-in older
/// than ten minutes.
const ALICE_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[
  {"Effect":"Allow","Action":["kms:*"],"Resource":"*"},
  {"Effect":"Allow","Action":["iam:EnableMFADevice","iam:ListMFADevices","iam:DeactivateMFADevice"],
   "Resource":"arn:keyhaven:iam::*:user/${aws:username}"},
  {"Sid":"DeletionNeedsMfa","Effect":"Deny","Action":"kms:ScheduleKeyDeletion","Resource":"*",
   "Condition":{"BoolIfExists":{"aws:MultiFactorAuthPresent":"false"}}},
  {"Sid":"DisableNeedsFreshMfa","Effect":"Deny","Action":"kms:DisableKey","Resource":"*",
   "Condition":{"NumericGreaterThanIfExists":{"aws:MultiFactorAuthAge":"600"}}}
]}"#;

struct Device {
    serial: String,
    seed: Vec<u8>,
}

impl Device {
    fn code_at(&self, time: i64) -> String {
        totp(&self.seed, time, 6)
    }
}

async fn create_device(d: &TestDaemon, name: &str) -> (Device, v1::CreateVirtualMfaDeviceResponse) {
    let created = d
        .client
        .iam()
        .create_virtual_mfa_device(d.client.signed_iam(
            "CreateVirtualMFADevice",
            v1::CreateVirtualMfaDeviceRequest {
                virtual_mfa_device_name: name.into(),
            },
        ))
        .await
        .expect("CreateVirtualMFADevice")
        .into_inner();
    let device = Device {
        serial: created.serial_number.clone(),
        seed: base32_decode(&created.base32_string_seed),
    };
    (device, created)
}

async fn enable(
    client: &Client,
    user: &str,
    serial: &str,
    code1: &str,
    code2: &str,
) -> Result<(), tonic::Status> {
    client
        .iam()
        .enable_mfa_device(client.signed_iam(
            "EnableMFADevice",
            v1::EnableMfaDeviceRequest {
                user_name: user.into(),
                serial_number: serial.into(),
                authentication_code1: code1.into(),
                authentication_code2: code2.into(),
            },
        ))
        .await
        .map(|_| ())
}

async fn session_token(
    client: &Client,
    serial: &str,
    code: &str,
) -> Result<v1::Credentials, tonic::Status> {
    Ok(client
        .iam()
        .get_session_token(client.signed_iam(
            "GetSessionToken",
            v1::GetSessionTokenRequest {
                duration_seconds: Some(3_600),
                serial_number: serial.into(),
                token_code: code.into(),
            },
        ))
        .await?
        .into_inner()
        .credentials
        .expect("credentials"))
}

async fn session_client(d: &TestDaemon, credentials: v1::Credentials) -> Client {
    d.client_with(ClientCredentials {
        access_key_id: credentials.access_key_id,
        secret_access_key: SecretString::new(credentials.secret_access_key),
        session_token: Some(SecretString::new(credentials.session_token)),
        region: d.config.region.clone(),
    })
    .await
}

async fn schedule_deletion(client: &Client, key: &str) -> Result<(), tonic::Status> {
    client
        .kms()
        .schedule_key_deletion(client.signed(
            "ScheduleKeyDeletion",
            v1::ScheduleKeyDeletionRequest {
                key_id: key.into(),
                pending_window_in_days: Some(7),
            },
        ))
        .await
        .map(|_| ())
}

async fn disable(client: &Client, key: &str) -> Result<(), tonic::Status> {
    client
        .kms()
        .disable_key(client.signed("DisableKey", v1::DisableKeyRequest { key_id: key.into() }))
        .await
        .map(|_| ())
}

async fn mfa_devices(d: &TestDaemon, user: &str) -> Vec<v1::MfaDevice> {
    d.client
        .iam()
        .list_mfa_devices(d.client.signed_iam(
            "ListMFADevices",
            v1::ListMfaDevicesRequest {
                user_name: user.into(),
            },
        ))
        .await
        .expect("ListMFADevices")
        .into_inner()
        .mfa_devices
}

#[track_caller]
fn assert_denied_saying<T: std::fmt::Debug>(result: Result<T, tonic::Status>, words: &str) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        reason_of(&status).as_deref(),
        Some("AccessDeniedException"),
        "{status:?}"
    );
    assert!(status.message().contains(words), "{status:?}");
}

/// Moves the daemon's clock to 5 s into the next 30-second step, so that a test's codes do
/// not straddle a step boundary.
fn to_start_of_step(d: &TestDaemon) -> i64 {
    let now = d.now();
    d.clock.advance(30 - now.rem_euclid(30) + 5);
    d.now()
}

/// A daemon whose unauthenticated-request throttle does not get in the way.
async fn daemon() -> TestDaemon {
    TestDaemon::start(Backend::Sealed).await
}

// ------------------------------------------------------------------ the tests

/// The seed, URI and QR code come once; the QR code is a PNG of the otpauth URI's size.
#[tokio::test]
async fn a_new_device_shows_its_seed_once_as_text_uri_and_png() {
    let d = daemon().await;
    let (device, created) = create_device(&d, "alice-phone").await;
    assert_eq!(
        created.serial_number,
        format!("arn:keyhaven:iam::{}:mfa/alice-phone", d.account_id)
    );
    assert_eq!(device.seed.len(), 20);
    assert!(
        created.otpauth_uri.starts_with("otpauth://totp/")
            && created
                .otpauth_uri
                .contains(&format!("secret={}", created.base32_string_seed))
            && created.otpauth_uri.contains("period=30")
            && created.otpauth_uri.contains("digits=6"),
        "{}",
        created.otpauth_uri
    );
    assert_eq!(&created.qr_code_png[..8], b"\x89PNG\r\n\x1a\n");
    // Lists never show the seed.
    let listed = d
        .client
        .iam()
        .list_virtual_mfa_devices(d.client.signed_iam(
            "ListVirtualMFADevices",
            v1::ListVirtualMfaDevicesRequest::default(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.virtual_mfa_devices.len(), 1);
    assert_eq!(
        listed.virtual_mfa_devices[0].serial_number,
        created.serial_number
    );
    assert!(!format!("{listed:?}").contains(&created.base32_string_seed));
    // A second device of the name is refused, and the first keeps its seed.
    let again = d
        .client
        .iam()
        .create_virtual_mfa_device(d.client.signed_iam(
            "CreateVirtualMFADevice",
            v1::CreateVirtualMfaDeviceRequest {
                virtual_mfa_device_name: "alice-phone".into(),
            },
        ))
        .await;
    assert_refused(again, Code::AlreadyExists, "EntityAlreadyExistsException");
    d.client
        .iam()
        .create_user(d.client.signed_iam(
            "CreateUser",
            v1::CreateUserRequest {
                user_name: "alice".into(),
            },
        ))
        .await
        .unwrap();
    let now = to_start_of_step(&d);
    enable(
        &d.client,
        "alice",
        &device.serial,
        &device.code_at(now - 30),
        &device.code_at(now),
    )
    .await
    .expect("the first seed still enables the device");
}

/// Enabling takes two codes of consecutive steps; anything else is InvalidAuthenticationCode
/// and leaves the device unassigned.
#[tokio::test]
async fn enabling_needs_two_consecutive_current_codes() {
    let d = daemon().await;
    d.create_user("alice", Some(ALICE_POLICY)).await;
    let (device, _) = create_device(&d, "alice-phone").await;
    let now = to_start_of_step(&d);
    let refused_with = |result: Result<(), tonic::Status>| {
        assert_refused(
            result,
            Code::PermissionDenied,
            "InvalidAuthenticationCodeException",
        )
    };
    // The same code twice, codes two steps apart, codes in the wrong order, stale codes.
    for (first, second) in [
        (now, now),
        (now - 60, now),
        (now, now - 30),
        (now - 120, now - 90),
    ] {
        refused_with(
            enable(
                &d.client,
                "alice",
                &device.serial,
                &device.code_at(first),
                &device.code_at(second),
            )
            .await,
        );
        assert!(mfa_devices(&d, "alice").await.is_empty());
    }
    // Not six digits: a validation error, not a guess.
    assert_refused(
        enable(&d.client, "alice", &device.serial, "12345", "123456").await,
        Code::InvalidArgument,
        "ValidationException",
    );
    // Four wrong tries so far: one more right pair is still accepted (and forgives them).
    enable(
        &d.client,
        "alice",
        &device.serial,
        &device.code_at(now - 30),
        &device.code_at(now),
    )
    .await
    .expect("two consecutive codes");
    let devices = mfa_devices(&d, "alice").await;
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].serial_number, device.serial);
    assert_eq!(devices[0].enable_date, now);
    // Enabled once: for another user it is EntityAlreadyExists.
    d.create_user("bob", None).await;
    d.clock.advance(60);
    let later = d.now();
    assert_refused(
        enable(
            &d.client,
            "bob",
            &device.serial,
            &device.code_at(later - 30),
            &device.code_at(later),
        )
        .await,
        Code::AlreadyExists,
        "EntityAlreadyExistsException",
    );
    assert!(mfa_devices(&d, "bob").await.is_empty());
}

/// The policy that requires MFA for ScheduleKeyDeletion: long-term keys and a session without
/// MFA are refused and the key stays Enabled; a session from a current code is allowed.
/// `aws:MultiFactorAuthAge` then ages: DisableKey needs an MFA sign-in under ten minutes old.
#[tokio::test]
async fn a_policy_requiring_mfa_refuses_long_term_keys_and_allows_an_mfa_session() {
    let d = daemon().await;
    let alice = d.create_user("alice", Some(ALICE_POLICY)).await;
    let key = d.create_key("needs mfa to delete").await.key_id;
    let (device, _) = create_device(&d, "alice-phone").await;
    let now = to_start_of_step(&d);
    enable(
        &alice,
        "alice",
        &device.serial,
        &device.code_at(now - 30),
        &device.code_at(now),
    )
    .await
    .expect("alice enables her own device");

    // Long-term keys: the key is absent, BoolIfExists applies the Deny.
    let refused = schedule_deletion(&alice, &key).await;
    assert_refused(refused, Code::PermissionDenied, "AccessDeniedException");
    assert_eq!(d.state(&key).await, v1::KeyState::Enabled);

    // A session without MFA: the key is false.
    let plain = session_client(&d, session_token(&alice, "", "").await.unwrap()).await;
    assert_refused(
        schedule_deletion(&plain, &key).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    assert_eq!(d.state(&key).await, v1::KeyState::Enabled);
    // Sessions cannot make sessions.
    assert_denied_saying(
        session_token(&plain, &device.serial, &device.code_at(now + 30)).await,
        "session credentials",
    );
    // Nor may a session without MFA call IAM, as in AWS: not even what alice's key may.
    let list_own = |client: &Client| {
        let request = client.signed_iam("ListMFADevices", v1::ListMfaDevicesRequest::default());
        let mut iam = client.iam();
        async move { iam.list_mfa_devices(request).await.map(|r| r.into_inner()) }
    };
    assert_eq!(list_own(&alice).await.unwrap().mfa_devices.len(), 1);
    assert_denied_saying(list_own(&plain).await, "issued without MFA");

    // A session from the next step's code: MFA present, age 0.
    d.clock.advance(30);
    let mfa = session_client(
        &d,
        session_token(&alice, &device.serial, &device.code_at(d.now()))
            .await
            .expect("GetSessionToken with a current code"),
    )
    .await;
    let whoami = mfa
        .iam()
        .get_caller_identity(mfa.signed_iam("GetCallerIdentity", v1::GetCallerIdentityRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        whoami.arn,
        format!("arn:keyhaven:iam::{}:user/alice", d.account_id)
    );
    disable(&mfa, &key)
        .await
        .expect("a fresh MFA sign-in disables");
    d.client
        .kms()
        .enable_key(d.client.signed(
            "EnableKey",
            v1::EnableKeyRequest {
                key_id: key.clone(),
            },
        ))
        .await
        .unwrap();
    // Eleven minutes later the sign-in is too old for DisableKey, still good for deletion.
    d.clock.advance(660);
    assert_refused(
        disable(&mfa, &key).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    assert_eq!(d.state(&key).await, v1::KeyState::Enabled);
    schedule_deletion(&mfa, &key)
        .await
        .expect("an MFA session schedules deletion");
    assert_eq!(d.state(&key).await, v1::KeyState::PendingDeletion);
}

/// A code is accepted once and only near its time: a stale code, a replayed code and an
/// earlier code of the window are refused with AccessDenied, and issue no credentials; the
/// last accepted step survives a restart.
#[tokio::test]
async fn old_and_replayed_codes_are_refused_even_after_a_restart() {
    let mut d = daemon().await;
    let alice_key = user_credentials(&d, "alice", ALICE_POLICY).await;
    let alice = d.client_with(alice_key.clone()).await;
    let (device, _) = create_device(&d, "alice-phone").await;
    let now = to_start_of_step(&d);
    enable(
        &alice,
        "alice",
        &device.serial,
        &device.code_at(now - 30),
        &device.code_at(now),
    )
    .await
    .unwrap();
    d.clock.advance(30);
    let now = d.now();

    // Two steps old: outside the ±1 window.
    assert_denied_saying(
        session_token(&alice, &device.serial, &device.code_at(now - 60)).await,
        "not a current code",
    );
    // The enabling codes' step: already used.
    assert_denied_saying(
        session_token(&alice, &device.serial, &device.code_at(now - 30)).await,
        "already used",
    );
    let code = device.code_at(now);
    session_token(&alice, &device.serial, &code)
        .await
        .expect("a current code");
    // The same code again, at once and a few seconds later.
    assert_denied_saying(
        session_token(&alice, &device.serial, &code).await,
        "already used",
    );
    d.clock.advance(10);
    assert_denied_saying(
        session_token(&alice, &device.serial, &code).await,
        "already used",
    );
    // Another device's serial, or one of a device not hers: refused alike.
    assert_denied_saying(
        session_token(
            &alice,
            &format!("arn:keyhaven:iam::{}:mfa/nobody", d.account_id),
            &device.code_at(d.now() + 30),
        )
        .await,
        "not an MFA device enabled for the caller",
    );
    // The accepted step is on disk: after a restart, still used.
    d.restart().await;
    let alice = d.client_with(alice_key).await;
    assert_denied_saying(
        session_token(&alice, &device.serial, &code).await,
        "already used",
    );
    // The next step's code is fine.
    d.clock.advance(30);
    session_token(&alice, &device.serial, &device.code_at(d.now()))
        .await
        .expect("the next code");
}

/// Creates user `name` with `policy` and an access key: the key's credentials.
async fn user_credentials(d: &TestDaemon, name: &str, policy: &str) -> ClientCredentials {
    let iam = d.client.iam();
    iam.clone()
        .create_user(d.client.signed_iam(
            "CreateUser",
            v1::CreateUserRequest {
                user_name: name.into(),
            },
        ))
        .await
        .expect("CreateUser");
    iam.clone()
        .put_entity_policy(d.client.signed_iam(
            "PutEntityPolicy",
            v1::PutEntityPolicyRequest {
                entity_type: v1::EntityType::User as i32,
                entity_name: name.into(),
                policy_name: "inline".into(),
                policy_document: policy.into(),
            },
        ))
        .await
        .expect("PutEntityPolicy");
    let key = iam
        .clone()
        .create_access_key(d.client.signed_iam(
            "CreateAccessKey",
            v1::CreateAccessKeyRequest {
                user_name: name.into(),
            },
        ))
        .await
        .expect("CreateAccessKey")
        .into_inner();
    ClientCredentials {
        access_key_id: key.access_key.expect("access key").access_key_id,
        secret_access_key: SecretString::new(key.secret_access_key),
        session_token: None,
        region: d.config.region.clone(),
    }
}

/// Five wrong codes lock the device for five minutes: even the right code is refused then;
/// after the lockout the right code works again.
#[tokio::test]
async fn wrong_codes_are_throttled_per_device() {
    let d = daemon().await;
    let alice = d.create_user("alice", Some(ALICE_POLICY)).await;
    let (device, _) = create_device(&d, "alice-phone").await;
    let now = to_start_of_step(&d);
    enable(
        &alice,
        "alice",
        &device.serial,
        &device.code_at(now - 30),
        &device.code_at(now),
    )
    .await
    .unwrap();
    d.clock.advance(30);
    let right = device.code_at(d.now());
    let wrong = format!("{:06}", (right.parse::<u32>().unwrap() + 1) % 1_000_000);
    for _ in 0..5 {
        assert_denied_saying(
            session_token(&alice, &device.serial, &wrong).await,
            "not a current code",
        );
    }
    assert_denied_saying(
        session_token(&alice, &device.serial, &right).await,
        "too many wrong codes",
    );
    // Still locked a little later, with the then-current code.
    d.clock.advance(120);
    assert_denied_saying(
        session_token(&alice, &device.serial, &device.code_at(d.now())).await,
        "too many wrong codes",
    );
    d.clock.advance(200);
    session_token(&alice, &device.serial, &device.code_at(d.now()))
        .await
        .expect("accepted after the lockout");
    // Every refused code is in the audit log, with who tried.
    let refusals = std::fs::read_to_string(&d.config.audit_log)
        .expect("audit log")
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|r| {
            r["operation"] == "sts:GetSessionToken"
                && r["outcome"]["reason"] == "AccessDeniedException"
                && r["principal"]
                    .as_str()
                    .is_some_and(|p| p.ends_with(":user/alice"))
        })
        .count();
    assert_eq!(refusals, 7);
}

/// A device enabled for a user keeps the user (DeleteConflict) and itself from deletion;
/// deactivated, both go.
#[tokio::test]
async fn enabled_devices_are_deactivated_before_deletion() {
    let d = daemon().await;
    let alice = d.create_user("alice", Some(ALICE_POLICY)).await;
    let (device, _) = create_device(&d, "alice-phone").await;
    let now = to_start_of_step(&d);
    enable(
        &alice,
        "alice",
        &device.serial,
        &device.code_at(now - 30),
        &device.code_at(now),
    )
    .await
    .unwrap();
    let delete_device = || async {
        d.client
            .iam()
            .delete_virtual_mfa_device(d.client.signed_iam(
                "DeleteVirtualMFADevice",
                v1::DeleteVirtualMfaDeviceRequest {
                    serial_number: device.serial.clone(),
                },
            ))
            .await
    };
    assert_refused(
        delete_device().await,
        Code::FailedPrecondition,
        "DeleteConflictException",
    );
    let delete_user = d
        .client
        .iam()
        .delete_user(d.client.signed_iam(
            "DeleteUser",
            v1::DeleteUserRequest {
                user_name: "alice".into(),
            },
        ))
        .await;
    assert_refused(
        delete_user,
        Code::FailedPrecondition,
        "DeleteConflictException",
    );
    assert_eq!(mfa_devices(&d, "alice").await.len(), 1);
    // Alice deactivates her own (no UserName: the caller).
    alice
        .iam()
        .deactivate_mfa_device(alice.signed_iam(
            "DeactivateMFADevice",
            v1::DeactivateMfaDeviceRequest {
                user_name: String::new(),
                serial_number: device.serial.clone(),
            },
        ))
        .await
        .expect("DeactivateMFADevice");
    assert!(mfa_devices(&d, "alice").await.is_empty());
    assert_denied_saying(
        session_token(&alice, &device.serial, &device.code_at(d.now() + 30)).await,
        "not an MFA device enabled for the caller",
    );
    delete_device().await.expect("an unassigned device deletes");
    assert_refused(
        delete_device().await,
        Code::NotFound,
        "NoSuchEntityException",
    );
}

// ------------------------------------------------------------------ the CLI

/// Runs the `keyhaven` binary against `d` signed with `credentials`; its exit status, stdout
/// and stderr. Run off the runtime's threads: the daemon answers on them meanwhile.
async fn cli(
    d: &TestDaemon,
    credentials: &ClientCredentials,
    args: &[&str],
) -> (bool, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_keyhaven"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KEYHAVEN_") {
            command.env_remove(&name);
        }
    }
    command
        .env_remove("RUST_LOG")
        .env("KEYHAVEN_ENDPOINT", d.endpoint())
        .env("KEYHAVEN_REGION", &d.config.region)
        .env("KEYHAVEN_ACCESS_KEY_ID", &credentials.access_key_id)
        .env(
            "KEYHAVEN_SECRET_ACCESS_KEY",
            credentials.secret_access_key.expose(),
        )
        .args(args);
    if let Some(token) = &credentials.session_token {
        command.env("KEYHAVEN_SESSION_TOKEN", token.expose());
    }
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("run keyhaven");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The value of `export NAME=value` in `text`.
fn exported(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("export {name}=")))
        .unwrap_or_else(|| panic!("no export {name} in {text}"))
        .to_owned()
}

/// `keyhaven mfa create --qr-png`, `mfa enable`, `mfa list`, and `session-token` printing
/// export lines whose credentials carry MFA: the long-term key is refused the deletion the
/// MFA session then schedules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_enables_lists_and_signs_in_with_a_code() {
    let d = daemon().await;
    let alice = user_credentials(&d, "alice", ALICE_POLICY).await;
    let key = d.create_key("cli mfa").await.key_id;
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("alice-phone.png");
    let png_arg = png.to_str().unwrap();

    let (ok, out, err) = cli(
        &d,
        &d.credentials,
        &[
            "--output",
            "json",
            "mfa",
            "create",
            "alice-phone",
            "--qr-png",
            png_arg,
        ],
    )
    .await;
    assert!(ok, "{err}");
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    let serial = created["VirtualMFADevice"]["SerialNumber"]
        .as_str()
        .unwrap()
        .to_owned();
    let device = Device {
        serial: serial.clone(),
        seed: base32_decode(
            created["VirtualMFADevice"]["Base32StringSeed"]
                .as_str()
                .unwrap(),
        ),
    };
    assert!(created["VirtualMFADevice"].get("QRCodePNG").is_none());
    let written = std::fs::read(&png).unwrap();
    assert_eq!(&written[..8], b"\x89PNG\r\n\x1a\n");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&png).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let now = to_start_of_step(&d);
    let (ok, _, err) = cli(
        &d,
        &d.credentials,
        &[
            "mfa",
            "enable",
            &serial,
            "--user",
            "alice",
            "--code1",
            &device.code_at(now - 30),
            "--code2",
            &device.code_at(now),
        ],
    )
    .await;
    assert!(ok, "{err}");
    let (ok, out, err) = cli(&d, &alice, &["--output", "json", "mfa", "list"]).await;
    assert!(ok, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["MFADevices"][0]["SerialNumber"], serial.as_str());
    assert_eq!(listed["MFADevices"][0]["UserName"], "alice");

    // Long-term key: refused, and the key stays Enabled.
    let (ok, _, err) = cli(&d, &alice, &["key", "schedule-deletion", &key]).await;
    assert!(!ok);
    assert!(err.contains("AccessDeniedException"), "{err}");
    assert_eq!(d.state(&key).await, v1::KeyState::Enabled);
    // A wrong code: refused, no export lines.
    d.clock.advance(30);
    let code = device.code_at(d.now());
    let wrong = format!(
        "{:06}",
        (code.parse::<u32>().unwrap() + 500_000) % 1_000_000
    );
    let (ok, out, err) = cli(
        &d,
        &alice,
        &["session-token", "--mfa-serial", &serial, "--code", &wrong],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("AccessDeniedException"), "{err}");
    assert!(!out.contains("export"), "{out}");

    let (ok, out, err) = cli(
        &d,
        &alice,
        &["session-token", "--mfa-serial", &serial, "--code", &code],
    )
    .await;
    assert!(ok, "{err}");
    let session = ClientCredentials {
        access_key_id: exported(&out, "KEYHAVEN_ACCESS_KEY_ID"),
        secret_access_key: SecretString::new(exported(&out, "KEYHAVEN_SECRET_ACCESS_KEY")),
        session_token: Some(SecretString::new(exported(&out, "KEYHAVEN_SESSION_TOKEN"))),
        region: d.config.region.clone(),
    };
    let (ok, out, err) = cli(&d, &session, &["whoami"]).await;
    assert!(ok, "{err}");
    assert!(out.contains(":user/alice"), "{out}");
    let (ok, _, err) = cli(
        &d,
        &session,
        &["key", "schedule-deletion", &key, "--pending-days", "7"],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(d.state(&key).await, v1::KeyState::PendingDeletion);
    // Deactivated by its user: listed no more.
    let (ok, _, err) = cli(&d, &alice, &["mfa", "deactivate", &serial]).await;
    assert!(ok, "{err}");
    assert!(mfa_devices(&d, "alice").await.is_empty());
}

/// AssumeRole with SerialNumber and TokenCode: a trust policy requiring MFA refuses the
/// caller without a code and with a used one, and the role session made with a code carries
/// MFA into the role's own policy.
#[tokio::test]
async fn assume_role_with_a_code_carries_mfa_into_the_role_session() {
    let d = daemon().await;
    let alice = d
        .create_user(
            "alice",
            Some(r#"{"Statement":[{"Effect":"Allow","Action":"sts:AssumeRole","Resource":"*"}]}"#),
        )
        .await;
    let key = d.create_key("the role deletes with MFA").await.key_id;
    let alice_arn = format!("arn:keyhaven:iam::{}:user/alice", d.account_id);
    let role = d
        .client
        .iam()
        .create_role(d.client.signed_iam(
            "CreateRole",
            v1::CreateRoleRequest {
                role_name: "deleter".into(),
                assume_role_policy_document: format!(
                    r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{alice_arn}"}},"Action":"sts:AssumeRole","Condition":{{"Bool":{{"aws:MultiFactorAuthPresent":"true"}}}}}}]}}"#
                ),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .role
        .unwrap();
    d.client
        .iam()
        .put_entity_policy(d.client.signed_iam(
            "PutEntityPolicy",
            v1::PutEntityPolicyRequest {
                entity_type: v1::EntityType::Role as i32,
                entity_name: "deleter".into(),
                policy_name: "delete".into(),
                policy_document: ALICE_POLICY.into(),
            },
        ))
        .await
        .unwrap();
    let (device, _) = create_device(&d, "alice-phone").await;
    let now = to_start_of_step(&d);
    enable(
        &d.client,
        "alice",
        &device.serial,
        &device.code_at(now - 30),
        &device.code_at(now),
    )
    .await
    .unwrap();
    let assume = |serial: String, code: String| {
        let request = alice.signed_iam(
            "AssumeRole",
            v1::AssumeRoleRequest {
                role_arn: role.arn.clone(),
                role_session_name: "with-mfa".into(),
                duration_seconds: None,
                serial_number: serial,
                token_code: code,
            },
        );
        let mut iam = alice.iam();
        async move { iam.assume_role(request).await.map(|r| r.into_inner()) }
    };
    // No code: the trust policy's condition fails.
    assert_refused(
        assume(String::new(), String::new()).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    // A code without its device: a validation error.
    assert_refused(
        assume(String::new(), device.code_at(now)).await,
        Code::InvalidArgument,
        "ValidationException",
    );
    // The enabling step's code: already used.
    assert_denied_saying(
        assume(device.serial.clone(), device.code_at(now)).await,
        "already used",
    );
    d.clock.advance(30);
    let session = assume(device.serial.clone(), device.code_at(d.now()))
        .await
        .expect("AssumeRole with a current code");
    let role_session = session_client(&d, session.credentials.unwrap()).await;
    schedule_deletion(&role_session, &key)
        .await
        .expect("the role session carries MFA");
    assert_eq!(d.state(&key).await, v1::KeyState::PendingDeletion);
}
