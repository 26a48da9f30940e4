//! Binding certificates to principals: authorised, validated, bounded, audited and durable;
//! through the CLI too.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_are_authorised_validated_bounded_audited_and_durable() {
    let pki = Pki::new();
    let mut d = start(&pki).await;
    d.create_user("alice", None).await;
    let mallory = d
        .create_user(
            "mallory",
            Some(r#"{"Statement":[{"Effect":"Allow","Action":"iam:ListCertificates","Resource":"*"}]}"#),
        )
        .await;

    // Authorised as iam:BindCertificate on the user's ARN: Mallory may not bind herself in.
    assert_refused(
        bind(&mallory, v1::EntityType::User, "alice", subject("mallory")).await,
        Code::PermissionDenied,
        "AccessDeniedException",
    );
    assert!(
        list(&mallory, v1::EntityType::User, "alice")
            .await
            .unwrap()
            .is_empty(),
        "nothing was bound"
    );

    let binding = bind(
        &d.client,
        v1::EntityType::User,
        "alice",
        subject("alice-laptop"),
    )
    .await
    .unwrap();
    assert_eq!(binding.entity_name, "alice");
    assert_eq!(binding.identity, Some(subject("alice-laptop")));
    // One identity names one principal.
    d.create_user("bob", None).await;
    assert_refused(
        bind(
            &d.client,
            v1::EntityType::User,
            "bob",
            subject("alice-laptop"),
        )
        .await,
        Code::AlreadyExists,
        "EntityAlreadyExistsException",
    );
    // Exactly one of subject and URI; URIs have a scheme; groups are not principals;
    // the user must exist.
    for (name, identity, code, reason) in [
        (
            "alice",
            v1::CertificateIdentity::default(),
            Code::InvalidArgument,
            "ValidationException",
        ),
        (
            "alice",
            v1::CertificateIdentity {
                subject: "a".into(),
                uri: "spiffe://x".into(),
            },
            Code::InvalidArgument,
            "ValidationException",
        ),
        (
            "alice",
            uri("not a uri"),
            Code::InvalidArgument,
            "ValidationException",
        ),
        (
            "nobody",
            subject("n"),
            Code::NotFound,
            "NoSuchEntityException",
        ),
    ] {
        assert_refused(
            bind(&d.client, v1::EntityType::User, name, identity).await,
            code,
            reason,
        );
    }
    d.client
        .iam()
        .create_group(d.client.signed_iam(
            "CreateGroup",
            v1::CreateGroupRequest {
                group_name: "devs".into(),
            },
        ))
        .await
        .unwrap();
    assert_refused(
        bind(&d.client, v1::EntityType::Group, "devs", subject("g")).await,
        Code::InvalidArgument,
        "ValidationException",
    );
    // At most ten per principal.
    for n in 1..10 {
        bind(
            &d.client,
            v1::EntityType::User,
            "alice",
            uri(&format!("spiffe://example.org/{n}")),
        )
        .await
        .unwrap();
    }
    assert_refused(
        bind(
            &d.client,
            v1::EntityType::User,
            "alice",
            uri("spiffe://example.org/10"),
        )
        .await,
        Code::ResourceExhausted,
        "LimitExceededException",
    );
    assert_eq!(
        list(&d.client, v1::EntityType::User, "alice")
            .await
            .unwrap()
            .len(),
        10
    );
    assert_refused(
        unbind(
            &d.client,
            v1::EntityType::User,
            "bob",
            subject("alice-laptop"),
        )
        .await,
        Code::NotFound,
        "NoSuchEntityException",
    );

    // Audited as the iam: actions they are.
    let log = records(&d.config.audit_log);
    for operation in ["iam:BindCertificate", "iam:ListCertificates"] {
        assert!(
            log.iter().any(|r| r.operation == operation),
            "{operation} not in the audit log"
        );
    }
    assert!(log.iter().any(|r| {
        r.operation == "iam:BindCertificate"
            && r.phase == Phase::Request
            && r.principal
                .as_deref()
                .is_some_and(|p| p.ends_with(":user/mallory"))
    }));

    // Durable across a restart, and usable after it.
    d.restart().await;
    assert_eq!(
        list(&d.client, v1::EntityType::User, "alice")
            .await
            .unwrap()
            .len(),
        10
    );
    let laptop = connect_as(&d, &pki, &pki.client("alice-laptop", None)).await;
    assert!(
        unsigned_whoami(&laptop)
            .await
            .unwrap()
            .ends_with(":user/alice")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_binds_lists_and_unbinds_certificates() {
    let pki = Pki::new();
    let d = start(&pki).await;
    let operator = pki.client("operator", None);
    std::fs::write(pki.path("operator.pem"), &operator.cert).unwrap();
    std::fs::write(pki.path("operator.key"), &operator.key).unwrap();
    let files = pki.files.path().to_path_buf();
    d.create_user("alice", Some(&alice_policy(&alice_arn(&d))))
        .await;
    let key = d.create_key("cli").await.key_id;
    let cli = |args: &[&str]| {
        let mut command = keyhaven(&d, &pki, &files);
        command.args(args);
        run(command)
    };

    let (ok, out, err) = cli(&["user", "bind-certificate", "alice", "--uri", APP_URI]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!("Bound user alice to certificate uri {APP_URI}")),
        "{out}"
    );
    let (ok, out, err) = cli(&[
        "user",
        "bind-certificate",
        "alice",
        "--subject",
        "alice-laptop",
    ]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = cli(&["--output", "json", "user", "list-certificates", "alice"]);
    assert!(ok, "{out}{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let bindings = listed["CertificateBindings"].as_array().unwrap();
    assert_eq!(bindings.len(), 2, "{out}");
    assert!(
        bindings
            .iter()
            .any(|b| b["Uri"] == APP_URI && b["UserName"] == "alice")
    );
    assert!(bindings.iter().any(|b| b["Subject"] == "alice-laptop"));
    // Both or neither of --subject and --uri: refused before any call.
    let (ok, _, err) = cli(&["user", "bind-certificate", "alice"]);
    assert!(!ok && err.contains("--subject"), "{err}");
    let (ok, _, err) = cli(&[
        "user",
        "bind-certificate",
        "alice",
        "--subject",
        "a",
        "--uri",
        "x:y",
    ]);
    assert!(!ok && err.contains("cannot be used with"), "{err}");

    let app = connect_as(&d, &pki, &pki.client("app", Some(APP_URI))).await;
    unsigned_encrypt(&app, &key).await.unwrap();
    let (ok, out, err) = cli(&["user", "unbind-certificate", "alice", "--uri", APP_URI]);
    assert!(ok, "{out}{err}");
    assert_refused(
        unsigned_encrypt(&app, &key).await,
        Code::Unauthenticated,
        "UnrecognizedClientException",
    );
    let (ok, out, _) = cli(&["user", "list-certificates", "alice"]);
    assert!(ok);
    assert_eq!(out.trim(), "subject alice-laptop");
    // Roles too.
    let trust = pki.path("trust.json");
    std::fs::write(
        &trust,
        format!(
            r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{}"}},"Action":"sts:AssumeRole"}}]}}"#,
            d.account_id
        ),
    )
    .unwrap();
    let (ok, out, err) = cli(&[
        "role",
        "create",
        "app",
        "--trust-policy-file",
        trust.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = cli(&["role", "bind-certificate", "app", "--uri", APP_URI]);
    assert!(ok, "{out}{err}");
    assert!(
        unsigned_whoami(&app)
            .await
            .unwrap()
            .contains(":assumed-role/app/")
    );
}
