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
        self.listen = listen.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "listen address '{listen}' is not HOST:PORT (an IP address and port)"
            ))
        })?;
        Ok(())
    }

    /// Checks the settings; `keystore = "pkcs11"` names the one PKCS#11 keystore, if only one.
    pub fn set_aws_listen(&mut self, listen: &str) -> Result<(), ConfigError> {
        self.aws_listen = Some(listen.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "AWS listen address '{listen}' is not HOST:PORT (an IP address and port)"
            ))
        })?);
        Ok(())
    }

    pub fn set_console_listen(&mut self, listen: &str) -> Result<(), ConfigError> {
        self.console_listen = Some(listen.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "console listen address '{listen}' is not HOST:PORT (an IP address and port)"
            ))
        })?);
        Ok(())
    }

    pub fn set_metrics_listen(&mut self, listen: &str) -> Result<(), ConfigError> {
        self.metrics_listen = Some(listen.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "metrics listen address '{listen}' is not HOST:PORT (an IP address and port)"
            ))
        })?);
        Ok(())
    }

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

#[cfg(test)]
mod tests {
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
            DaemonConfig::from_file(&ConfigFile::parse(loopback).unwrap(), Some("/d".into()))
                .is_ok()
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
}
