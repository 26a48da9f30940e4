//! The web console (issue 20): its door over real HTTP (sessions, cross-site refusals, the
//! Content-Security-Policy, timeouts, throttled sign-ins), and the pages in a real browser
//! (headless Chromium from Debian's packages driven through WebDriver by Selenium, installed
//! by tests/python/browser-setup.sh).

mod common;

use common::console::{Session, request, request_tls, sign_in};
use common::{Backend, TestDaemon};
use keyhaven::api::console::{CONSOLE_HEADER, CONTENT_SECURITY_POLICY, CSRF_HEADER, IDLE_TIMEOUT};
use keyhaven::proto::v1;
use std::net::SocketAddr;
use std::path::PathBuf;

const PASSWORD: &str = "Console-test-7-password";
/// Alice may make and read keys, read users and the audit log; not delete keys.
const ALICE_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":["kms:CreateKey","kms:ListKeys","kms:DescribeKey","kms:ListAliases",
  "iam:ListUsers","audit:ReadAudit"],"Resource":"*"}]}"#;

async fn console_daemon() -> TestDaemon {
    TestDaemon::start_with(Backend::Sealed, |config| {
        config.console_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await
}

/// A daemon with user alice (ALICE_POLICY, a password).
async fn with_alice() -> (TestDaemon, SocketAddr) {
    let d = console_daemon().await;
    d.create_user("alice", Some(ALICE_POLICY)).await;
    d.create_login_profile("alice", PASSWORD).await;
    let console = d.console_addr().expect("console");
    (d, console)
}

async fn key_count(d: &TestDaemon) -> usize {
    d.client
        .kms()
        .list_keys(d.client.signed("ListKeys", v1::ListKeysRequest::default()))
        .await
        .expect("ListKeys")
        .into_inner()
        .keys
        .len()
}

#[tokio::test]
async fn the_console_serves_its_pages_under_a_strict_policy() {
    let d = console_daemon().await;
    let console = d.console_addr().expect("console");
    let page = request(console, "GET", "/", &[], "").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-security-policy"),
        Some(CONTENT_SECURITY_POLICY)
    );
    assert!(CONTENT_SECURITY_POLICY.contains("script-src 'self'"));
    assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    // No inline script or style for the policy to have to allow.
    assert!(!page.body.contains("<script>") && !page.body.contains("style="));
    // Every script of the console's assets: the page loads it, and the daemon serves it, as it
    // is in the tree, under the same policy. The page loads no other script.
    let assets = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/api/console/assets");
    let mut scripts: Vec<String> = std::fs::read_dir(&assets)
        .expect("the console's assets")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".js"))
        .collect();
    scripts.sort();
    assert!(!scripts.is_empty());
    for name in &scripts {
        let path = format!("/assets/{name}");
        assert!(
            page.body
                .contains(&format!(r#"<script src="{path}" defer></script>"#)),
            "the page does not load {path}: {}",
            page.body
        );
        let script = request(console, "GET", &path, &[], "").await;
        assert_eq!(script.status, 200, "{path}");
        assert_eq!(
            script.header("content-type"),
            Some("text/javascript; charset=utf-8"),
            "{path}"
        );
        assert_eq!(
            script.header("content-security-policy"),
            Some(CONTENT_SECURITY_POLICY),
            "{path}"
        );
        let file = std::fs::read_to_string(assets.join(name)).expect("the script");
        assert!(script.body == file, "{path} is not assets/{name}");
    }
    assert_eq!(
        page.body.matches("<script ").count(),
        scripts.len(),
        "{}",
        page.body
    );
    assert_eq!(
        request(console, "GET", "/etc/passwd", &[], "").await.status,
        404
    );
    assert_eq!(request(console, "POST", "/", &[], "").await.status, 405);
    assert_eq!(
        request(console, "GET", "/api/kms", &[(CONSOLE_HEADER, "1")], "")
            .await
            .status,
        405
    );
    // Signed out: the session call says so, and the answer is never cached.
    let none = request(console, "GET", "/api/session", &[(CONSOLE_HEADER, "1")], "").await;
    assert_eq!(none.status, 401);
    assert_eq!(none.error_type(), "NotSignedIn");
    assert_eq!(none.header("cache-control"), Some("no-store"));
}

/// A user signs in; every action is an ordinary call as that user: authorised by the user's
/// policies and audited with door `console`; nothing secret reaches the log.
#[tokio::test]
async fn a_signed_in_user_acts_with_its_own_permissions_and_is_audited() {
    let (d, console) = with_alice().await;
    let target = d.create_key("not alice's to delete").await;

    let wrong = sign_in(console, &d.account_id, "alice", "Wrong-password-1").await;
    assert_eq!(wrong.status, 401, "{wrong:?}");
    assert_eq!(wrong.error_type(), "SignInFailedException");
    assert!(wrong.header("set-cookie").is_none());

    let answer = sign_in(console, &d.account_id, "alice", PASSWORD).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let set_cookie = answer.header("set-cookie").unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(
        !set_cookie.contains("Secure"),
        "plain HTTP on loopback: {set_cookie}"
    );
    let session = answer.json();
    assert_eq!(
        session["Arn"],
        format!("arn:keyhaven:iam::{}:user/alice", d.account_id)
    );
    assert_eq!(session["UserName"], "alice");
    let alice = Session {
        console,
        cookie: answer.cookie(),
        csrf: session["CsrfToken"].as_str().unwrap().to_owned(),
    };
    assert_eq!(alice.session().await.json()["Arn"], session["Arn"]);

    let made = alice
        .kms(
            "CreateKey",
            serde_json::json!({"Description": "from the console"}),
        )
        .await;
    assert_eq!(made.status, 200, "{made:?}");
    let made = made.json()["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let described = alice
        .kms("DescribeKey", serde_json::json!({"KeyId": made}))
        .await;
    assert_eq!(
        described.json()["KeyMetadata"]["Description"],
        "from the console"
    );

    // Refused by alice's policies, with AWS's error, and nothing changes.
    let refused = alice
        .kms(
            "ScheduleKeyDeletion",
            serde_json::json!({"KeyId": target.key_id, "PendingWindowInDays": 7}),
        )
        .await;
    assert_eq!(refused.status, 400, "{refused:?}");
    assert_eq!(refused.error_type(), "AccessDeniedException");
    let still = d
        .client
        .kms()
        .describe_key(d.client.signed(
            "DescribeKey",
            v1::DescribeKeyRequest {
                key_id: target.key_id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .key_metadata
        .unwrap();
    assert_eq!(still.key_state, v1::KeyState::Enabled as i32);

    // IAM over the Query protocol: a sign-in's session may, as alice's policy allows.
    let cookie = alice.cookie_header();
    let users = request(
        console,
        "POST",
        "/api/iam",
        &[
            (CONSOLE_HEADER, "1"),
            ("Cookie", cookie.as_str()),
            (CSRF_HEADER, alice.csrf.as_str()),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        "Action=ListUsers&Version=2010-05-08",
    )
    .await;
    assert_eq!(users.status, 200, "{users:?}");
    assert!(
        users.body.contains("<UserName>alice</UserName>"),
        "{}",
        users.body
    );

    // The audit page reads the log as alice may.
    let audit = request(
        console,
        "GET",
        "/api/audit?lines=50",
        &[(CONSOLE_HEADER, "1"), ("Cookie", cookie.as_str())],
        "",
    )
    .await;
    assert_eq!(audit.status, 200, "{audit:?}");
    let records = audit.json()["Records"].as_array().unwrap().clone();
    assert!(records.iter().any(|r| r["operation"] == "kms:CreateKey"));
    let too_many = request(
        console,
        "GET",
        "/api/audit?lines=10001",
        &[(CONSOLE_HEADER, "1"), ("Cookie", cookie.as_str())],
        "",
    )
    .await;
    assert_eq!(too_many.status, 400);
    assert_eq!(too_many.error_type(), "ValidationException");

    // Every call is in the log as alice's, through the console.
    let log = d.audit_records();
    let arn = session["Arn"].as_str().unwrap();
    for (operation, code) in [
        ("signin:SignIn", "Ok"),
        ("kms:CreateKey", "Ok"),
        ("kms:ScheduleKeyDeletion", "PermissionDenied"),
        ("iam:ListUsers", "Ok"),
    ] {
        assert!(
            log.iter().any(|r| r["operation"] == operation
                && r["door"] == "console"
                && r["principal"] == arn
                && r["outcome"]["code"] == code),
            "no console record of {operation} ({code})"
        );
    }
    // Nothing secret reaches it: the password, the cookie, the CSRF token.
    let text = std::fs::read_to_string(&d.config.audit_log).unwrap();
    for secret in [PASSWORD, alice.cookie.as_str(), alice.csrf.as_str()] {
        assert!(!text.contains(secret), "a secret reached the audit log");
    }
}

/// Requests that could come from another site are refused before anything runs, recorded,
/// and change nothing.
#[tokio::test]
async fn cross_site_requests_are_refused_and_change_nothing() {
    let (d, console) = with_alice().await;
    let alice = Session::sign_in(console, &d.account_id, "alice", PASSWORD).await;
    let before = key_count(&d).await;
    let csrf = alice.csrf.clone();
    let host = console.to_string();
    let own_origin = format!("http://{host}");
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("no CSRF token", vec![(CONSOLE_HEADER, "1")]),
        (
            "a wrong CSRF token",
            vec![(CONSOLE_HEADER, "1"), (CSRF_HEADER, "00ff")],
        ),
        (
            "no console header (a cross-site form)",
            vec![(CSRF_HEADER, csrf.as_str())],
        ),
        (
            "another site's Origin",
            vec![
                (CONSOLE_HEADER, "1"),
                (CSRF_HEADER, csrf.as_str()),
                ("Origin", "http://evil.example"),
            ],
        ),
        (
            "a cross-site fetch",
            vec![
                (CONSOLE_HEADER, "1"),
                (CSRF_HEADER, csrf.as_str()),
                ("Sec-Fetch-Site", "cross-site"),
            ],
        ),
    ];
    for (case, headers) in &cases {
        let refused = alice.kms_with("CreateKey", headers).await;
        assert_eq!(refused.status, 403, "{case}: {refused:?}");
        assert_eq!(refused.error_type(), "InvalidCsrfTokenException", "{case}");
        assert_eq!(key_count(&d).await, before, "{case}: a key was made");
    }
    // The same request from the console's own page passes.
    let passes = alice
        .kms_with(
            "CreateKey",
            &[
                (CONSOLE_HEADER, "1"),
                (CSRF_HEADER, csrf.as_str()),
                ("Origin", own_origin.as_str()),
                ("Sec-Fetch-Site", "same-origin"),
            ],
        )
        .await;
    assert_eq!(passes.status, 200, "{passes:?}");
    assert_eq!(key_count(&d).await, before + 1);
    // A sign-in from another site is refused too (no login CSRF).
    let form =
        serde_json::json!({"Account": d.account_id, "UserName": "alice", "Password": PASSWORD});
    let forged = request(
        console,
        "POST",
        "/api/sign-in",
        &[("Content-Type", "text/plain")],
        &form.to_string(),
    )
    .await;
    assert_eq!(forged.status, 403);
    assert!(forged.header("set-cookie").is_none());
    // The refusals are recorded, unauthenticated, with their reason (the first from a source
    // one by one; more from it within the minute in the log's summary of refusals).
    let refusals = d
        .audit_records()
        .into_iter()
        .filter(|r| {
            r["door"] == "console"
                && r["phase"] == "unauthenticated"
                && r["outcome"]["reason"] == "InvalidCsrfTokenException"
        })
        .collect::<Vec<_>>();
    assert!(!refusals.is_empty(), "no record of the refusals");
}

/// A console on loopback answers to `localhost` and IP addresses only: a page of another
/// site whose name was pointed at loopback (DNS rebinding) cannot even try passwords on it.
#[tokio::test]
async fn a_loopback_console_answers_only_to_its_own_names() {
    let (d, console) = with_alice().await;
    let form =
        serde_json::json!({"Account": d.account_id, "UserName": "alice", "Password": PASSWORD})
            .to_string();
    let port = console.port();
    let attempt = |host: String| {
        let form = form.clone();
        async move {
            request(
                console,
                "POST",
                "/api/sign-in",
                &[
                    (CONSOLE_HEADER, "1"),
                    ("Content-Type", "application/json"),
                    ("Host", host.as_str()),
                ],
                &form,
            )
            .await
        }
    };
    let rebound = attempt(format!("rebound.example:{port}")).await;
    assert_eq!(rebound.status, 403, "{rebound:?}");
    assert_eq!(rebound.error_type(), "InvalidCsrfTokenException");
    assert!(rebound.header("set-cookie").is_none());
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let own = attempt(host.clone()).await;
        assert_eq!(own.status, 200, "{host}: {own:?}");
    }
}

/// Over TLS the session cookie is `Secure` with the `__Host-` prefix, answers carry HSTS,
/// and only that cookie names a session: one of the plain name (which a network attacker or a
/// sibling site could plant) is none, and so are two of the right name.
#[tokio::test(flavor = "multi_thread")]
async fn over_tls_only_the_host_prefixed_secure_cookie_is_a_session() {
    let files = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = common::localhost_certificate(files.path());
    let ca_pem = std::fs::read(&ca).expect("CA");
    let d = TestDaemon::start_with_tls(
        Backend::Sealed,
        |config| {
            config.tls = Some(keyhaven::server::config::TlsSettings {
                cert,
                key,
                client_ca: None,
            });
            config.console_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        },
        keyhaven::client::ClientTls {
            ca_cert: Some(ca_pem.clone()),
            identity: None,
        },
    )
    .await;
    d.create_user("alice", Some(ALICE_POLICY)).await;
    d.create_login_profile("alice", PASSWORD).await;
    let console = d.console_addr().expect("console");
    let form =
        serde_json::json!({"Account": d.account_id, "UserName": "alice", "Password": PASSWORD})
            .to_string();
    let signed_in = request_tls(
        console,
        &ca_pem,
        "POST",
        "/api/sign-in",
        &[(CONSOLE_HEADER, "1"), ("Content-Type", "application/json")],
        &form,
    )
    .await;
    assert_eq!(signed_in.status, 200, "{signed_in:?}");
    let set = signed_in.header("set-cookie").expect("a cookie").to_owned();
    assert!(set.starts_with("__Host-keyhaven-console="), "{set}");
    for attribute in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(
        signed_in
            .header("strict-transport-security")
            .is_some_and(|v| v.starts_with("max-age=")),
        "{signed_in:?}"
    );
    let id = signed_in.cookie();
    let session = |cookie: String| {
        let ca_pem = ca_pem.clone();
        async move {
            request_tls(
                console,
                &ca_pem,
                "GET",
                "/api/session",
                &[(CONSOLE_HEADER, "1"), ("Cookie", cookie.as_str())],
                "",
            )
            .await
        }
    };
    assert_eq!(
        session(format!("__Host-keyhaven-console={id}"))
            .await
            .status,
        200
    );
    let plain = session(format!("keyhaven-console={id}")).await;
    assert_eq!(plain.status, 401, "the plain name over TLS: {plain:?}");
    let planted = session(format!(
        "__Host-keyhaven-console={}; __Host-keyhaven-console={id}",
        "ab".repeat(32)
    ))
    .await;
    assert_eq!(planted.status, 401, "two cookies: {planted:?}");
}

/// Sessions end after 15 minutes idle, when their credentials expire (an hour), and at
/// sign-out, on the daemon: the cookie is worth nothing afterwards.
#[tokio::test]
async fn sessions_end_when_idle_expired_or_signed_out() {
    let (d, console) = with_alice().await;
    let list = serde_json::json!({});

    let idle = Session::sign_in(console, &d.account_id, "alice", PASSWORD).await;
    d.clock.advance(IDLE_TIMEOUT - 60);
    assert_eq!(idle.kms("ListKeys", list.clone()).await.status, 200);
    d.clock.advance(IDLE_TIMEOUT + 1);
    let ended = idle.kms("ListKeys", list.clone()).await;
    assert_eq!(ended.status, 401, "{ended:?}");
    assert_eq!(ended.error_type(), "SessionExpired");
    // Ended for good, not only for that call.
    assert_eq!(idle.session().await.error_type(), "NotSignedIn");

    let busy = Session::sign_in(console, &d.account_id, "alice", PASSWORD).await;
    for _ in 0..5 {
        d.clock.advance(600);
        assert_eq!(busy.kms("ListKeys", list.clone()).await.status, 200);
    }
    d.clock.advance(600);
    let expired = busy.kms("ListKeys", list.clone()).await;
    assert_eq!(expired.status, 401, "{expired:?}");
    assert_eq!(expired.error_type(), "SessionExpired");

    let leaving = Session::sign_in(console, &d.account_id, "alice", PASSWORD).await;
    let cookie = leaving.cookie_header();
    // Signing out is a change: it needs the token too.
    let forged = request(
        console,
        "POST",
        "/api/sign-out",
        &[(CONSOLE_HEADER, "1"), ("Cookie", cookie.as_str())],
        "",
    )
    .await;
    assert_eq!(forged.status, 403);
    assert_eq!(leaving.session().await.status, 200);
    let out = request(
        console,
        "POST",
        "/api/sign-out",
        &[
            (CONSOLE_HEADER, "1"),
            ("Cookie", cookie.as_str()),
            (CSRF_HEADER, leaving.csrf.as_str()),
        ],
        "",
    )
    .await;
    assert_eq!(out.status, 204, "{out:?}");
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    // The old cookie, sent again, names nothing.
    let replayed = leaving.kms("ListKeys", list).await;
    assert_eq!(replayed.status, 401);
    assert_eq!(replayed.error_type(), "NotSignedIn");
}

/// A password that changes ends the sessions signed in with the old one: an administrator's
/// reset or removal all of them, the user's own change all but the session that made it.
#[tokio::test]
async fn a_changed_password_ends_the_sessions_of_the_old_one() {
    let (d, console) = with_alice().await;
    let list = serde_json::json!({});
    let first = Session::sign_in(console, &d.account_id, "alice", PASSWORD).await;
    let second = Session::sign_in(console, &d.account_id, "alice", PASSWORD).await;
    assert_eq!(first.kms("ListKeys", list.clone()).await.status, 200);
    d.client
        .iam()
        .update_login_profile(d.client.signed_iam(
            "UpdateLoginProfile",
            v1::UpdateLoginProfileRequest {
                user_name: "alice".into(),
                password: Some("Reset-by-admin-8-x".into()),
                password_reset_required: Some(false),
            },
        ))
        .await
        .expect("UpdateLoginProfile");
    for ended in [&first, &second] {
        let refused = ended.kms("ListKeys", list.clone()).await;
        assert_eq!(refused.status, 401, "{refused:?}");
    }
    // Signed in again with the new password; removing the password ends that session too.
    let third = Session::sign_in(console, &d.account_id, "alice", "Reset-by-admin-8-x").await;
    assert_eq!(third.kms("ListKeys", list.clone()).await.status, 200);
    d.client
        .iam()
        .delete_login_profile(d.client.signed_iam(
            "DeleteLoginProfile",
            v1::DeleteLoginProfileRequest {
                user_name: "alice".into(),
            },
        ))
        .await
        .expect("DeleteLoginProfile");
    assert_eq!(third.kms("ListKeys", list).await.status, 401);
}

/// A sign-in form that is not the form is refused with its reason, sets no cookie, and is
/// recorded as an unauthenticated call.
#[tokio::test]
async fn a_malformed_sign_in_is_refused_with_its_reason() {
    let (d, console) = with_alice().await;
    for body in [
        "not json".to_owned(),
        serde_json::json!({"Account": d.account_id, "UserName": "alice"}).to_string(),
    ] {
        let refused = request(
            console,
            "POST",
            "/api/sign-in",
            &[(CONSOLE_HEADER, "1"), ("Content-Type", "application/json")],
            &body,
        )
        .await;
        assert_eq!(refused.status, 400, "{body}: {refused:?}");
        assert_eq!(refused.error_type(), "ValidationException", "{body}");
        assert!(refused.header("set-cookie").is_none());
    }
    assert!(d.audit_records().iter().any(|r| r["door"] == "console"
        && r["operation"] == "signin:SignIn"
        && r["phase"] == "unauthenticated"
        && r["outcome"]["reason"] == "ValidationException"));
}

/// Wrong passwords are throttled per user: past five, even the right one is refused until
/// the window passes.
#[tokio::test]
async fn wrong_passwords_are_throttled() {
    let (d, console) = with_alice().await;
    for _ in 0..5 {
        let wrong = sign_in(console, &d.account_id, "alice", "Wrong-password-1").await;
        assert_eq!(wrong.status, 401);
    }
    let throttled = sign_in(console, &d.account_id, "alice", PASSWORD).await;
    assert_eq!(throttled.status, 429, "{throttled:?}");
    assert_eq!(throttled.error_type(), "ThrottlingException");
    assert!(throttled.header("set-cookie").is_none());
    d.clock.advance(301);
    let later = sign_in(console, &d.account_id, "alice", PASSWORD).await;
    assert_eq!(later.status, 200, "{later:?}");
}

/// Keys beside the one the browser makes, as an operator's console shows them: tagged, used,
/// disabled, pending deletion, an HMAC key.
async fn other_keys(d: &TestDaemon) {
    let kms = d.client.kms();
    let create = |description: &str, spec: &str, usage: &str, team: &str| v1::CreateKeyRequest {
        description: description.into(),
        key_spec: spec.into(),
        key_usage: usage.into(),
        tags: vec![v1::Tag {
            tag_key: "team".into(),
            tag_value: team.into(),
        }],
        ..Default::default()
    };
    let mut ids = Vec::new();
    for (alias, request) in [
        (
            "alias/payments",
            create(
                "card data envelopes",
                "SYMMETRIC_DEFAULT",
                "ENCRYPT_DECRYPT",
                "payments",
            ),
        ),
        (
            "alias/reports",
            create(
                "monthly reports",
                "SYMMETRIC_DEFAULT",
                "ENCRYPT_DECRYPT",
                "finance",
            ),
        ),
        (
            "alias/old-backups",
            create(
                "2024 backups",
                "SYMMETRIC_DEFAULT",
                "ENCRYPT_DECRYPT",
                "platform",
            ),
        ),
        (
            "alias/webhooks",
            create(
                "webhook signatures",
                "HMAC_256",
                "GENERATE_VERIFY_MAC",
                "platform",
            ),
        ),
    ] {
        let key = kms
            .clone()
            .create_key(d.client.signed("CreateKey", request))
            .await
            .expect("CreateKey")
            .into_inner()
            .key_metadata
            .unwrap()
            .key_id;
        kms.clone()
            .create_alias(d.client.signed(
                "CreateAlias",
                v1::CreateAliasRequest {
                    alias_name: alias.into(),
                    target_key_id: key.clone(),
                },
            ))
            .await
            .expect("CreateAlias");
        ids.push(key);
    }
    for _ in 0..12 {
        kms.clone()
            .encrypt(d.client.signed(
                "Encrypt",
                v1::EncryptRequest {
                    key_id: ids[0].clone(),
                    plaintext: b"4111 1111 1111 1111".to_vec(),
                    ..Default::default()
                },
            ))
            .await
            .expect("Encrypt");
    }
    kms.clone()
        .disable_key(d.client.signed(
            "DisableKey",
            v1::DisableKeyRequest {
                key_id: ids[1].clone(),
            },
        ))
        .await
        .expect("DisableKey");
    kms.clone()
        .schedule_key_deletion(d.client.signed(
            "ScheduleKeyDeletion",
            v1::ScheduleKeyDeletionRequest {
                key_id: ids[2].clone(),
                pending_window_in_days: Some(7),
            },
        ))
        .await
        .expect("ScheduleKeyDeletion");
}

/// The browser's python (`tests/python/browser-setup.sh` makes it), or a failure naming the
/// setup step.
fn browser_python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser-venv/bin/python");
    let usable = python.exists()
        && std::process::Command::new(&python)
            .args(["-c", "import selenium"])
            .status()
            .is_ok_and(|s| s.success())
        && std::path::Path::new("/usr/bin/chromedriver").exists();
    assert!(
        usable,
        "Selenium or chromedriver is not installed: run tests/python/browser-setup.sh (make test runs it)"
    );
    python
}

/// The console in headless Chromium: sign in, create a key, schedule its deletion behind the
/// typed confirmation and cancel it, edit its policy with an error shown (nothing saved),
/// read the audit chart, the identities and the simulator; no CSP violation. Screenshots of
/// the main pages go to target/console-screenshots (docs/console holds a set).
#[tokio::test(flavor = "multi_thread")]
async fn a_browser_signs_in_manages_a_key_and_reads_the_audit_chart() {
    let python = browser_python();
    let d = console_daemon().await;
    d.create_user("operator", Some(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#)).await;
    d.create_login_profile("operator", PASSWORD).await;
    other_keys(&d).await;
    let console = d.console_addr().expect("console");
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    let _ = std::fs::create_dir_all(&shots);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/console_browser.py");
    let mut command = std::process::Command::new(python);
    command
        .arg(script)
        .env("CONSOLE_URL", format!("http://{console}/"))
        .env("CONSOLE_ACCOUNT", &d.account_id)
        .env("CONSOLE_USER", "operator")
        .env("CONSOLE_PASSWORD", PASSWORD)
        .env("SCREENSHOTS", &shots);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && stdout.contains("done"),
        "the browser run failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // What the browser did, seen from the daemon: the key it made was scheduled for deletion
    // and cancelled (so it is Disabled), and no policy was saved.
    let key_id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("key "))
        .expect("the script names its key")
        .trim()
        .to_owned();
    let key = d
        .client
        .kms()
        .describe_key(d.client.signed(
            "DescribeKey",
            v1::DescribeKeyRequest {
                key_id: key_id.clone(),
            },
        ))
        .await
        .expect("the browser's key")
        .into_inner()
        .key_metadata
        .unwrap();
    assert_eq!(key.key_state, v1::KeyState::Disabled as i32);
    let log = d.audit_records();
    let by_console = |operation: &str, code: &str| {
        log.iter().any(|r| {
            r["door"] == "console"
                && r["operation"] == operation
                && r["outcome"]["code"] == code
                && r["principal"]
                    .as_str()
                    .is_some_and(|p| p.ends_with(":user/operator"))
        })
    };
    for operation in [
        "kms:CreateKey",
        "kms:ScheduleKeyDeletion",
        "kms:CancelKeyDeletion",
        "iam:ListUsers",
        "iam:SimulatePrincipalPolicy",
        "audit:TailAuditLog",
    ] {
        assert!(
            by_console(operation, "Ok"),
            "no console record of {operation}"
        );
    }
    assert!(
        by_console("kms:PutKeyPolicy", "InvalidArgument"),
        "the refused policy's call is recorded"
    );
    assert!(
        !by_console("kms:PutKeyPolicy", "Ok"),
        "a bad policy was saved"
    );
}
