//! `keyhaven init` and `keyhaven serve`.

use super::OutputFormat;
use crate::clock::{Clock, SystemClock};
use crate::seal::KdfParams;
use crate::server::{self, ConfigFile, Daemon, DaemonConfig, Initialised};
use clap::Args;
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML; see keyhaven.example.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address, IP:PORT (default 127.0.0.1:7878).
    #[arg(long)]
    listen: Option<String>,
    /// The data directory made by `keyhaven init`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Read the passphrase from this file's first line (else KEYHAVEN_PASSPHRASE, else a prompt).
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
    /// Keystore for new keys: `sealed`, `pkcs11` (the one PKCS#11 keystore) or `pkcs11:<name>`.
    #[arg(long)]
    keystore: Option<String>,
    /// When the store's records are checked: `at-start` (every record before serving) or
    /// `beside-serving` (against the tree kept at the last clean stop: each record as it is
    /// read, and every record by a pass while the daemon serves).
    #[arg(long)]
    store_check: Option<String>,
    /// A PKCS#11 module: configures the keystore `pkcs11:default` (PIN from KEYHAVEN_PKCS11_PIN
    /// or --pkcs11-pin-file).
    #[arg(long, env = "KEYHAVEN_PKCS11_MODULE")]
    pkcs11_module: Option<PathBuf>,
    /// The token's label (or give --pkcs11-token-serial).
    #[arg(long, env = "KEYHAVEN_PKCS11_TOKEN_LABEL")]
    pkcs11_token_label: Option<String>,
    #[arg(long, env = "KEYHAVEN_PKCS11_TOKEN_SERIAL")]
    pkcs11_token_serial: Option<String>,
    /// A file whose first line is the token's user PIN.
    #[arg(long)]
    pkcs11_pin_file: Option<PathBuf>,
    /// TLS: the server's PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS: the server's PEM private key.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: clients must present a certificate signed by this PEM CA.
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Allow plaintext gRPC on a non-loopback address.
    #[arg(long)]
    insecure_no_tls: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Serve the AWS KMS API (JSON 1.1, standard SigV4) for the AWS SDKs and CLI at
    /// http://ADDR.
    #[arg(long)]
    aws_listen: Option<String>,
    /// Serve the web console at http://ADDR (https with --tls-cert). On by default with
    /// --dev, on a free loopback port.
    #[arg(long)]
    console_listen: Option<String>,
    /// A throwaway daemon: fresh temporary data directory, generated passphrase; prints the
    /// endpoint and root credentials as `export` lines.
    #[arg(long, conflicts_with_all = ["data_dir", "passphrase_file"])]
    dev: bool,
}

fn init_logging(level: Option<&str>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = tracing_subscriber::registry()
        .with(server::log_filter(level))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colours for a terminal only: a log file gets plain text.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .try_init();
}

fn fail(message: impl std::fmt::Display) -> i32 {
    eprintln!("keyhaven: {message}");
    1
}

/// Before any secret is read: no core dumps of this process (a core would hold the master
/// key, secret access keys and plaintexts), and no debugger attached by another process of
/// the same user. A process that cannot do this does not go on.
fn harden_process() -> Result<(), String> {
    crate::secret::memory::disable_core_dumps()
        .map_err(|e| format!("cannot turn off core dumps: {e}"))
}

/// The settings the AWS SDKs and CLI read, for the same root credentials.
fn print_aws_environment(initialised: &Initialised, aws: SocketAddr, region: &str) {
    let credentials = &initialised.root.credentials;
    println!("# For the AWS SDKs and CLI (`aws kms create-key`, boto3.client(\"kms\")):");
    println!("export AWS_ENDPOINT_URL=http://{aws}");
    println!("export AWS_ACCESS_KEY_ID={}", credentials.access_key_id);
    println!(
        "export AWS_SECRET_ACCESS_KEY={}",
        credentials.secret_access_key.expose()
    );
    // AWS_REGION for most SDKs; boto3 and the AWS CLI read AWS_DEFAULT_REGION.
    println!("export AWS_REGION={region}");
    println!("export AWS_DEFAULT_REGION={region}");
}

