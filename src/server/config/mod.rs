//! The daemon's configuration: a TOML file (see `keyhaven.example.toml`) overridden by flags.

use crate::iam::IamQuotas;
use crate::keystore::pkcs11::{PREFIX as PKCS11_PREFIX, Pkcs11Settings, TokenSelector};
use crate::secret::SecretString;
#[cfg(feature = "etcd")]
use crate::store::{DEFAULT_ETCD_PREFIX, EtcdSettings, EtcdTls};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
/// Where the PIN of a PKCS#11 keystore comes from when the config gives none.
pub const PKCS11_PIN_ENV: &str = "KEYHAVEN_PKCS11_PIN";
const DEFAULT_IDLE_SESSIONS: usize = 16;
/// How long a call to a PKCS#11 keystore may take before it answers `UNAVAILABLE`.
pub const DEFAULT_PKCS11_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The configuration file, as written. Every field is optional; unknown fields are refused.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub passphrase_file: Option<PathBuf>,
    pub keystore: Option<String>,
    pub partition: Option<String>,
    pub region: Option<String>,
    pub key_quota: Option<usize>,
    /// Most unwrapped ciphers the sealed keystore keeps in memory.
    pub cipher_cache: Option<usize>,
    /// Most key entries the key service keeps in memory.
    pub key_cache: Option<usize>,
    /// When the store's records are checked: `at-start` or `beside-serving`.
    pub store_check: Option<String>,
    /// Most aliases the account may hold.
    pub alias_quota: Option<usize>,
    /// Most grants one key may hold.
    pub grants_per_key: Option<usize>,
    /// Most bytes of grant records the account may hold in all.
    pub grant_bytes: Option<usize>,
    /// Most on-demand rotations of one key.
    pub on_demand_rotation_quota: Option<u32>,
    /// Most IAM users, groups and roles the account may hold.
    pub user_quota: Option<usize>,
    pub group_quota: Option<usize>,
    pub role_quota: Option<usize>,
    /// Most unexpired sessions (temporary credentials) one role may have.
    pub role_session_quota: Option<usize>,
    pub rotation_period_days: Option<u32>,
    pub scheduler_interval_seconds: Option<u64>,
    pub log_level: Option<String>,
    /// PKCS#11 keystores by name: `[pkcs11.hsm]` is the keystore `pkcs11:hsm`.
    #[serde(default)]
    pub pkcs11: BTreeMap<String, Pkcs11Section>,
    /// Longest wait for one call to a PKCS#11 keystore, retries included (milliseconds; 0:
    /// no limit).
    pub pkcs11_call_timeout_ms: Option<u64>,
    /// TLS on the gRPC listener.
    pub tls: Option<TlsSettings>,
    /// Allow a listener on a non-loopback address without TLS.
    pub insecure_no_tls: Option<bool>,
    /// The audit log (default `<data_dir>/audit/audit.log`).
    pub audit_log: Option<PathBuf>,
    /// Size at which the audit log is rotated (default 64 MiB).
    pub audit_max_bytes: Option<u64>,
    /// Rotated audit files kept; older ones are removed (default 100).
    pub audit_max_files: Option<usize>,
    /// Rotated audit files older than this are removed (default: kept by count only).
    pub audit_max_age_days: Option<u32>,
    /// Free space on the audit log's file system under which the daemon warns (default
    /// 256 MiB).
    pub audit_min_free_bytes: Option<u64>,
    /// Requests failing authentication allowed per second from one source (default 20).
    pub unauthenticated_rate_per_second: Option<u32>,
    /// Burst of requests failing authentication allowed from one source (default 40).
    pub unauthenticated_burst: Option<u32>,
    /// Prometheus metrics at http://<address>/metrics; none when absent.
    pub metrics_listen: Option<String>,
    /// The AWS door (KMS JSON 1.1 over HTTP/1.1, standard SigV4); none when absent.
    pub aws_listen: Option<String>,
    /// The web console (HTTP/1.1; HTTPS with `tls`'s certificate); none when absent.
    pub console_listen: Option<String>,
    /// A PEM CA certificate OpenID Connect issuers' keys are also fetched under (beside the
    /// system's CAs).
    pub oidc_ca_file: Option<PathBuf>,
    /// The names clients may address the daemon by (`name` or `name:port`); absent: any.
    pub accepted_hosts: Option<Vec<String>>,
    /// Where the metadata lives: `sled` (the data directory; default) or `etcd`.
    pub store: Option<String>,
    /// `http://host:port` of the etcd members (`store = "etcd"`).
    pub etcd_endpoints: Option<Vec<String>>,
    /// The etcd key prefix everything of this installation lives under (default `keyhaven/`).
    pub etcd_prefix: Option<String>,
    /// etcd user, when the cluster has authentication on (with `etcd_password_file`).
    pub etcd_user: Option<String>,
    /// A file whose first line is the etcd user's password.
    pub etcd_password_file: Option<PathBuf>,
    /// PEM CA the etcd members' certificates chain to (`https://` endpoints).
    pub etcd_ca_file: Option<PathBuf>,
    /// PEM client certificate and key for etcd members that ask for one.
    pub etcd_cert_file: Option<PathBuf>,
    pub etcd_key_file: Option<PathBuf>,
}

