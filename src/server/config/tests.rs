use super::*;

#[test]
fn the_reference_config_loads_and_means_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("keyhaven.example.toml");
    let file = ConfigFile::load(&path).unwrap();
    let config = DaemonConfig::from_file(&file, None).unwrap();
    let defaults = DaemonConfig::new(config.data_dir.clone());
    assert_eq!(config.listen, defaults.listen);
    assert_eq!(config.keystore, defaults.keystore);
    assert_eq!(config.partition, defaults.partition);
    assert_eq!(config.region, defaults.region);
    assert_eq!(config.key_quota, defaults.key_quota);
    assert_eq!(config.alias_quota, defaults.alias_quota);
    assert_eq!(config.grants_per_key, defaults.grants_per_key);
    assert_eq!(config.grant_bytes, defaults.grant_bytes);
    assert_eq!(
        config.on_demand_rotation_quota,
        defaults.on_demand_rotation_quota
    );
    assert_eq!(config.iam_quotas, defaults.iam_quotas);
    for quota in [
        "alias_quota",
        "on_demand_rotation_quota",
        "user_quota",
        "group_quota",
        "role_quota",
        "role_session_quota",
    ] {
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .any(|l| l.starts_with(&format!("{quota} = "))),
            "{quota} is missing from the reference config"
        );
    }
    assert_eq!(config.rotation_period_days, defaults.rotation_period_days);
    assert_eq!(config.scheduler_interval, defaults.scheduler_interval);
    assert_eq!(config.pkcs11_call_timeout, defaults.pkcs11_call_timeout);
    assert_eq!(file.pkcs11_call_timeout_ms, Some(10_000));
    assert_eq!(config.data_dir, PathBuf::from("/var/lib/keyhaven"));
    assert_eq!(config.insecure_no_tls, defaults.insecure_no_tls);
    assert_eq!(config.audit_max_bytes, defaults.audit_max_bytes);
    assert_eq!(config.audit_log, defaults.audit_log);
    assert_eq!(config.audit_max_files, defaults.audit_max_files);
    assert_eq!(file.audit_max_files, Some(100));
    assert_eq!(config.audit_max_age_days, defaults.audit_max_age_days);
    assert_eq!(config.audit_min_free_bytes, defaults.audit_min_free_bytes);
    assert_eq!(file.audit_min_free_bytes, Some(268_435_456));
    assert_eq!(
        config.unauthenticated_rate_per_second,
        defaults.unauthenticated_rate_per_second
    );
    assert_eq!(config.unauthenticated_burst, defaults.unauthenticated_burst);
    assert_eq!(
        (
            file.unauthenticated_rate_per_second,
            file.unauthenticated_burst
        ),
        (Some(20), Some(40))
    );
    assert_eq!(
        config.audit_settings(),
        crate::audit::AuditSettings::default()
    );
    assert_eq!(config.metrics_listen, None);
    assert_eq!(config.aws_listen, None);
    assert_eq!(config.tls, None);
    // The commented [tls] section is valid once uncommented.
    let text = std::fs::read_to_string(&path).unwrap();
    let section = text.split("# [tls]").nth(1).unwrap();
    let tls: String = std::iter::once("[tls]")
        .chain(
            section
                .lines()
                .skip(1)
                .take_while(|l| l.starts_with("# ") && !l.starts_with("# #"))
                .map(|l| &l[2..]),
        )
        .collect::<Vec<_>>()
        .join("\n");
    let file = ConfigFile::parse(&tls).unwrap();
    assert_eq!(
        file.tls.map(|t| t.client_ca),
        Some(Some(PathBuf::from("/etc/keyhaven/clients-ca.pem")))
    );
}