/// The dev daemon's console: a user `admin` allowed everything, with a generated password,
/// made by ordinary calls signed with the root's key.
async fn print_console(
    initialised: &Initialised,
    endpoint: &str,
    console: SocketAddr,
    scheme: &str,
    region: &str,
) {
    use crate::client::{Client, ClientCredentials};
    use crate::proto::v1;
    const USER: &str = "admin";
    const POLICY: &str =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
    let password = crate::secret::SecretString::new(format!(
        "Kh-{}-7a",
        hex::encode(rand::random::<[u8; 10]>())
    ));
    let credentials = &initialised.root.credentials;
    let made = async {
        let client = Client::connect(
            endpoint,
            ClientCredentials::long_term(
                credentials.access_key_id.clone(),
                crate::secret::SecretString::new(credentials.secret_access_key.expose().clone()),
                region,
            ),
        )
        .await?;
        let iam = client.iam();
        let user_name = USER.to_owned();
        let failed = |e: tonic::Status| e.message().to_owned();
        iam.clone()
            .create_user(client.signed_iam(
                "CreateUser",
                v1::CreateUserRequest {
                    user_name: user_name.clone(),
                },
            ))
            .await
            .map_err(failed)?;
        iam.clone()
            .put_entity_policy(client.signed_iam(
                "PutEntityPolicy",
                v1::PutEntityPolicyRequest {
                    entity_type: v1::EntityType::User as i32,
                    entity_name: user_name.clone(),
                    policy_name: "AdministratorAccess".into(),
                    policy_document: POLICY.into(),
                },
            ))
            .await
            .map_err(failed)?;
        iam.clone()
            .create_login_profile(client.signed_iam(
                "CreateLoginProfile",
                v1::CreateLoginProfileRequest {
                    user_name,
                    password: password.expose().clone(),
                    password_reset_required: false,
                },
            ))
            .await
            .map_err(failed)?;
        Ok::<(), String>(())
    };
    println!("# The web console: {scheme}://{console}/");
    match made.await {
        Ok(()) => println!(
            "#   sign in with account {}, user {USER}, password {}",
            initialised.account_id,
            password.expose()
        ),
        Err(why) => println!("#   (no console user was made: {why})"),
    }
}

fn print_credentials(initialised: &Initialised) {
    let credentials = &initialised.root.credentials;
    println!(
        "export KEYHAVEN_ACCESS_KEY_ID={}",
        credentials.access_key_id
    );
    println!(
        "export KEYHAVEN_SECRET_ACCESS_KEY={}",
        credentials.secret_access_key.expose()
    );
}

/// Where `init` puts the metadata store (the config file's `store` and `etcd_*` settings).
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// `sled` (in the data directory; default) or `etcd` (built with `--features etcd`).
    #[arg(long)]
    store: Option<String>,
    /// etcd members, http://HOST:PORT, comma-separated.
    #[arg(long, value_delimiter = ',')]
    etcd_endpoints: Option<Vec<String>>,
    /// The etcd key prefix (default `keyhaven/`).
    #[arg(long)]
    etcd_prefix: Option<String>,
    /// etcd user, with --etcd-password-file.
    #[arg(long)]
    etcd_user: Option<String>,
    /// A file whose first line is the etcd user's password.
    #[arg(long)]
    etcd_password_file: Option<PathBuf>,
    /// TLS to etcd (https:// endpoints): the PEM CA the members' certificates chain to.
    #[arg(long)]
    etcd_ca_file: Option<PathBuf>,
    /// A PEM client certificate for etcd (with --etcd-key-file).
    #[arg(long)]
    etcd_cert_file: Option<PathBuf>,
    #[arg(long)]
    etcd_key_file: Option<PathBuf>,
}

impl StoreArgs {
    /// The store these flags name; without `--store`, `default` (`sled` for `init`).
    pub fn settings(self, default: &str) -> Result<server::StoreSettings, String> {
        server::StoreChoice {
            store: Some(self.store.unwrap_or_else(|| default.to_owned())),
            etcd_endpoints: self.etcd_endpoints,
            etcd_prefix: self.etcd_prefix,
            etcd_user: self.etcd_user,
            etcd_password_file: self.etcd_password_file,
            etcd_ca_file: self.etcd_ca_file,
            etcd_cert_file: self.etcd_cert_file,
            etcd_key_file: self.etcd_key_file,
        }
        .settings()
        .map_err(|e| e.to_string())
    }
}

