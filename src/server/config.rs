//! The daemon's configuration: a TOML file (see `keyhaven.example.toml`) overridden by flags.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";

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
    pub rotation_period_days: Option<u32>,
    pub scheduler_interval_seconds: Option<u64>,
    pub log_level: Option<String>,
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
    pub rotation_period_days: u32,
    pub scheduler_interval: Duration,
    /// Encryptions per key version before it is rotated (2^32; lowered only in tests).
    pub nonce_limit: u64,
    pub nonce_reservation_block: u64,
}

impl DaemonConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().unwrap_or_else(|_| unreachable!()),
            data_dir,
            keystore: crate::keystore::SEALED.into(),
            partition: "keyhaven".into(),
            region: "local".into(),
            key_quota: 100_000,
            rotation_period_days: 365,
            scheduler_interval: Duration::from_secs(60),
            nonce_limit: 1 << 32,
            nonce_reservation_block: 1 << 20,
        }
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
        if let Some(days) = file.rotation_period_days {
            config.rotation_period_days = days;
        }
        if let Some(seconds) = file.scheduler_interval_seconds {
            config.scheduler_interval = Duration::from_secs(seconds);
        }
        config.validate()?;
        Ok(config)
    }

    pub fn set_listen(&mut self, listen: &str) -> Result<(), ConfigError> {
        self.listen = listen.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "listen address '{listen}' is not HOST:PORT (an IP address and port)"
            ))
        })?;
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
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
        if self.key_quota == 0 {
            return Err(ConfigError::Invalid("key_quota must be at least 1".into()));
        }
        if !(90..=2560).contains(&self.rotation_period_days) {
            return Err(ConfigError::Invalid(format!(
                "rotation_period_days must be between 90 and 2560; got {}",
                self.rotation_period_days
            )));
        }
        if self.scheduler_interval.is_zero() {
            return Err(ConfigError::Invalid(
                "scheduler_interval_seconds must be at least 1".into(),
            ));
        }
        if self.keystore != crate::keystore::SEALED {
            return Err(ConfigError::Invalid(format!(
                "keystore '{}' is not available; this build offers: sealed",
                self.keystore
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
        assert_eq!(config.rotation_period_days, defaults.rotation_period_days);
        assert_eq!(config.scheduler_interval, defaults.scheduler_interval);
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/keyhaven"));
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
                "keystore 'pkcs11' is not available",
            ),
        ];
        for (text, expected) in cases {
            let file = ConfigFile::parse(text).unwrap();
            let error = DaemonConfig::from_file(&file, Some("/tmp/x".into()))
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
        let unknown = ConfigFile::parse("lisen = \"127.0.0.1:1\"").unwrap_err();
        assert!(unknown.contains("unknown field `lisen`"), "{unknown}");
        let wrong_type = ConfigFile::parse("key_quota = \"many\"").unwrap_err();
        assert!(wrong_type.contains("key_quota"), "{wrong_type}");
        let no_dir = DaemonConfig::from_file(&ConfigFile::default(), None).unwrap_err();
        assert!(no_dir.to_string().contains("no data directory"), "{no_dir}");
    }
}