/// Where the metadata store lives.
#[derive(Debug, Clone, Default)]
pub enum StoreSettings {
    /// sled in `<data_dir>/store`.
    #[default]
    Sled,
    /// Under a prefix of an etcd cluster.
    #[cfg(feature = "etcd")]
    Etcd(EtcdSettings),
}

/// Why `store = "etcd"` is refused by a daemon built without the `etcd` feature.
#[cfg(not(feature = "etcd"))]
pub const NO_ETCD_SUPPORT: &str =
    "this keyhaven was built without etcd support; build with --features etcd";

/// The store settings as the config file or the command line give them.
#[derive(Debug, Default, Clone)]
pub struct StoreChoice {
    pub store: Option<String>,
    pub etcd_endpoints: Option<Vec<String>>,
    pub etcd_prefix: Option<String>,
    pub etcd_user: Option<String>,
    pub etcd_password_file: Option<PathBuf>,
    pub etcd_ca_file: Option<PathBuf>,
    pub etcd_cert_file: Option<PathBuf>,
    pub etcd_key_file: Option<PathBuf>,
}

impl StoreChoice {
    /// Checks the choice and reads the etcd password.
    pub fn settings(&self) -> Result<StoreSettings, ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        match self.store.as_deref().unwrap_or("sled") {
            "sled" => {
                if self.etcd_endpoints.is_some()
                    || self.etcd_prefix.is_some()
                    || self.etcd_user.is_some()
                    || self.etcd_password_file.is_some()
                    || self.etcd_ca_file.is_some()
                    || self.etcd_cert_file.is_some()
                    || self.etcd_key_file.is_some()
                {
                    return invalid(
                        "etcd_* settings are given but store is \"sled\": set store = \"etcd\""
                            .into(),
                    );
                }
                Ok(StoreSettings::Sled)
            }
            "etcd" => self.etcd_settings(),
            other => invalid(format!(
                "store '{other}' is not known: use \"sled\" or \"etcd\""
            )),
        }
    }

    /// The etcd settings, checked.
    #[cfg(feature = "etcd")]
    fn etcd_settings(&self) -> Result<StoreSettings, ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let endpoints = self.etcd_endpoints.clone().unwrap_or_default();
        if endpoints.is_empty() {
            return invalid(
                "store = \"etcd\" needs etcd_endpoints (one or more http://HOST:PORT)".into(),
            );
        }
        let scheme = if self.etcd_ca_file.is_some() {
            "https://"
        } else {
            "http://"
        };
        for endpoint in &endpoints {
            let valid = endpoint.strip_prefix(scheme).is_some_and(|rest| {
                !rest.is_empty() && !rest.contains(['/', '@', ' ']) && rest.contains(':')
            });
            if !valid && endpoint.starts_with("https://") {
                return invalid(format!(
                    "etcd_endpoints: '{endpoint}' is https:// but no etcd_ca_file is given"
                ));
            }
            if !valid {
                return invalid(format!(
                    "etcd_endpoints: '{endpoint}' is not {scheme}HOST:PORT"
                ));
            }
        }
        let identity = match (&self.etcd_cert_file, &self.etcd_key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            _ => {
                return invalid("give both etcd_cert_file and etcd_key_file, or neither".into());
            }
        };
        let tls = match (&self.etcd_ca_file, identity) {
            (Some(ca_file), identity) => Some(EtcdTls {
                ca_file: ca_file.clone(),
                identity,
            }),
            (None, Some(_)) => {
                return invalid(
                    "etcd_cert_file needs etcd_ca_file (TLS to etcd, https:// endpoints)".into(),
                );
            }
            (None, None) => None,
        };
        let prefix = self
            .etcd_prefix
            .clone()
            .unwrap_or_else(|| DEFAULT_ETCD_PREFIX.to_owned());
        if prefix.len() < 2 || !prefix.ends_with('/') {
            return invalid(format!(
                "etcd_prefix '{prefix}' must be a name ending with '/'"
            ));
        }
        let user = match (&self.etcd_user, &self.etcd_password_file) {
            (None, None) => None,
            (Some(user), Some(path)) => {
                let text = SecretString::new(std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::Invalid(format!(
                        "cannot read etcd_password_file {}: {e}",
                        path.display()
                    ))
                })?);
                let password = text.expose().lines().next().unwrap_or_default();
                Some((user.clone(), SecretString::new(password.to_owned())))
            }
            _ => {
                return invalid("give both etcd_user and etcd_password_file, or neither".into());
            }
        };
        Ok(StoreSettings::Etcd(EtcdSettings {
            endpoints,
            prefix,
            user,
            tls,
        }))
    }

    /// Refused: the etcd backend is not in this build (its build needs protoc).
    #[cfg(not(feature = "etcd"))]
    fn etcd_settings(&self) -> Result<StoreSettings, ConfigError> {
        Err(ConfigError::Invalid(NO_ETCD_SUPPORT.into()))
    }
}

