//! Passwords (issue 20): login profiles under the account's password policy, and sign-in
//! (unsigned: the password is the credential) for a one-hour session with the user's
//! permissions, MFA when the user has a device, failures throttled and audited.

mod common;

use common::{Backend, TestDaemon, assert_refused};
use keyhaven::client::Client;
use keyhaven::proto::v1;
use serde_json::Value;
use tonic::Code;

const STRONG: &str = "Correct-horse-7-battery";
const ALICE_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["kms:Encrypt","iam:ListUsers"],"Resource":"*"}]}"#;

async fn sign_in(
    d: &TestDaemon,
    account: &str,
    user: &str,
    password: &str,
    mfa_code: &str,
    new_password: &str,
) -> Result<v1::SignInResponse, tonic::Status> {
    Ok(d.client
        .iam()
        .sign_in(tonic::Request::new(v1::SignInRequest {
            account_id: account.into(),
            user_name: user.into(),
            password: password.into(),
            mfa_code: mfa_code.into(),
            new_password: new_password.into(),
        }))
        .await?
        .into_inner())
}

async fn session(d: &TestDaemon, answer: v1::SignInResponse) -> Client {
    d.session_client(answer.credentials.expect("credentials"))
        .await
}

async fn create_profile(
    d: &TestDaemon,
    user: &str,
    password: &str,
    reset: bool,
) -> Result<(), tonic::Status> {
    d.client
        .iam()
        .create_login_profile(d.client.signed_iam(
            "CreateLoginProfile",
            v1::CreateLoginProfileRequest {
                user_name: user.into(),
                password: password.into(),
                password_reset_required: reset,
            },
        ))
        .await
        .map(|_| ())
}

async fn set_policy(d: &TestDaemon, policy: v1::PasswordPolicy) {
    d.client
        .iam()
        .update_account_password_policy(d.client.signed_iam("UpdateAccountPasswordPolicy", policy))
        .await
        .expect("UpdateAccountPasswordPolicy");
}

async fn encrypt(client: &Client, key: &str) -> Result<(), tonic::Status> {
    client
        .kms()
        .encrypt(client.signed(
            "Encrypt",
            v1::EncryptRequest {
                key_id: key.into(),
                plaintext: b"x".to_vec(),
                ..Default::default()
            },
        ))
        .await
        .map(|_| ())
}

async fn list_users(client: &Client) -> Result<(), tonic::Status> {
    client
        .iam()
        .list_users(client.signed_iam("ListUsers", v1::ListUsersRequest::default()))
        .await
        .map(|_| ())
}