/// A build without the `etcd` feature (the default, which needs no protoc) refuses an
/// etcd store at start, from the config file or `init`'s flags, saying how to get one.
#[cfg(not(feature = "etcd"))]
#[test]
fn without_the_etcd_feature_an_etcd_store_is_refused_saying_how_to_build_one() {
    let text = "store = \"etcd\"\netcd_endpoints = [\"http://127.0.0.1:2379\"]";
    let file = ConfigFile::parse(text).unwrap();
    let error = DaemonConfig::from_file(&file, Some("/tmp/x".into()))
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "this keyhaven was built without etcd support; build with --features etcd"
    );
    let choice = StoreChoice {
        store: Some("etcd".into()),
        etcd_endpoints: Some(vec!["http://127.0.0.1:2379".into()]),
        ..StoreChoice::default()
    };
    assert_eq!(choice.settings().unwrap_err().to_string(), error);
    // The rest is checked as ever: sled by default, unknown stores and stray etcd_* refused.
    let file = ConfigFile::parse("").unwrap();
    let config = DaemonConfig::from_file(&file, Some("/tmp/x".into())).unwrap();
    assert!(matches!(config.store, StoreSettings::Sled));
    for (text, expected) in [
        (
            "store = \"redis\"",
            "store 'redis' is not known: use \"sled\" or \"etcd\"",
        ),
        (
            "etcd_endpoints = [\"http://127.0.0.1:2379\"]",
            "etcd_* settings are given but store is \"sled\": set store = \"etcd\"",
        ),
    ] {
        let file = ConfigFile::parse(text).unwrap();
        let error = DaemonConfig::from_file(&file, Some("/tmp/x".into()))
            .unwrap_err()
            .to_string();
        assert_eq!(error, expected, "{text}");
    }
}

#[cfg(feature = "etcd")]
#[test]
fn the_reference_store_is_sled_and_its_etcd_lines_parse_once_uncommented() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("keyhaven.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let file = ConfigFile::parse(&text).unwrap();
    assert_eq!(file.store.as_deref(), Some("sled"));
    let config = DaemonConfig::from_file(&file, None).unwrap();
    assert!(matches!(config.store, StoreSettings::Sled));
    let password = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(password.path(), "etcd secret\nignored\n").unwrap();
    let uncommented: String = std::iter::once("store = \"etcd\"".to_owned())
        .chain(text.lines().filter(|l| l.starts_with("# etcd_")).map(|l| {
            l[2..].replace(
                "/run/secrets/keyhaven-etcd-password",
                &password.path().display().to_string(),
            )
        }))
        .collect::<Vec<_>>()
        .join("\n");
    let file = ConfigFile::parse(&uncommented).unwrap();
    let config = DaemonConfig::from_file(&file, Some("/tmp/x".into())).unwrap();
    let StoreSettings::Etcd(etcd) = config.store else {
        panic!("store = \"etcd\" gives etcd settings");
    };
    assert_eq!(etcd.endpoints.len(), 3);
    assert_eq!(etcd.prefix, "keyhaven/");
    assert_eq!(
        etcd.tls,
        Some(EtcdTls {
            ca_file: "/etc/keyhaven/etcd-ca.pem".into(),
            identity: Some((
                "/etc/keyhaven/etcd-client.pem".into(),
                "/etc/keyhaven/etcd-client.key".into()
            )),
        })
    );
    let (user, secret) = etcd.user.unwrap();
    assert_eq!(
        (user.as_str(), secret.expose().as_str()),
        ("keyhaven", "etcd secret")
    );
    // The password never shows in the settings' Debug.
    let file = ConfigFile::parse(&uncommented).unwrap();
    let shown = format!(
        "{:?}",
        DaemonConfig::from_file(&file, Some("/tmp/x".into())).unwrap()
    );
    assert!(!shown.contains("etcd secret"), "{shown}");
}

