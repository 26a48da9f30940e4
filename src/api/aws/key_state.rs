//! Key states by AWS's names (`Enabled`, `PendingDeletion`, …) in the JSON shapes.

use crate::proto::v1::KeyState;
use serde::{Deserialize, Deserializer, Serializer};

fn name(state: i32) -> &'static str {
    match KeyState::try_from(state) {
        Ok(KeyState::Enabled) => "Enabled",
        Ok(KeyState::Disabled) => "Disabled",
        Ok(KeyState::PendingDeletion) => "PendingDeletion",
        Ok(KeyState::Deleted) => "Deleted",
        Ok(KeyState::Unavailable) => "Unavailable",
        Ok(KeyState::PendingImport) => "PendingImport",
        _ => "Unavailable",
    }
}

pub fn serialize<S: Serializer>(state: &i32, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(name(*state))
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i32, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
    [
        KeyState::Enabled,
        KeyState::Disabled,
        KeyState::PendingDeletion,
        KeyState::Deleted,
        KeyState::Unavailable,
        KeyState::PendingImport,
    ]
    .into_iter()
    .find(|s| name(*s as i32) == text)
    .map(|s| s as i32)
    .ok_or_else(|| serde::de::Error::custom("unknown key state"))
}
