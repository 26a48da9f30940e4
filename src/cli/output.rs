//! Printing results: human lines, or one JSON object in the AWS CLI's shape.

use super::OutputFormat;
use crate::clock::rfc3339;
use crate::proto::v1;
use serde_json::{Map, Value, json};

#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub format: OutputFormat,
}

impl Output {
    pub fn json(&self) -> bool {
        self.format == OutputFormat::Json
    }

    /// Prints temporary credentials: as JSON, `{"Credentials": …}` with the members of
    /// `more`; as text, `# <who> until <expiration>` and the `export` lines a shell can `eval`.
    pub fn print_session(&self, c: &v1::Credentials, who: &str, more: Map<String, Value>) {
        let mut value = Map::new();
        value.insert(
            "Credentials".into(),
            json!({
                "AccessKeyId": c.access_key_id,
                "SecretAccessKey": c.secret_access_key,
                "SessionToken": c.session_token,
                "Expiration": rfc3339(c.expiration),
            }),
        );
        value.extend(more);
        self.print(Value::Object(value), || {
            format!(
                "# {who} until {}\nexport KEYHAVEN_ACCESS_KEY_ID={}\nexport KEYHAVEN_SECRET_ACCESS_KEY={}\nexport KEYHAVEN_SESSION_TOKEN={}",
                rfc3339(c.expiration),
                c.access_key_id,
                c.secret_access_key,
                c.session_token
            )
        });
    }

    /// Prints `value` as JSON, or `human` as text.
    pub fn print(&self, value: Value, human: impl FnOnce() -> String) {
        if self.json() {
            println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            );
        } else {
            let text = human();
            if !text.is_empty() {
                println!("{text}");
            }
        }
    }
}

pub fn key_state_name(state: i32) -> &'static str {
    match v1::KeyState::try_from(state) {
        Ok(v1::KeyState::Enabled) => "Enabled",
        Ok(v1::KeyState::Disabled) => "Disabled",
        Ok(v1::KeyState::PendingDeletion) => "PendingDeletion",
        Ok(v1::KeyState::Deleted) => "Deleted",
        Ok(v1::KeyState::Unavailable) => "Unavailable",
        Ok(v1::KeyState::PendingImport) => "PendingImport",
        _ => "Unknown",
    }
}

/// `KeyMetadata` as the AWS CLI prints it (plus Keyhaven's `KeyStore` and `CurrentKeyVersion`).
pub fn key_metadata_json(m: &v1::KeyMetadata) -> Value {
    let mut object = Map::new();
    object.insert("AWSAccountId".into(), json!(m.aws_account_id));
    object.insert("KeyId".into(), json!(m.key_id));
    object.insert("Arn".into(), json!(m.arn));
    object.insert("CreationDate".into(), json!(rfc3339(m.creation_date)));
    object.insert("Enabled".into(), json!(m.enabled));
    object.insert("Description".into(), json!(m.description));
    object.insert("KeyUsage".into(), json!(m.key_usage));
    object.insert("KeyState".into(), json!(key_state_name(m.key_state)));
    if let Some(date) = m.deletion_date {
        object.insert("DeletionDate".into(), json!(rfc3339(date)));
    }
    if let Some(days) = m.pending_deletion_window_in_days {
        object.insert("PendingDeletionWindowInDays".into(), json!(days));
    }
    object.insert("Origin".into(), json!(m.origin));
    if let Some(model) = &m.expiration_model {
        object.insert("ExpirationModel".into(), json!(model));
    }
    if let Some(date) = m.valid_to {
        object.insert("ValidTo".into(), json!(rfc3339(date)));
    }
    object.insert("KeyManager".into(), json!(m.key_manager));
    object.insert("KeySpec".into(), json!(m.key_spec));
    object.insert("CustomerMasterKeySpec".into(), json!(m.key_spec));
    // As the AWS CLI: each list only for keys that have one (HMAC keys have no encryption
    // algorithms, AES keys no MAC algorithms).
    if !m.encryption_algorithms.is_empty() {
        object.insert(
            "EncryptionAlgorithms".into(),
            json!(m.encryption_algorithms),
        );
    }
    if !m.mac_algorithms.is_empty() {
        object.insert("MacAlgorithms".into(), json!(m.mac_algorithms));
    }
    if !m.signing_algorithms.is_empty() {
        object.insert("SigningAlgorithms".into(), json!(m.signing_algorithms));
    }
    if !m.key_agreement_algorithms.is_empty() {
        object.insert(
            "KeyAgreementAlgorithms".into(),
            json!(m.key_agreement_algorithms),
        );
    }
    object.insert("MultiRegion".into(), json!(false));
    object.insert("KeyStore".into(), json!(m.keystore));
    object.insert("CurrentKeyVersion".into(), json!(m.current_key_version));
    if let Some(date) = m.last_used_date {
        object.insert("LastUsedDate".into(), json!(rfc3339(date)));
        object.insert("LastUsedOperation".into(), json!(m.last_used_operation));
    }
    Value::Object(object)
}

pub fn key_metadata_human(m: &v1::KeyMetadata) -> String {
    let mut lines = vec![
        format!("KeyId:        {}", m.key_id),
        format!("Arn:          {}", m.arn),
        format!("State:        {}", key_state_name(m.key_state)),
        format!("Description:  {}", m.description),
        format!("Created:      {}", rfc3339(m.creation_date)),
        format!("KeyStore:     {} ({})", m.keystore, m.origin),
        format!("Version:      {}", m.current_key_version),
        format!("Spec:         {} ({})", m.key_spec, m.key_usage),
    ];
    if let Some(date) = m.deletion_date {
        lines.push(format!("DeletionDate: {}", rfc3339(date)));
    }
    match m.last_used_date {
        Some(date) => lines.push(format!(
            "LastUsed:     {} ({})",
            rfc3339(date),
            m.last_used_operation
        )),
        None => lines.push("LastUsed:     never".into()),
    }
    lines.join("\n")
}