#[cfg(feature = "etcd")]
#[test]
fn bad_store_configs_say_exactly_what_is_wrong() {
    let cases = [
        (
            "store = \"redis\"",
            "store 'redis' is not known: use \"sled\" or \"etcd\"",
        ),
        (
            "store = \"etcd\"",
            "store = \"etcd\" needs etcd_endpoints (one or more http://HOST:PORT)",
        ),
        (
            "store = \"etcd\"\netcd_endpoints = []",
            "store = \"etcd\" needs etcd_endpoints (one or more http://HOST:PORT)",
        ),
        (
            "etcd_endpoints = [\"http://127.0.0.1:2379\"]",
            "etcd_* settings are given but store is \"sled\": set store = \"etcd\"",
        ),
        (
            "store = \"etcd\"\netcd_endpoints = [\"127.0.0.1:2379\"]",
            "etcd_endpoints: '127.0.0.1:2379' is not http://HOST:PORT",
        ),
        (
            "store = \"etcd\"\netcd_endpoints = [\"https://etcd:2379\"]",
            "etcd_endpoints: 'https://etcd:2379' is https:// but no etcd_ca_file is given",
        ),
        (
            "store = \"etcd\"\netcd_endpoints = [\"http://etcd:2379\"]\netcd_ca_file = \"/ca.pem\"",
            "etcd_endpoints: 'http://etcd:2379' is not https://HOST:PORT",
        ),
        (
            "store = \"etcd\"\netcd_endpoints = [\"https://etcd:2379\"]\netcd_ca_file = \"/ca.pem\"\netcd_cert_file = \"/c.pem\"",
            "give both etcd_cert_file and etcd_key_file, or neither",
        ),
        (
            "store = \"etcd\"\netcd_endpoints = [\"http://etcd:2379\"]\netcd_cert_file = \"/c.pem\"\netcd_key_file = \"/c.key\"",
            "etcd_cert_file needs etcd_ca_file (TLS to etcd, https:// endpoints)",
        ),
        (
            "store = \"etcd\"\netcd_endpoints = [\"http://etcd:2379\"]\netcd_prefix = \"keyhaven\"",
            "etcd_prefix 'keyhaven' must be a name ending with '/'",
        ),
        (
            "store = \"etcd\"\netcd_endpoints = [\"http://etcd:2379\"]\netcd_prefix = \"/\"",
            "etcd_prefix '/' must be a name ending with '/'",
        ),
        (
            "store = \"etcd\"\netcd_endpoints = [\"http://etcd:2379\"]\netcd_user = \"k\"",
            "give both etcd_user and etcd_password_file, or neither",
        ),
        (
            "store = \"etcd\"\netcd_endpoints = [\"http://etcd:2379\"]\netcd_user = \"k\"\netcd_password_file = \"/nonexistent/keyhaven-etcd\"",
            "cannot read etcd_password_file /nonexistent/keyhaven-etcd: No such file or directory (os error 2)",
        ),
    ];
    for (text, expected) in cases {
        let file = ConfigFile::parse(text).unwrap();
        let error = DaemonConfig::from_file(&file, Some("/tmp/x".into()))
            .unwrap_err()
            .to_string();
        assert_eq!(error, expected, "{text}");
    }
}