pub fn init(
    data_dir: &Path,
    passphrase_file: Option<&Path>,
    partition: &str,
    store: StoreArgs,
    output: OutputFormat,
) -> i32 {
    if let Err(e) = harden_process() {
        return fail(e);
    }
    let store = match store.settings("sled") {
        Ok(store) => store,
        Err(e) => return fail(e),
    };
    let passphrase = match server::read_passphrase(passphrase_file, true) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let initialised = match server::init_with_store(
        data_dir,
        &store,
        &passphrase,
        KdfParams::default(),
        partition,
        &SystemClock,
    ) {
        Ok(i) => i,
        Err(e) => return fail(e),
    };
    let credentials = &initialised.root.credentials;
    if output == OutputFormat::Json {
        let value = json!({
            "AccountId": initialised.account_id,
            "Arn": initialised.root.principal_arn,
            "AccessKey": {
                "UserName": "root",
                "AccessKeyId": credentials.access_key_id,
                "Status": "Active",
                "SecretAccessKey": credentials.secret_access_key.expose(),
                "CreateDate": crate::clock::rfc3339(SystemClock.now()),
            },
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        println!(
            "# Initialised {} for account {}.",
            data_dir.display(),
            initialised.account_id
        );
        println!("# Root credentials, shown only now; keep the secret safe:");
        print_credentials(&initialised);
    }
    0
}

pub fn serve(args: ServeArgs) -> i32 {
    // First: the config file may hold a PKCS#11 PIN.
    if let Err(e) = harden_process() {
        return fail(e);
    }
    let file = match &args.config {
        Some(path) => match ConfigFile::load(path) {
            Ok(file) => file,
            Err(e) => return fail(e),
        },
        None => ConfigFile::default(),
    };
    init_logging(file.log_level.as_deref());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async move {
        match run(args, file).await {
            Ok(()) => 0,
            Err(message) => fail(message),
        }
    })
}

async fn run(args: ServeArgs, file: ConfigFile) -> Result<(), String> {
    // First: a SIGTERM from here on stops the daemon cleanly, even one sent while it starts.
    let mut signals = server::StopSignals::listen();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let dev_dir = if args.dev {
        Some(
            tempfile::Builder::new()
                .prefix("keyhaven-dev-")
                .tempdir()
                .map_err(|e| format!("cannot make a temporary directory: {e}"))?,
        )
    } else {
        None
    };
    let data_dir = dev_dir
        .as_ref()
        .map(|d| d.path().to_path_buf())
        .or(args.data_dir.clone());
    let mut config = DaemonConfig::from_file(&file, data_dir).map_err(|e| e.to_string())?;
    if let Some(listen) = &args.listen {
        config.set_listen(listen).map_err(|e| e.to_string())?;
    }
    if let Some(module) = &args.pkcs11_module {
        let section = crate::server::config::Pkcs11Section {
            module: module.clone(),
            token_label: args.pkcs11_token_label.clone(),
            token_serial: args.pkcs11_token_serial.clone(),
            pin: None,
            pin_file: args.pkcs11_pin_file.clone(),
            pin_env: None,
            max_idle_sessions: None,
            init_parameters: None,
        };
        let settings = section.settings("default").map_err(|e| e.to_string())?;
        config.add_pkcs11(settings).map_err(|e| e.to_string())?;
    }
    if let Some(keystore) = &args.keystore {
        config.keystore = keystore.clone();
    }
    if let Some(check) = &args.store_check {
        config.store_check = check.parse()?;
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(crate::server::config::TlsSettings {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.tls_client_ca.clone(),
        });
    }
    config.insecure_no_tls |= args.insecure_no_tls;
    if let Some(listen) = &args.metrics_listen {
        config
            .set_metrics_listen(listen)
            .map_err(|e| e.to_string())?;
    }
    if let Some(listen) = &args.aws_listen {
        config.set_aws_listen(listen).map_err(|e| e.to_string())?;
    } else if args.dev && config.aws_listen.is_none() {
        config.aws_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    if let Some(listen) = &args.console_listen {
        config
            .set_console_listen(listen)
            .map_err(|e| e.to_string())?;
    } else if args.dev && config.console_listen.is_none() {
        config.console_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    config.validate().map_err(|e| e.to_string())?;

    let (passphrase, initialised) = if dev_dir.is_some() {
        let passphrase = server::generate_passphrase();
        let initialised = server::init_with_store(
            &config.data_dir,
            &config.store,
            &passphrase,
            KdfParams::default(),
            &config.partition,
            clock.as_ref(),
        )
        .map_err(|e| e.to_string())?;
        (passphrase, Some(initialised))
    } else {
        let file_path = args
            .passphrase_file
            .as_ref()
            .or(file.passphrase_file.as_ref());
        (
            server::read_passphrase(file_path.map(PathBuf::as_path), false)?,
            None,
        )
    };
    // A signal while it starts ends the start (as a crash would: every batch is atomic).
    let daemon = tokio::select! {
        started = Daemon::start(config.clone(), passphrase, clock) => {
            started.map_err(|e| e.to_string())?
        }
        _ = signals.wait() => {
            return Err("stopped by a signal while starting: not served".into());
        }
    };
    let addr = daemon.local_addr();
    if let Some(initialised) = &initialised {
        println!(
            "# Keyhaven dev daemon: throwaway data in {} (removed on exit).",
            config.data_dir.display()
        );
        println!("# listening on {addr}");
        println!("# Paste these lines into another shell, then try `keyhaven key create`:");
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        println!("export KEYHAVEN_ENDPOINT={scheme}://{addr}");
        print_credentials(initialised);
        // Clients sign for `local` unless told otherwise: a dev daemon of another region says so.
        if config.region != server::DaemonConfig::new(PathBuf::new()).region {
            println!("export {}={}", crate::client::REGION_ENV, config.region);
        }
        if let Some(aws) = daemon.aws_addr() {
            print_aws_environment(initialised, aws, &config.region);
        }
        if let Some(console) = daemon.console_addr() {
            let endpoint = format!("{scheme}://{addr}");
            print_console(initialised, &endpoint, console, scheme, &config.region).await;
        }
    } else {
        println!("# listening on {addr}");
        if let Some(aws) = daemon.aws_addr() {
            println!("# AWS API on http://{aws}");
        }
    }
    if let (None, Some(console)) = (&initialised, daemon.console_addr()) {
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        println!("# console on {scheme}://{console}/");
    }
    if let Some(metrics) = daemon.metrics_addr() {
        println!("# metrics on http://{metrics}/metrics");
    }
    let result = daemon
        .run_until_signal(signals)
        .await
        .map_err(|e| e.to_string());
    drop(dev_dir);
    result
}