fn audit_lines(d: &TestDaemon) -> Vec<Value> {
    std::fs::read_to_string(&d.config.audit_log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn a_user_signs_in_with_a_password_and_acts_with_its_own_permissions() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let key = d.create_key("signed in").await;
    d.create_user("alice", Some(ALICE_POLICY)).await;
    d.create_user("bob", None).await;
    create_profile(&d, "alice", STRONG, false).await.unwrap();
    let answer = sign_in(&d, &d.account_id, "alice", STRONG, "", "")
        .await
        .expect("sign-in");
    assert_eq!(
        answer.user_arn,
        format!("arn:keyhaven:iam::{}:user/alice", d.account_id)
    );
    let expires = answer.credentials.as_ref().unwrap().expiration;
    assert!((expires - d.now() - 3_600).abs() <= 5, "a one-hour session");
    let alice = session(&d, answer).await;
    encrypt(&alice, &key.key_id)
        .await
        .expect("alice's permission");
    assert_refused(
        alice
            .kms()
            .disable_key(alice.signed(
                "DisableKey",
                v1::DisableKeyRequest {
                    key_id: key.key_id.clone(),
                },
            ))
            .await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    // A sign-in's session calls IAM as the user's policies allow (the console's session,
    // as in AWS), unlike a GetSessionToken session made without MFA.
    list_users(&alice)
        .await
        .expect("a sign-in's session lists users, as alice's policy allows");

    // Wrong password, a user without one, an unknown user or account: one answer.
    for (account, user, password) in [
        (d.account_id.as_str(), "alice", "Wrong-password-1"),
        (d.account_id.as_str(), "bob", STRONG),
        (d.account_id.as_str(), "nobody", STRONG),
        ("999999999999", "alice", STRONG),
    ] {
        assert_refused(
            sign_in(&d, account, user, password, "", "").await,
            Code::Unauthenticated,
            "SignInFailedException",
        );
    }
    let records = audit_lines(&d);
    let signed_in = records.iter().any(|r| {
        r["operation"] == "signin:SignIn"
            && r["outcome"]["code"] == "Ok"
            && r["principal"] == format!("arn:keyhaven:iam::{}:user/alice", d.account_id).as_str()
    });
    assert!(signed_in, "the sign-in's record names alice");
    let failed = records
        .iter()
        .filter(|r| r["operation"] == "signin:SignIn" && r["outcome"]["code"] == "Unauthenticated")
        .count();
    assert_eq!(failed, 4, "every failed sign-in is audited");
    let log = std::fs::read_to_string(&d.config.audit_log).unwrap();
    assert!(!log.contains(STRONG), "no password in the audit log");
}

#[tokio::test]
async fn failed_sign_ins_are_throttled_per_user_and_source() {
    let d = TestDaemon::start(Backend::Sealed).await;
    d.create_user("carol", None).await;
    create_profile(&d, "carol", STRONG, false).await.unwrap();
    for _ in 0..5 {
        assert_refused(
            sign_in(&d, &d.account_id, "carol", "Not-her-password-9", "", "").await,
            Code::Unauthenticated,
            "SignInFailedException",
        );
    }
    // Past the failures allowed: refused without the password being checked.
    assert_refused(
        sign_in(&d, &d.account_id, "carol", STRONG, "", "").await,
        Code::ResourceExhausted,
        "ThrottlingException",
    );
    d.clock.advance(301);
    sign_in(&d, &d.account_id, "carol", STRONG, "", "")
        .await
        .expect("the window has passed");
}

#[tokio::test]
async fn the_password_policy_is_kept_in_every_rule() {
    let d = TestDaemon::start(Backend::Sealed).await;
    d.create_user("dave", None).await;
    set_policy(
        &d,
        v1::PasswordPolicy {
            minimum_password_length: 12,
            require_symbols: true,
            require_numbers: true,
            require_uppercase_characters: true,
            require_lowercase_characters: true,
            allow_users_to_change_password: true,
            max_password_age: 30,
            password_reuse_prevention: 2,
            hard_expiry: false,
        },
    )
    .await;
    let get = || async {
        d.client
            .iam()
            .get_login_profile(d.client.signed_iam(
                "GetLoginProfile",
                v1::GetLoginProfileRequest {
                    user_name: "dave".into(),
                },
            ))
            .await
    };
    for weak in [
        "Sh0rt-pw",
        "no-uppercase-77",
        "NO-LOWERCASE-77",
        "No-Numbers-Here",
        "NoSymbols1234",
    ] {
        let refused = create_profile(&d, "dave", weak, false).await;
        assert_refused(
            refused,
            Code::InvalidArgument,
            "PasswordPolicyViolationException",
        );
    }
    assert_refused(get().await, Code::NotFound, "NoSuchEntityException");
    create_profile(&d, "dave", STRONG, false).await.unwrap();
    // The same password again: reuse prevention.
    let update = |password: &str| {
        let request = v1::UpdateLoginProfileRequest {
            user_name: "dave".into(),
            password: Some(password.into()),
            password_reset_required: None,
        };
        let client = d.client.clone();
        async move {
            client
                .iam()
                .update_login_profile(client.signed_iam("UpdateLoginProfile", request))
                .await
                .map(|_| ())
        }
    };
    assert_refused(
        update(STRONG).await,
        Code::InvalidArgument,
        "PasswordPolicyViolationException",
    );
    sign_in(&d, &d.account_id, "dave", STRONG, "", "")
        .await
        .expect("unchanged");

    // Expired after 30 days: the sign-in must set a new password, which the policy checks.
    d.clock.advance(31 * 86_400);
    assert_refused(
        sign_in(&d, &d.account_id, "dave", STRONG, "", "").await,
        Code::FailedPrecondition,
        "PasswordResetRequiredException",
    );
    assert_refused(
        sign_in(&d, &d.account_id, "dave", STRONG, "", "weak").await,
        Code::InvalidArgument,
        "PasswordPolicyViolationException",
    );
    let renewed = "Another-strong-8-password";
    sign_in(&d, &d.account_id, "dave", STRONG, "", renewed)
        .await
        .expect("signed in with a new password");
    sign_in(&d, &d.account_id, "dave", renewed, "", "")
        .await
        .expect("the new one works");
    assert_refused(
        sign_in(&d, &d.account_id, "dave", STRONG, "", "").await,
        Code::Unauthenticated,
        "SignInFailedException",
    );

    // Hard expiry: only an administrator resets an expired password.
    set_policy(
        &d,
        v1::PasswordPolicy {
            minimum_password_length: 12,
            max_password_age: 30,
            hard_expiry: true,
            allow_users_to_change_password: true,
            ..Default::default()
        },
    )
    .await;
    d.clock.advance(31 * 86_400);
    assert_refused(
        sign_in(
            &d,
            &d.account_id,
            "dave",
            renewed,
            "",
            "Yet-another-strong-9",
        )
        .await,
        Code::FailedPrecondition,
        "PasswordResetRequiredException",
    );
    update("Reset-by-the-admin-1")
        .await
        .expect("an administrator's reset");
    sign_in(&d, &d.account_id, "dave", "Reset-by-the-admin-1", "", "")
        .await
        .expect("signed in after the reset");
}

#[tokio::test]
async fn mfa_users_sign_in_with_a_code_and_users_change_their_own_password() {
    let d = TestDaemon::start(Backend::Sealed).await;
    d.create_user("erin", Some(ALICE_POLICY)).await;
    create_profile(&d, "erin", STRONG, true).await.unwrap();
    // Reset required from the start: the first sign-in sets the password.
    assert_refused(
        sign_in(&d, &d.account_id, "erin", STRONG, "", "").await,
        Code::FailedPrecondition,
        "PasswordResetRequiredException",
    );
    let own = "Erins-own-password-42";
    sign_in(&d, &d.account_id, "erin", STRONG, "", own)
        .await
        .expect("first sign-in");

    let (serial, seed) = d.give_mfa_device("erin", "erin-phone").await;
    assert_refused(
        sign_in(&d, &d.account_id, "erin", own, "", "").await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    d.clock.advance(30);
    let code = keyhaven::auth::totp::code(&seed, d.now() / 30);
    let with_mfa = session(
        &d,
        sign_in(&d, &d.account_id, "erin", own, &code, "")
            .await
            .expect("sign-in with the code"),
    )
    .await;
    // A session made with MFA calls IAM as the user may.
    list_users(&with_mfa).await.expect("ListUsers with MFA");

    // Erin changes her own password; the old one is needed, the new one checked.
    let change = |old: &str, new: &str| {
        let request = v1::ChangePasswordRequest {
            old_password: old.into(),
            new_password: new.into(),
        };
        let client = with_mfa.clone();
        async move {
            client
                .iam()
                .change_password(client.signed_iam("ChangePassword", request))
                .await
                .map(|_| ())
        }
    };
    assert_refused(
        change("not-it", "Whatever-strong-1").await,
        Code::Unauthenticated,
        "SignInFailedException",
    );
    assert_refused(
        change(own, "weak").await,
        Code::InvalidArgument,
        "PasswordPolicyViolationException",
    );
    change(own, "Erins-next-password-43")
        .await
        .expect("changed");
    d.clock.advance(30);
    let code = keyhaven::auth::totp::code(&seed, d.now() / 30);
    assert_refused(
        sign_in(&d, &d.account_id, "erin", own, &code, "").await,
        Code::Unauthenticated,
        "SignInFailedException",
    );
    sign_in(
        &d,
        &d.account_id,
        "erin",
        "Erins-next-password-43",
        &code,
        "",
    )
    .await
    .expect("the new password");

    // Deleting the user deletes its password: a namesake made later has none.
    d.client
        .iam()
        .deactivate_mfa_device(d.client.signed_iam(
            "DeactivateMFADevice",
            v1::DeactivateMfaDeviceRequest {
                user_name: "erin".into(),
                serial_number: serial.clone(),
            },
        ))
        .await
        .unwrap();
    d.client
        .iam()
        .delete_user(d.client.signed_iam(
            "DeleteUser",
            v1::DeleteUserRequest {
                user_name: "erin".into(),
            },
        ))
        .await
        .expect("DeleteUser");
    d.create_user("erin", None).await;
    assert_refused(
        sign_in(&d, &d.account_id, "erin", "Erins-next-password-43", "", "").await,
        Code::Unauthenticated,
        "SignInFailedException",
    );
}

/// The AWS door: IAM's password calls with boto3 (see `aws_passwords.py`).
#[tokio::test(flavor = "multi_thread")]
async fn boto3_manages_passwords_over_the_query_protocol() {
    let d = TestDaemon::start_with(Backend::Sealed, |config| {
        config.set_aws_listen("127.0.0.1:0").expect("aws_listen");
    })
    .await;
    d.create_user("frank", None).await;
    let aws = d.aws_addr().expect("the AWS door listens");
    let env = [
        ("AWS_ENDPOINT_URL", format!("http://{aws}")),
        ("AWS_ACCESS_KEY_ID", d.credentials.access_key_id.clone()),
        (
            "AWS_SECRET_ACCESS_KEY",
            d.credentials.secret_access_key.expose().clone(),
        ),
        ("AWS_REGION", d.config.region.clone()),
        ("AWS_DEFAULT_REGION", d.config.region.clone()),
        ("USER_NAME", "frank".to_string()),
    ];
    common::run_aws_script(
        "aws_passwords.py",
        env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        "passwords complete",
    )
    .await;
}

/// A stolen password alone changes nothing for a user with an MFA device (not even an
/// expired one); a Deny keeps a user from changing its own password whatever the account's
/// policy allows; and failed sign-ins count against their source's rate limit for failed
/// authentication, past which the daemon refuses before checking anything.
#[tokio::test]
async fn mfa_comes_before_any_change_and_failures_count_against_their_source() {
    let d = TestDaemon::start_with(Backend::Sealed, |config| {
        config.unauthenticated_rate_per_second = 1;
        config.unauthenticated_burst = 4;
    })
    .await;
    let deny_change = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:ListUsers","Resource":"*"},{"Effect":"Deny","Action":"iam:ChangePassword","Resource":"*"}]}"#;
    d.create_user("gina", Some(deny_change)).await;
    create_profile(&d, "gina", STRONG, true).await.unwrap();
    let (_, seed) = d.give_mfa_device("gina", "gina-phone").await;
    // The password is right and must be reset, but without the code nothing is set.
    assert_refused(
        sign_in(&d, &d.account_id, "gina", STRONG, "", "Attackers-choice-99").await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    d.clock.advance(30);
    let code = keyhaven::auth::totp::code(&seed, d.now() / 30);
    assert_refused(
        sign_in(&d, &d.account_id, "gina", "Attackers-choice-99", &code, "").await,
        Code::Unauthenticated,
        "SignInFailedException",
    );
    let gina = session(
        &d,
        sign_in(
            &d,
            &d.account_id,
            "gina",
            STRONG,
            &code,
            "Ginas-own-pass-77",
        )
        .await
        .expect("her own sign-in sets her password"),
    )
    .await;
    // Her Deny holds although the account lets users change their passwords.
    assert_refused(
        gina.iam()
            .change_password(gina.signed_iam(
                "ChangePassword",
                v1::ChangePasswordRequest {
                    old_password: "Ginas-own-pass-77".into(),
                    new_password: "Ginas-next-pass-78".into(),
                },
            ))
            .await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );

    // Failed sign-ins from one source: past the daemon's burst, refused before any check.
    d.create_user("hank", None).await;
    create_profile(&d, "hank", STRONG, false).await.unwrap();
    let mut throttled = false;
    let mut failed = 0;
    for _ in 0..8 {
        match sign_in(&d, &d.account_id, "hank", "Wrong-password-1", "", "").await {
            Err(status)
                if keyhaven::api::reason_of(&status).as_deref() == Some("ThrottlingException") =>
            {
                throttled = true;
                break;
            }
            Err(status) => {
                assert_eq!(
                    keyhaven::api::reason_of(&status).as_deref(),
                    Some("SignInFailedException"),
                    "{status:?}"
                );
                failed += 1;
            }
            Ok(_) => panic!("a wrong password signed in"),
        }
    }
    assert!(throttled, "the source's failures are rate limited");
    // Before the per-user limit (5): the daemon's per-source limit for failed
    // authentication (a burst of 4, which gina's refusals began to use) refused it.
    assert!(failed < 5, "{failed} failures before the throttle");
}

/// Bad input to the password calls: the exact refusal, and nothing changed.
#[tokio::test]
async fn bad_password_calls_are_refused_and_change_nothing() {
    let d = TestDaemon::start(Backend::Sealed).await;
    let get_policy = || async {
        d.client
            .iam()
            .get_account_password_policy(d.client.signed_iam(
                "GetAccountPasswordPolicy",
                v1::GetAccountPasswordPolicyRequest {},
            ))
            .await
    };
    for bad in [
        v1::PasswordPolicy {
            minimum_password_length: 5,
            ..Default::default()
        },
        v1::PasswordPolicy {
            max_password_age: 1096,
            ..Default::default()
        },
        v1::PasswordPolicy {
            password_reuse_prevention: 25,
            ..Default::default()
        },
    ] {
        let refused = d
            .client
            .iam()
            .update_account_password_policy(d.client.signed_iam("UpdateAccountPasswordPolicy", bad))
            .await;
        assert_refused(refused, Code::InvalidArgument, "ValidationException");
    }
    assert_refused(get_policy().await, Code::NotFound, "NoSuchEntityException");
    assert_refused(
        create_profile(&d, "nobody", STRONG, false).await,
        Code::NotFound,
        "NoSuchEntityException",
    );
    d.create_user("ivy", None).await;
    create_profile(&d, "ivy", STRONG, false).await.unwrap();
    assert_refused(
        create_profile(&d, "ivy", "Another-strong-pass-2", false).await,
        Code::AlreadyExists,
        "EntityAlreadyExistsException",
    );
    // The first password stands.
    sign_in(&d, &d.account_id, "ivy", STRONG, "", "")
        .await
        .expect("unchanged");
    let delete = || async {
        d.client
            .iam()
            .delete_login_profile(d.client.signed_iam(
                "DeleteLoginProfile",
                v1::DeleteLoginProfileRequest {
                    user_name: "ivy".into(),
                },
            ))
            .await
    };
    delete().await.expect("deleted");
    assert_refused(delete().await, Code::NotFound, "NoSuchEntityException");
    // The root has no password to change.
    assert_refused(
        d.client
            .iam()
            .change_password(d.client.signed_iam(
                "ChangePassword",
                v1::ChangePasswordRequest {
                    old_password: STRONG.into(),
                    new_password: "Another-strong-pass-2".into(),
                },
            ))
            .await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
}