#[test]
fn the_reference_pkcs11_section_parses_once_uncommented() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("keyhaven.example.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let section = text.split("# [pkcs11.hsm]").nth(1).unwrap();
    let uncommented: String = std::iter::once("[pkcs11.hsm]")
        .chain(
            section
                .lines()
                .filter(|l| l.starts_with("# ") && !l.starts_with("# #"))
                .map(|l| &l[2..]),
        )
        .collect::<Vec<_>>()
        .join("\n");
    let file = ConfigFile::parse(&uncommented).unwrap();
    let hsm = &file.pkcs11["hsm"];
    assert_eq!(hsm.module, PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"));
    assert_eq!(hsm.token_label.as_deref(), Some("keyhaven"));
    assert_eq!(
        hsm.pin_file.as_deref(),
        Some(Path::new("/run/secrets/keyhaven-pkcs11-pin"))
    );
    assert_eq!(hsm.max_idle_sessions, Some(16));
}

#[test]
fn init_parameters_reach_the_keystore_settings() {
    let file = ConfigFile::parse(
        "[pkcs11.nss]\nmodule = \"/usr/lib/x86_64-linux-gnu/libsoftokn3.so\"\n\
         token_label = \"keyhaven-nss\"\npin = \"1\"\n\
         init_parameters = \"configdir='sql:/var/lib/nss' dbTokenDescription='keyhaven-nss'\"",
    )
    .unwrap();
    let settings = file.pkcs11["nss"].settings("nss").unwrap();
    assert_eq!(
        settings.init_parameters.as_deref(),
        Some("configdir='sql:/var/lib/nss' dbTokenDescription='keyhaven-nss'")
    );
    let file =
        ConfigFile::parse("[pkcs11.hsm]\nmodule = \"/x.so\"\ntoken_label = \"t\"\npin = \"1\"")
            .unwrap();
    assert_eq!(
        file.pkcs11["hsm"].settings("hsm").unwrap().init_parameters,
        None
    );
}

#[test]
fn bad_configs_say_what_is_wrong() {
    let cases = [
        (
            "listen = \"localhost\"",
            "listen address 'localhost' is not HOST:PORT",
        ),
        ("partition = \"a b\"", "partition 'a b' must be letters"),
        ("region = \"\"", "region '' must be letters"),
        ("key_quota = 0", "key_quota must be at least 1"),
        ("cipher_cache = 0", "cipher_cache must be at least 1"),
        ("key_cache = 0", "key_cache must be at least 1"),
        (
            "store_check = \"lazy\"",
            "store_check must be \"at-start\" or \"beside-serving\", not \"lazy\"",
        ),
        ("audit_max_files = 0", "audit_max_files must be at least 1"),
        (
            "audit_max_age_days = 0",
            "audit_max_age_days must be at least 1",
        ),
        (
            "unauthenticated_burst = 0",
            "unauthenticated_rate_per_second and unauthenticated_burst must be at least 1",
        ),
        (
            "unauthenticated_rate_per_second = 0",
            "unauthenticated_rate_per_second and unauthenticated_burst must be at least 1",
        ),
        ("alias_quota = 0", "alias_quota must be at least 1"),
        ("grants_per_key = 0", "grants_per_key must be at least 1"),
        ("grant_bytes = 0", "grant_bytes must be at least 1"),
        (
            "on_demand_rotation_quota = 0",
            "on_demand_rotation_quota must be at least 1",
        ),
        ("user_quota = 0", "user_quota must be at least 1"),
        ("group_quota = 0", "group_quota must be at least 1"),
        ("role_quota = 0", "role_quota must be at least 1"),
        (
            "role_session_quota = 0",
            "role_session_quota must be at least 1",
        ),
        (
            "rotation_period_days = 30",
            "rotation_period_days must be between 90 and 2560; got 30",
        ),
        (
            "scheduler_interval_seconds = 0",
            "scheduler_interval_seconds must be at least 1",
        ),
        (
            "keystore = \"pkcs11\"",
            "keystore 'pkcs11' is not configured; configured: sealed",
        ),
        (
            "[pkcs11.hsm]\nmodule = \"/x.so\"\npin = \"1\"",
            "[pkcs11.hsm]: give exactly one of token_label and token_serial",
        ),
        (
            "[pkcs11.hsm]\nmodule = \"/x.so\"\ntoken_label = \"t\"\npin = \"1\"\npin_file = \"/p\"",
            "[pkcs11.hsm]: give pin or pin_file, not both",
        ),
        (
            "[pkcs11.hsm]\nmodule = \"/x.so\"\ntoken_label = \"t\"\npin_env = \"KEYHAVEN_TEST_UNSET_PIN\"",
            "[pkcs11.hsm]: no PIN: set pin_file, or the environment variable KEYHAVEN_TEST_UNSET_PIN",
        ),
        (
            "[pkcs11.\"a b\"]\nmodule = \"/x.so\"\ntoken_label = \"t\"\npin = \"1\"",
            "[pkcs11.a b]: the name must be letters",
        ),
        (
            "[pkcs11.hsm]\nmodule = \"/x.so\"\ntoken_label = \"t\"\npin = \"1\"\nmax_idle_sessions = 0",
            "[pkcs11.hsm]: max_idle_sessions must be at least 1",
        ),
        (
            "[pkcs11.hsm]\nmodule = \"/x.so\"\ntoken_label = \"t\"\nslot = 0",
            "unknown field `slot`",
        ),
        (
            "listen = \"0.0.0.0:7878\"",
            "refusing to listen on 0.0.0.0:7878 without TLS",
        ),
        ("[tls]\ncert = \"/c.pem\"", "missing field `key`"),
    ];
    for (text, expected) in cases {
        let error = match ConfigFile::parse(text) {
            Ok(file) => DaemonConfig::from_file(&file, Some("/tmp/x".into()))
                .unwrap_err()
                .to_string(),
            Err(error) => error,
        };
        assert!(error.contains(expected), "{text}: {error}");
    }
    let unknown = ConfigFile::parse("lisen = \"127.0.0.1:1\"").unwrap_err();
    assert!(unknown.contains("unknown field `lisen`"), "{unknown}");
    let wrong_type = ConfigFile::parse("key_quota = \"many\"").unwrap_err();
    assert!(wrong_type.contains("key_quota"), "{wrong_type}");
    let no_dir = DaemonConfig::from_file(&ConfigFile::default(), None).unwrap_err();
    assert!(no_dir.to_string().contains("no data directory"), "{no_dir}");
}

#[test]
fn the_aws_door_off_loopback_needs_tls_or_an_explicit_waiver() {
    let load = |text: &str| {
        DaemonConfig::from_file(&ConfigFile::parse(text).unwrap(), Some("/d".into()))
            .and_then(|mut c| c.validate().map(|()| c))
    };
    let refused = load("aws_listen = \"0.0.0.0:4566\"\n").unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("refusing to serve the AWS API on 0.0.0.0:4566 without TLS"),
        "{refused}"
    );
    let tls = "aws_listen = \"0.0.0.0:4566\"\n[tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n";
    assert!(load(tls).is_ok());
    let waived = load("aws_listen = \"0.0.0.0:4566\"\ninsecure_no_tls = true\n").unwrap();
    assert_eq!(waived.aws_listen, Some("0.0.0.0:4566".parse().unwrap()));
    assert!(load("aws_listen = \"127.0.0.1:0\"\n").is_ok());
    let bad = load("aws_listen = \"localhost\"\n").unwrap_err();
    assert!(
        bad.to_string().contains("AWS listen address 'localhost'"),
        "{bad}"
    );
}