/// TLS for the gRPC listener (rustls): the server's certificate chain and key, and optionally
/// the CA whose certificates clients must present (mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA certificate(s): when set, every client must present a certificate it signed.
    pub client_ca: Option<PathBuf>,
}

/// One PKCS#11 keystore in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Section {
    /// Path of the PKCS#11 module.
    pub module: PathBuf,
    /// The token's label; or give `token_serial`. Never a slot number: slots move.
    pub token_label: Option<String>,
    pub token_serial: Option<String>,
    /// The user PIN in the file itself (prefer `pin_file` or the environment).
    pub pin: Option<SecretString>,
    /// A file whose first line is the PIN.
    pub pin_file: Option<PathBuf>,
    /// The environment variable holding the PIN (default `KEYHAVEN_PKCS11_PIN`).
    pub pin_env: Option<String>,
    /// Sessions kept open for reuse (default 16).
    pub max_idle_sessions: Option<usize>,
    /// Passed to the module's `C_Initialize` (`pReserved`): NSS's softoken reads its
    /// database directory and token names from it. Most modules take none.
    pub init_parameters: Option<String>,
}

impl Pkcs11Section {
    /// Checks the section and reads its PIN.
    pub fn settings(&self, name: &str) -> Result<Pkcs11Settings, ConfigError> {
        let invalid = |m: String| ConfigError::Invalid(format!("[pkcs11.{name}]: {m}"));
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                "the name must be letters, digits, '-' and '_'".into(),
            ));
        }
        let token = match (&self.token_label, &self.token_serial) {
            (Some(label), None) => TokenSelector::Label(label.clone()),
            (None, Some(serial)) => TokenSelector::Serial(serial.clone()),
            _ => {
                return Err(invalid(
                    "give exactly one of token_label and token_serial".into(),
                ));
            }
        };
        let pin = match (&self.pin, &self.pin_file) {
            (Some(_), Some(_)) => return Err(invalid("give pin or pin_file, not both".into())),
            (Some(pin), None) => pin.clone(),
            (None, Some(path)) => {
                let text = SecretString::new(std::fs::read_to_string(path).map_err(|e| {
                    invalid(format!("cannot read pin_file {}: {e}", path.display()))
                })?);
                SecretString::new(text.expose().lines().next().unwrap_or_default().to_owned())
            }
            (None, None) => {
                let variable = self.pin_env.as_deref().unwrap_or(PKCS11_PIN_ENV);
                SecretString::new(std::env::var(variable).map_err(|_| {
                    invalid(format!(
                        "no PIN: set pin_file, or the environment variable {variable}"
                    ))
                })?)
            }
        };
        let max_idle_sessions = self.max_idle_sessions.unwrap_or(DEFAULT_IDLE_SESSIONS);
        if max_idle_sessions == 0 {
            return Err(invalid("max_idle_sessions must be at least 1".into()));
        }
        Ok(Pkcs11Settings {
            name: name.to_owned(),
            module: self.module.clone(),
            token,
            pin,
            max_idle_sessions,
            init_parameters: self.init_parameters.clone(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

/// Settings the daemon runs with, after defaults and checks.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub keystore: String,
    pub partition: String,
    pub region: String,
    pub key_quota: usize,
    /// Most unwrapped ciphers the sealed keystore keeps in memory (least recently used out).
    pub cipher_cache: usize,
    /// Most key entries the key service keeps in memory (least recently used out; the others
    /// are read from the store when asked for).
    pub key_cache: usize,
    /// When the records of a store on this machine are checked (see `StoreCheck`).
    pub store_check: crate::store::StoreCheck,
    pub alias_quota: usize,
    /// Most grants one key may hold (AWS KMS: 50,000).
    pub grants_per_key: usize,
    /// Most bytes of grant records in all (a bound AWS does not state; 256 MiB here).
    pub grant_bytes: usize,
    pub on_demand_rotation_quota: u32,
    /// Users, groups and roles the account may hold, and live sessions per role.
    pub iam_quotas: IamQuotas,
    pub rotation_period_days: u32,
    pub scheduler_interval: Duration,
    /// Encryptions per key version before it is rotated (2^32; lowered only in tests).
    pub nonce_limit: u64,
    pub nonce_reservation_block: u64,
    /// PKCS#11 keystores, besides the built-in sealed one.
    pub pkcs11: Vec<Pkcs11Settings>,
    /// Longest wait for one keystore call to a PKCS#11 token (its retries included); past it
    /// the call answers `UNAVAILABLE` while the device call finishes in the background; the
    /// connection at start-up gets the same bound. Zero: no limit (a hung device holds its
    /// callers, and the start, until it answers).
    pub pkcs11_call_timeout: Duration,
    pub tls: Option<TlsSettings>,
    pub insecure_no_tls: bool,
    pub audit_log: PathBuf,
    pub audit_max_bytes: u64,
    pub audit_max_files: usize,
    pub audit_max_age_days: Option<u32>,
    pub audit_min_free_bytes: u64,
    /// Per-source token bucket for requests that fail authentication: past it they answer
    /// `RESOURCE_EXHAUSTED` / `ThrottlingException`.
    pub unauthenticated_rate_per_second: u32,
    pub unauthenticated_burst: u32,
    pub metrics_listen: Option<SocketAddr>,
    /// Where the AWS door listens, if anywhere: HTTPS with `tls`'s certificate (and client
    /// CA), else plaintext HTTP, which off loopback needs `insecure_no_tls`.
    pub aws_listen: Option<SocketAddr>,
    /// Where the web console listens, if anywhere: as the AWS door, HTTPS with `tls`'s
    /// certificate, else plaintext HTTP, which off loopback needs `insecure_no_tls`.
    pub console_listen: Option<SocketAddr>,
    /// A PEM CA certificate OpenID Connect issuers' keys are also fetched under.
    pub oidc_ca_file: Option<PathBuf>,
    /// The `:authority` values requests may be addressed to (`name` on any port, or
    /// `name:port`); empty: any. Signatures cover the authority either way.
    pub accepted_hosts: Vec<String>,
    /// Where the metadata store lives (the seal and the audit log stay in `data_dir`).
    pub store: StoreSettings,
}

impl DaemonConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().unwrap_or_else(|_| unreachable!()),
            keystore: crate::keystore::SEALED.into(),
            partition: "keyhaven".into(),
            region: "local".into(),
            key_quota: 100_000,
            cipher_cache: crate::keystore::sealed::CIPHER_CACHE,
            key_cache: crate::keys::KEY_CACHE,
            store_check: crate::store::StoreCheck::default(),
            alias_quota: 50_000,
            grants_per_key: 50_000,
            grant_bytes: 256 << 20,
            on_demand_rotation_quota: 25,
            iam_quotas: IamQuotas::default(),
            rotation_period_days: 365,
            scheduler_interval: Duration::from_secs(60),
            nonce_limit: 1 << 32,
            nonce_reservation_block: 1 << 20,
            pkcs11: Vec::new(),
            pkcs11_call_timeout: DEFAULT_PKCS11_CALL_TIMEOUT,
            tls: None,
            insecure_no_tls: false,
            audit_log: data_dir.join("audit").join("audit.log"),
            audit_max_bytes: crate::audit::DEFAULT_MAX_BYTES,
            audit_max_files: crate::audit::retention::DEFAULT_MAX_FILES,
            audit_max_age_days: None,
            audit_min_free_bytes: crate::audit::retention::DEFAULT_MIN_FREE_BYTES,
            unauthenticated_rate_per_second: crate::auth::throttle::DEFAULT_RATE,
            unauthenticated_burst: crate::auth::throttle::DEFAULT_BURST,
            metrics_listen: None,
            aws_listen: None,
            console_listen: None,
            oidc_ca_file: None,
            accepted_hosts: Vec::new(),
            store: StoreSettings::Sled,
            data_dir,
        }
    }

    /// Adds a PKCS#11 keystore; its name must be new.
    pub fn add_pkcs11(&mut self, settings: Pkcs11Settings) -> Result<(), ConfigError> {
        if self.pkcs11.iter().any(|s| s.name == settings.name) {
            return Err(ConfigError::Invalid(format!(
                "PKCS#11 keystore '{}' is configured twice",
                settings.name
            )));
        }
        self.pkcs11.push(settings);
        Ok(())
    }

    /// The keystore names this configuration offers.
    pub fn keystore_names(&self) -> Vec<String> {
        std::iter::once(crate::keystore::SEALED.to_owned())
            .chain(
                self.pkcs11
                    .iter()
                    .map(|s| format!("{PKCS11_PREFIX}{}", s.name)),
            )
            .collect()
    }

    /// Applies a config file over the defaults (the data directory comes from `data_dir` if
    /// the file does not name one).
    pub fn from_file(file: &ConfigFile, data_dir: Option<PathBuf>) -> Result<Self, ConfigError> {
        let data_dir = data_dir.or_else(|| file.data_dir.clone()).ok_or_else(|| {
            ConfigError::Invalid(
                "no data directory: give --data-dir or data_dir in the config file".into(),
            )
        })?;
        let mut config = Self::new(data_dir);
        if let Some(listen) = &file.listen {
            config.set_listen(listen)?;
        }
        if let Some(keystore) = &file.keystore {
            config.keystore = keystore.clone();
        }
        if let Some(partition) = &file.partition {
            config.partition = partition.clone();
        }
        if let Some(region) = &file.region {
            config.region = region.clone();
        }
        if let Some(quota) = file.key_quota {
            config.key_quota = quota;
        }
        if let Some(entries) = file.cipher_cache {
            config.cipher_cache = entries;
        }
        if let Some(entries) = file.key_cache {
            config.key_cache = entries;
        }
        if let Some(check) = &file.store_check {
            config.store_check = check.parse().map_err(ConfigError::Invalid)?;
        }
        if let Some(quota) = file.alias_quota {
            config.alias_quota = quota;
        }
        if let Some(quota) = file.grants_per_key {
            config.grants_per_key = quota;
        }
        if let Some(quota) = file.grant_bytes {
            config.grant_bytes = quota;
        }
        if let Some(quota) = file.on_demand_rotation_quota {
            config.on_demand_rotation_quota = quota;
        }
        if let Some(quota) = file.user_quota {
            config.iam_quotas.users = quota;
        }
        if let Some(quota) = file.group_quota {
            config.iam_quotas.groups = quota;
        }
        if let Some(quota) = file.role_quota {
            config.iam_quotas.roles = quota;
        }
        if let Some(quota) = file.role_session_quota {
            config.iam_quotas.sessions_per_role = quota;
        }
        if let Some(days) = file.rotation_period_days {
            config.rotation_period_days = days;
        }
        if let Some(seconds) = file.scheduler_interval_seconds {
            config.scheduler_interval = Duration::from_secs(seconds);
        }
        for (name, section) in &file.pkcs11 {
            config.add_pkcs11(section.settings(name)?)?;
        }
        if let Some(ms) = file.pkcs11_call_timeout_ms {
            config.pkcs11_call_timeout = Duration::from_millis(ms);
        }
        config.tls = file.tls.clone();
        config.insecure_no_tls = file.insecure_no_tls.unwrap_or(false);
        if let Some(path) = &file.audit_log {
            config.audit_log = path.clone();
        }
        if let Some(bytes) = file.audit_max_bytes {
            config.audit_max_bytes = bytes;
        }
        if let Some(files) = file.audit_max_files {
            config.audit_max_files = files;
        }
        if file.audit_max_age_days.is_some() {
            config.audit_max_age_days = file.audit_max_age_days;
        }
        if let Some(bytes) = file.audit_min_free_bytes {
            config.audit_min_free_bytes = bytes;
        }
        if let Some(rate) = file.unauthenticated_rate_per_second {
            config.unauthenticated_rate_per_second = rate;
        }
        if let Some(burst) = file.unauthenticated_burst {
            config.unauthenticated_burst = burst;
        }
        if let Some(listen) = &file.metrics_listen {
            config.set_metrics_listen(listen)?;
        }
        if let Some(listen) = &file.aws_listen {
            config.set_aws_listen(listen)?;
        }
        if let Some(listen) = &file.console_listen {
            config.set_console_listen(listen)?;
        }
        config.oidc_ca_file = file.oidc_ca_file.clone();
        if let Some(hosts) = &file.accepted_hosts {
            if let Some(bad) = hosts.iter().find(|h| {
                h.is_empty() || h.contains(['/', '@']) || h.chars().any(|c| c.is_whitespace())
            }) {
                return Err(ConfigError::Invalid(format!(
                    "accepted_hosts: '{bad}' is not a host name or host:port"
                )));
            }
            config.accepted_hosts = hosts.clone();
        }
        config.store = StoreChoice {
            store: file.store.clone(),
            etcd_endpoints: file.etcd_endpoints.clone(),
            etcd_prefix: file.etcd_prefix.clone(),
            etcd_user: file.etcd_user.clone(),
            etcd_password_file: file.etcd_password_file.clone(),
            etcd_ca_file: file.etcd_ca_file.clone(),
            etcd_cert_file: file.etcd_cert_file.clone(),
            etcd_key_file: file.etcd_key_file.clone(),
        }
        .settings()?;
        config.validate()?;
        Ok(config)
    }

    /// How the audit log is rotated, kept and watched.
    pub fn audit_settings(&self) -> crate::audit::AuditSettings {
        crate::audit::AuditSettings {
            max_bytes: self.audit_max_bytes,
            max_files: self.audit_max_files,
            max_age: self
                .audit_max_age_days
                .map(|days| Duration::from_secs(u64::from(days) * 86_400)),
            min_free_bytes: self.audit_min_free_bytes,
            chain: None,
        }
    }

    pub fn set_listen(&mut self, listen: &str) -> Result<(), ConfigError> {
        self.listen = listen_address("listen address", listen)?;
        Ok(())
    }

    pub fn set_aws_listen(&mut self, listen: &str) -> Result<(), ConfigError> {
        self.aws_listen = Some(listen_address("AWS listen address", listen)?);
        Ok(())
    }

    pub fn set_console_listen(&mut self, listen: &str) -> Result<(), ConfigError> {
        self.console_listen = Some(listen_address("console listen address", listen)?);
        Ok(())
    }

    pub fn set_metrics_listen(&mut self, listen: &str) -> Result<(), ConfigError> {
        self.metrics_listen = Some(listen_address("metrics listen address", listen)?);
        Ok(())
    }

    /// Checks the settings; `keystore = "pkcs11"` names the one PKCS#11 keystore, if only one.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        if self.keystore == "pkcs11" && self.pkcs11.len() == 1 {
            self.keystore = format!("{PKCS11_PREFIX}{}", self.pkcs11[0].name);
        }
        let name_ok =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !name_ok(&self.partition) {
            return Err(ConfigError::Invalid(format!(
                "partition '{}' must be letters, digits and '-'",
                self.partition
            )));
        }
        if !name_ok(&self.region) {
            return Err(ConfigError::Invalid(format!(
                "region '{}' must be letters, digits and '-'",
                self.region
            )));
        }
        for (name, quota) in [
            ("key_quota", self.key_quota),
            ("cipher_cache", self.cipher_cache),
            ("key_cache", self.key_cache),
            ("alias_quota", self.alias_quota),
            ("grants_per_key", self.grants_per_key),
            ("grant_bytes", self.grant_bytes),
            (
                "on_demand_rotation_quota",
                self.on_demand_rotation_quota as usize,
            ),
            ("user_quota", self.iam_quotas.users),
            ("group_quota", self.iam_quotas.groups),
            ("role_quota", self.iam_quotas.roles),
            ("role_session_quota", self.iam_quotas.sessions_per_role),
        ] {
            if quota == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
            }
        }
        if !(90..=2560).contains(&self.rotation_period_days) {
            return Err(ConfigError::Invalid(format!(
                "rotation_period_days must be between 90 and 2560; got {}",
                self.rotation_period_days
            )));
        }
        if self.audit_max_bytes < 4096 {
            return Err(ConfigError::Invalid(
                "audit_max_bytes must be at least 4096".into(),
            ));
        }
        if self.audit_max_files == 0 {
            return Err(ConfigError::Invalid(
                "audit_max_files must be at least 1".into(),
            ));
        }
        if self.audit_max_age_days == Some(0) {
            return Err(ConfigError::Invalid(
                "audit_max_age_days must be at least 1".into(),
            ));
        }
        if self.unauthenticated_rate_per_second == 0 || self.unauthenticated_burst == 0 {
            return Err(ConfigError::Invalid(
                "unauthenticated_rate_per_second and unauthenticated_burst must be at least 1"
                    .into(),
            ));
        }
        if self.scheduler_interval.is_zero() {
            return Err(ConfigError::Invalid(
                "scheduler_interval_seconds must be at least 1".into(),
            ));
        }
        if self.tls.is_none() && !self.insecure_no_tls && !self.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "refusing to listen on {} without TLS: give --tls-cert and --tls-key, or \
                 --insecure-no-tls to accept plaintext on the network",
                self.listen
            )));
        }
        // The AWS door serves TLS with the same certificate, and the same rule holds.
        if let Some(aws) = self.aws_listen
            && self.tls.is_none()
            && !self.insecure_no_tls
            && !aws.ip().is_loopback()
        {
            return Err(ConfigError::Invalid(format!(
                "refusing to serve the AWS API on {aws} without TLS: give --tls-cert and \
                 --tls-key, or --insecure-no-tls to accept plaintext on the network"
            )));
        }
        // Passwords and session cookies: the same rule again.
        if let Some(console) = self.console_listen
            && self.tls.is_none()
            && !self.insecure_no_tls
            && !console.ip().is_loopback()
        {
            return Err(ConfigError::Invalid(format!(
                "refusing to serve the console on {console} without TLS: give --tls-cert and \
                 --tls-key, or --insecure-no-tls to accept plaintext on the network"
            )));
        }
        let names = self.keystore_names();
        if !names.contains(&self.keystore) {
            return Err(ConfigError::Invalid(format!(
                "keystore '{}' is not configured; configured: {}",
                self.keystore,
                names.join(", ")
            )));
        }
        Ok(())
    }
}

/// A listen setting's address, or the error naming `what` (`listen address`, `AWS listen
/// address`, …).
fn listen_address(what: &str, listen: &str) -> Result<SocketAddr, ConfigError> {
    listen.parse().map_err(|_| {
        ConfigError::Invalid(format!(
            "{what} '{listen}' is not HOST:PORT (an IP address and port)"
        ))
    })
}

#[cfg(test)]
mod tests;
