//! Who a certificate calls as: a user under her policies, a role's session named after the
//! certificate; what is refused (unbound, orphaned, ambiguous, expired), and a signed call over
//! a certificate connection.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_certificate_calls_as_its_user_under_her_policies_and_is_audited() {
    let pki = Pki::new();
    let d = start(&pki).await;
    let arn = alice_arn(&d);
    let signed_alice = d.create_user("alice", Some(&alice_policy(&arn))).await;
    let key = d.create_key("certificate door").await.key_id;
    bind(&d.client, v1::EntityType::User, "alice", uri(APP_URI))
        .await
        .unwrap();
    let alice = connect_as(&d, &pki, &pki.client("app", Some(APP_URI))).await;

    assert_eq!(unsigned_whoami(&alice).await.unwrap(), arn);
    let blob = unsigned_encrypt(&alice, &key).await.unwrap();
    let decrypted = alice
        .kms()
        .decrypt(Request::new(v1::DecryptRequest {
            ciphertext_blob: blob.clone(),
            encryption_context: common::pairs(&[("purpose", "cert-test")]),
            key_id: String::new(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&decrypted.plaintext[..], b"certificate door");
    // What her policies do not allow is refused exactly as her signed calls are.
    let data_key = v1::GenerateDataKeyRequest {
        key_id: key.clone(),
        key_spec: "AES_256".into(),
        ..Default::default()
    };
    let by_certificate = alice
        .kms()
        .generate_data_key(Request::new(data_key.clone()))
        .await;
    let by_signature = signed_alice
        .kms()
        .generate_data_key(signed_alice.signed("GenerateDataKey", data_key))
        .await;
    assert_refused(
        by_signature,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    let by_certificate = by_certificate.unwrap_err();
    assert_eq!(by_certificate.code(), Code::PermissionDenied);
    assert_eq!(
        keyhaven::api::reason_of(&by_certificate).as_deref(),
        Some("AccessDeniedException")
    );
    assert!(
        by_certificate.message().contains(&arn),
        "{by_certificate:?}"
    );
    let describe = v1::DescribeKeyRequest {
        key_id: key.clone(),
    };
    let by_certificate = alice
        .kms()
        .describe_key(Request::new(describe.clone()))
        .await
        .unwrap_err();
    let by_signature = signed_alice
        .kms()
        .describe_key(signed_alice.signed("DescribeKey", describe))
        .await
        .unwrap_err();
    assert_eq!(by_certificate.code(), by_signature.code());
    assert_eq!(by_certificate.message(), by_signature.message());

    // The audit log names the door, the certificate and the principal, and no access key.
    let log = records(&d.config.audit_log);
    let encrypt = log
        .iter()
        .find(|r| r.operation == "kms:Encrypt" && r.principal.as_deref() == Some(arn.as_str()))
        .expect("the certificate call's record");
    assert_eq!(encrypt.door.as_deref(), Some("certificate"));
    assert_eq!(
        encrypt.certificate.as_deref(),
        Some(&*format!("uri:{APP_URI}"))
    );
    assert_eq!(encrypt.access_key_id, None);
    assert_eq!(encrypt.keys.len(), 1);
    assert_eq!(encrypt.outcome.as_ref().unwrap().code, "Ok");
    let refused = log
        .iter()
        .find(|r| r.operation == "kms:GenerateDataKey" && r.door.as_deref() == Some("certificate"))
        .expect("the refused certificate call's record");
    assert_eq!(
        refused.outcome.as_ref().unwrap().reason.as_deref(),
        Some("AccessDeniedException")
    );
    // Signed calls' records name the gRPC door and an access key.
    let signed = log
        .iter()
        .find(|r| r.operation == "kms:GenerateDataKey" && r.door.as_deref() == Some("grpc"))
        .expect("the signed call's record");
    assert!(signed.access_key_id.is_some());
    assert_eq!(signed.certificate, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_certificate_acts_as_a_session_named_after_the_certificate() {
    let pki = Pki::new();
    let d = start(&pki).await;
    let trust = format!(
        r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{}"}},"Action":"sts:AssumeRole"}}]}}"#,
        d.account_id
    );
    d.client
        .iam()
        .create_role(d.client.signed_iam(
            "CreateRole",
            v1::CreateRoleRequest {
                role_name: "app".into(),
                assume_role_policy_document: trust,
            },
        ))
        .await
        .unwrap();
    let role_arn = format!("arn:keyhaven:iam::{}:role/app", d.account_id);
    // The role's policy names the role, as `aws:PrincipalArn` does for its sessions.
    let policy = format!(
        r#"{{"Statement":[{{"Effect":"Allow","Action":"kms:Encrypt","Resource":"*",
            "Condition":{{"StringEquals":{{"aws:PrincipalArn":"{role_arn}"}}}}}}]}}"#
    );
    d.client
        .iam()
        .put_entity_policy(d.client.signed_iam(
            "PutEntityPolicy",
            v1::PutEntityPolicyRequest {
                entity_type: v1::EntityType::Role as i32,
                entity_name: "app".into(),
                policy_name: "encrypt".into(),
                policy_document: policy,
            },
        ))
        .await
        .unwrap();
    let key = d.create_key("role door").await.key_id;
    bind(&d.client, v1::EntityType::Role, "app", uri(APP_URI))
        .await
        .unwrap();
    let app = connect_as(&d, &pki, &pki.client("app", Some(APP_URI))).await;
    assert_eq!(
        unsigned_whoami(&app).await.unwrap(),
        format!(
            "arn:keyhaven:sts::{}:assumed-role/app/spiffe---example.org-ns-prod-app",
            d.account_id
        )
    );
    unsigned_encrypt(&app, &key).await.unwrap();
    assert_refused(
        app.kms()
            .describe_key(Request::new(v1::DescribeKeyRequest { key_id: key }))
            .await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    // Deleting the role removes its bindings: a role made again under the name is not bound.
    d.client
        .iam()
        .delete_role(d.client.signed_iam(
            "DeleteRole",
            v1::DeleteRoleRequest {
                role_name: "app".into(),
            },
        ))
        .await
        .unwrap();
    assert_refused(
        unsigned_whoami(&app).await,
        Code::Unauthenticated,
        "UnrecognizedClientException",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbound_unbound_and_orphaned_certificates_are_refused_and_change_nothing() {
    let pki = Pki::new();
    let d = start(&pki).await;
    d.create_user("alice", Some(&alice_policy(&alice_arn(&d))))
        .await;
    let key = d.create_key("refusals").await.key_id;
    let certificate = pki.client("billing", None);
    let billing = connect_as(&d, &pki, &certificate).await;
    let keys_before = key_count(&d).await;

    // Bound to nothing: refused as an unknown access key is, for reads and changes alike.
    assert_refused(
        unsigned_encrypt(&billing, &key).await,
        Code::Unauthenticated,
        "UnrecognizedClientException",
    );
    assert_refused(
        billing
            .kms()
            .create_key(Request::new(v1::CreateKeyRequest::default()))
            .await,
        Code::Unauthenticated,
        "UnrecognizedClientException",
    );
    assert_eq!(key_count(&d).await, keys_before, "nothing was created");
    let refusal = records(&d.config.audit_log)
        .into_iter()
        .find(|r| r.phase == Phase::Unauthenticated)
        .expect("the first refusal's record (later ones of the source are summarised)");
    assert_eq!(refusal.operation, "kms:Encrypt");
    assert_eq!(refusal.door.as_deref(), Some("certificate"));
    assert_eq!(refusal.certificate.as_deref(), Some("subject:billing"));
    assert_eq!(refusal.principal, None);

    // Bound: accepted. Unbound: refused again, on the same connection.
    bind(&d.client, v1::EntityType::User, "alice", subject("billing"))
        .await
        .unwrap();
    unsigned_encrypt(&billing, &key).await.unwrap();
    unbind(&d.client, v1::EntityType::User, "alice", subject("billing"))
        .await
        .unwrap();
    assert_refused(
        unsigned_encrypt(&billing, &key).await,
        Code::Unauthenticated,
        "UnrecognizedClientException",
    );
    assert!(
        list(&d.client, v1::EntityType::User, "alice")
            .await
            .unwrap()
            .is_empty()
    );

    // Bound, then the user deleted and made again: the new alice is not bound.
    bind(&d.client, v1::EntityType::User, "alice", subject("billing"))
        .await
        .unwrap();
    d.client
        .iam()
        .delete_user(d.client.signed_iam(
            "DeleteUser",
            v1::DeleteUserRequest {
                user_name: "alice".into(),
            },
        ))
        .await
        .unwrap();
    d.create_user("alice", Some(&alice_policy(&alice_arn(&d))))
        .await;
    assert_refused(
        unsigned_encrypt(&billing, &key).await,
        Code::Unauthenticated,
        "UnrecognizedClientException",
    );
    assert!(
        list(&d.client, v1::EntityType::User, "alice")
            .await
            .unwrap()
            .is_empty()
    );

    // A call with neither a signature nor a bound certificate on a connection of the
    // operator's (unbound) certificate: refused the same way.
    assert_refused(
        d.client
            .kms()
            .encrypt(Request::new(encrypt_request(&key, b"x")))
            .await,
        Code::Unauthenticated,
        "UnrecognizedClientException",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_whose_names_are_bound_to_two_principals_is_refused() {
    let pki = Pki::new();
    let d = start(&pki).await;
    d.create_user("alice", Some(&alice_policy(&alice_arn(&d))))
        .await;
    d.create_user("bob", None).await;
    let key = d.create_key("ambiguous").await.key_id;
    bind(&d.client, v1::EntityType::User, "alice", uri(APP_URI))
        .await
        .unwrap();
    let both = connect_as(&d, &pki, &pki.client("shared-name", Some(APP_URI))).await;
    unsigned_encrypt(&both, &key).await.unwrap();
    // Its common name bound to Bob too: which one the CA meant cannot be known.
    bind(
        &d.client,
        v1::EntityType::User,
        "bob",
        subject("shared-name"),
    )
    .await
    .unwrap();
    assert_refused(
        unsigned_encrypt(&both, &key).await,
        Code::Unauthenticated,
        "UnrecognizedClientException",
    );
    // Both names bound to Alice: hers.
    unbind(
        &d.client,
        v1::EntityType::User,
        "bob",
        subject("shared-name"),
    )
    .await
    .unwrap();
    bind(
        &d.client,
        v1::EntityType::User,
        "alice",
        subject("shared-name"),
    )
    .await
    .unwrap();
    assert!(
        unsigned_whoami(&both)
            .await
            .unwrap()
            .ends_with(":user/alice")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_certificates_are_refused() {
    let pki = Pki::new();
    let mut d = start(&pki).await;
    d.create_user("alice", Some(&alice_policy(&alice_arn(&d))))
        .await;
    let key = d.create_key("expiry").await.key_id;
    bind(&d.client, v1::EntityType::User, "alice", subject("old"))
        .await
        .unwrap();
    bind(&d.client, v1::EntityType::User, "alice", subject("short"))
        .await
        .unwrap();

    // Expired by every clock: rustls refuses the handshake (it checks validity against the
    // system clock), so the connection or its first call fails, and never as alice.
    let expired = pki.client_valid(
        "old",
        None,
        rcgen::date_time_ymd(2020, 1, 1),
        rcgen::date_time_ymd(2021, 1, 1),
    );
    match Client::connect_with_tls(
        &d.endpoint(),
        d.credentials.clone(),
        &pki.client_tls(&expired),
    )
    .await
    {
        Err(_) => {}
        // TLS 1.3: the client learns of the refusal when its first call finds the connection
        // closed.
        Ok(client) => {
            let refused = unsigned_encrypt(&client, &key).await.unwrap_err();
            // A transport failure (closed, cancelled, broken pipe), never an answer.
            assert!(
                matches!(
                    refused.code(),
                    Code::Unavailable | Code::Cancelled | Code::Unknown
                ),
                "{refused:?}"
            );
            assert_eq!(keyhaven::api::reason_of(&refused), None, "{refused:?}");
        }
    }

    // Valid by the system's clock but expired by the daemon's: refused by the daemon.
    let now = time::OffsetDateTime::now_utc();
    let short = pki.client_valid(
        "short",
        None,
        now - time::Duration::days(1),
        now + time::Duration::days(1),
    );
    let client = connect_as(&d, &pki, &short).await;
    unsigned_encrypt(&client, &key).await.unwrap();
    d.clock.advance(2 * common::DAY);
    assert_refused(
        unsigned_encrypt(&client, &key).await,
        Code::Unauthenticated,
        "UnrecognizedClientException",
    );
    // And after a restart (on a new port, so a new connection).
    d.restart().await;
    let client = connect_as(&d, &pki, &short).await;
    assert_refused(
        unsigned_encrypt(&client, &key).await,
        Code::Unauthenticated,
        "UnrecognizedClientException",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_call_over_a_certificate_connection_is_judged_by_its_signature() {
    let pki = Pki::new();
    let d = start(&pki).await;
    let key = d.create_key("signature wins").await.key_id;
    d.create_user("alice", Some(&alice_policy(&alice_arn(&d))))
        .await;
    d.create_user("bob", None).await;
    let bob_key = d
        .client
        .iam()
        .create_access_key(d.client.signed_iam(
            "CreateAccessKey",
            v1::CreateAccessKeyRequest {
                user_name: "bob".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let bob = ClientCredentials {
        access_key_id: bob_key.access_key.unwrap().access_key_id,
        secret_access_key: SecretString::new(bob_key.secret_access_key),
        session_token: None,
        region: d.config.region.clone(),
    };
    bind(&d.client, v1::EntityType::User, "alice", uri(APP_URI))
        .await
        .unwrap();
    // Alice's certificate, Bob's signature: Bob, who may do nothing.
    let alice_certificate = pki.client("app", Some(APP_URI));
    let as_bob = Client::connect_with_tls(&d.endpoint(), bob, &pki.client_tls(&alice_certificate))
        .await
        .unwrap()
        .with_clock(std::sync::Arc::new(d.clock.clone()));
    let whoami = as_bob
        .iam()
        .get_caller_identity(
            as_bob.signed_iam("GetCallerIdentity", v1::GetCallerIdentityRequest {}),
        )
        .await
        .unwrap()
        .into_inner()
        .arn;
    assert!(whoami.ends_with(":user/bob"), "{whoami}");
    assert_refused(
        as_bob
            .kms()
            .encrypt(as_bob.signed("Encrypt", encrypt_request(&key, b"x")))
            .await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    // A bad signature is refused as one, not passed on to the certificate.
    let mut forged = as_bob.signed("Encrypt", encrypt_request(&key, b"x"));
    let authorization = forged
        .metadata()
        .get("authorization")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let tampered = format!("{}0", &authorization[..authorization.len() - 1]);
    let tampered = if tampered == authorization {
        format!("{}1", &authorization[..authorization.len() - 1])
    } else {
        tampered
    };
    forged
        .metadata_mut()
        .insert("authorization", tampered.parse().unwrap());
    assert_refused(
        as_bob.kms().encrypt(forged).await,
        Code::Unauthenticated,
        "InvalidSignatureException",
    );
}
