//! The forms a caller may name a key by: key id, key ARN, alias name, alias ARN.

use super::KeyError;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyReference {
    Id(Uuid),
    /// The full alias name, `alias/<name>`.
    Alias(String),
}

/// The ARN prefix `arn:<partition>:kms:<region>:<account>:` of this daemon's resources.
pub(crate) fn arn_prefix(partition: &str, region: &str, account: &str) -> String {
    format!("arn:{partition}:kms:{region}:{account}:")
}

impl KeyReference {
    /// Parses `input` against this daemon's ARN prefix. An ARN of another partition, region or
    /// account names no key here: `NotFound`, as does anything that is no key form at all.
    pub fn parse(input: &str, arn_prefix: &str) -> Result<Self, KeyError> {
        if input.is_empty() {
            return Err(KeyError::Validation("KeyId is required".into()));
        }
        let not_found = || KeyError::NotFound(format!("key '{}' does not exist", printable(input)));
        let local = if input.starts_with("arn:") {
            input.strip_prefix(arn_prefix).ok_or_else(not_found)?
        } else {
            input
        };
        if let Some(id) = local.strip_prefix("key/") {
            if !input.starts_with("arn:") {
                return Err(not_found());
            }
            return Uuid::parse_str(id)
                .ok()
                .filter(|u| u.hyphenated().to_string() == id)
                .map(KeyReference::Id)
                .ok_or_else(not_found);
        }
        if local.starts_with("alias/") {
            return Ok(KeyReference::Alias(local.to_owned()));
        }
        if input.starts_with("arn:") {
            return Err(not_found());
        }
        Uuid::try_parse(local)
            .ok()
            .filter(|u| u.hyphenated().to_string() == local.to_ascii_lowercase())
            .map(KeyReference::Id)
            .ok_or_else(not_found)
    }
}

/// Caller input echoed in a message: bounded, control characters replaced.
pub fn printable(input: &str) -> String {
    let mut out: String = input
        .chars()
        .take(300)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if input.chars().count() > 300 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "arn:keyhaven:kms:local:111122223333:";
    const ID: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";

    #[test]
    fn every_key_form_parses() {
        let id = KeyReference::Id(Uuid::parse_str(ID).unwrap());
        assert_eq!(KeyReference::parse(ID, PREFIX).unwrap(), id);
        assert_eq!(KeyReference::parse(&ID.to_uppercase(), PREFIX).unwrap(), id);
        assert_eq!(
            KeyReference::parse(&format!("{PREFIX}key/{ID}"), PREFIX).unwrap(),
            id
        );
        assert_eq!(
            KeyReference::parse("alias/app", PREFIX).unwrap(),
            KeyReference::Alias("alias/app".into())
        );
        assert_eq!(
            KeyReference::parse(&format!("{PREFIX}alias/app"), PREFIX).unwrap(),
            KeyReference::Alias("alias/app".into())
        );
    }

    #[test]
    fn foreign_or_malformed_forms_are_not_found() {
        for input in [
            "arn:aws:kms:local:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:keyhaven:kms:other:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:keyhaven:kms:local:999999999999:alias/app",
            "key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "1234abcd12ab34cd56ef1234567890ab",
            "not-a-key",
            "arn:keyhaven:kms:local:111122223333:key/nope",
        ] {
            assert!(
                matches!(
                    KeyReference::parse(input, PREFIX),
                    Err(KeyError::NotFound(_))
                ),
                "{input}"
            );
        }
        assert!(matches!(
            KeyReference::parse("", PREFIX),
            Err(KeyError::Validation(_))
        ));
    }

    #[test]
    fn printable_bounds_and_cleans() {
        assert_eq!(printable("a\nb"), "a?b");
        assert_eq!(printable(&"x".repeat(400)).chars().count(), 301);
    }
}
