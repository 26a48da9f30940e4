//! Where the unseal passphrase comes from: a file, `KEYHAVEN_PASSPHRASE`, or a prompt.

use crate::secret::SecretString;
use std::io::IsTerminal;
use std::path::Path;

pub const PASSPHRASE_ENV: &str = "KEYHAVEN_PASSPHRASE";

/// Reads the passphrase from `file` (its first line), else the environment, else a terminal
/// prompt (asked twice when `confirm`).
pub fn read_passphrase(file: Option<&Path>, confirm: bool) -> Result<SecretString, String> {
    if let Some(path) = file {
        let text = SecretString::new(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read passphrase file {}: {e}", path.display()))?,
        );
        let first = text.expose().lines().next().unwrap_or_default();
        return Ok(SecretString::new(first.to_owned()));
    }
    if let Ok(value) = std::env::var(PASSPHRASE_ENV) {
        return Ok(SecretString::new(value));
    }
    if !std::io::stdin().is_terminal() {
        return Err(format!(
            "no passphrase: give --passphrase-file or set {PASSPHRASE_ENV} (no terminal to prompt on)"
        ));
    }
    let first = SecretString::new(
        rpassword::prompt_password("Keyhaven passphrase: ").map_err(|e| e.to_string())?,
    );
    if confirm {
        let second = SecretString::new(
            rpassword::prompt_password("Repeat passphrase: ").map_err(|e| e.to_string())?,
        );
        if first != second {
            return Err("the passphrases differ".into());
        }
    }
    Ok(first)
}