#[test]
fn the_console_off_loopback_needs_tls_or_an_explicit_waiver() {
    let load = |text: &str| {
        DaemonConfig::from_file(&ConfigFile::parse(text).unwrap(), Some("/d".into()))
            .and_then(|mut c| c.validate().map(|()| c))
    };
    let refused = load("console_listen = \"0.0.0.0:8080\"\n").unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("refusing to serve the console on 0.0.0.0:8080 without TLS"),
        "{refused}"
    );
    let tls = "console_listen = \"0.0.0.0:8080\"\n[tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n";
    assert!(load(tls).is_ok());
    let waived = load("console_listen = \"0.0.0.0:8080\"\ninsecure_no_tls = true\n").unwrap();
    assert_eq!(waived.console_listen, Some("0.0.0.0:8080".parse().unwrap()));
    assert_eq!(
        load("console_listen = \"127.0.0.1:0\"\n")
            .unwrap()
            .console_listen,
        Some("127.0.0.1:0".parse().unwrap())
    );
    let bad = load("console_listen = \"localhost\"\n").unwrap_err();
    assert!(
        bad.to_string()
            .contains("console listen address 'localhost'"),
        "{bad}"
    );
}

#[test]
fn network_listeners_need_tls_or_an_explicit_waiver() {
    let tls = "listen = \"0.0.0.0:7878\"\n[tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n";
    let config =
        DaemonConfig::from_file(&ConfigFile::parse(tls).unwrap(), Some("/d".into())).unwrap();
    assert_eq!(
        config.tls.as_ref().map(|t| t.cert.clone()),
        Some(PathBuf::from("/c.pem"))
    );
    let waived = "listen = \"0.0.0.0:7878\"\ninsecure_no_tls = true\n";
    assert!(
        DaemonConfig::from_file(&ConfigFile::parse(waived).unwrap(), Some("/d".into())).is_ok()
    );
    let loopback = "listen = \"[::1]:7878\"\n";
    assert!(
        DaemonConfig::from_file(&ConfigFile::parse(loopback).unwrap(), Some("/d".into())).is_ok()
    );
}

#[test]
fn pkcs11_sections_become_keystores_and_the_pin_stays_secret() {
    let text = "keystore = \"pkcs11\"\n[pkcs11.hsm]\nmodule = \"/usr/lib/x.so\"\ntoken_serial = \"abc\"\npin = \"pin-canary-1234\"\n";
    let file = ConfigFile::parse(text).unwrap();
    assert!(!format!("{file:?}").contains("pin-canary"), "{file:?}");
    let config = DaemonConfig::from_file(&file, Some("/tmp/x".into())).unwrap();
    assert_eq!(config.keystore, "pkcs11:hsm");
    assert_eq!(config.keystore_names(), vec!["sealed", "pkcs11:hsm"]);
    let hsm = &config.pkcs11[0];
    assert_eq!(hsm.token, TokenSelector::Serial("abc".into()));
    assert_eq!(hsm.pin.expose(), "pin-canary-1234");
    assert!(!format!("{config:?}").contains("pin-canary"), "{config:?}");
}
