//! `keyhaven keystore …`: orphaned key material in the keystores (device objects no key
//! record names), listed, and destroyed one version at a time on explicit request.

use super::commands::{CliError, Context};
use crate::proto::v1;
use clap::Subcommand;
use serde_json::json;

#[derive(Debug, Subcommand)]
pub enum KeystoreCommand {
    /// List key material the keystores hold that no key record names (left in place by the
    /// daemon: a metadata backup restored, or another daemon's data directory on the token).
    Orphans,
    /// Destroy one orphaned version in its keystore, for good (refused for material a key
    /// record or a pending generation names).
    DestroyOrphan {
        /// The keystore holding it, e.g. `pkcs11:hsm`.
        keystore: String,
        /// The key id (UUID) the material is labelled with.
        key_id: String,
        /// The version the material is labelled with.
        #[arg(value_name = "VERSION")]
        key_version: u32,
    },
}

fn orphan_json(orphan: &v1::OrphanedKeyMaterial) -> serde_json::Value {
    json!({
        "KeyStore": orphan.keystore,
        "KeyId": orphan.key_id,
        "KeyVersion": orphan.key_version,
    })
}

pub async fn keystore(ctx: Context, command: KeystoreCommand) -> Result<(), CliError> {
    let Context { client, out } = ctx;
    let mut kms = client.kms();
    match command {
        KeystoreCommand::Orphans => {
            let r = kms
                .list_orphaned_key_material(client.signed(
                    "ListOrphanedKeyMaterial",
                    v1::ListOrphanedKeyMaterialRequest {},
                ))
                .await?
                .into_inner();
            out.print(
                json!({ "Orphans": r.orphans.iter().map(orphan_json).collect::<Vec<_>>() }),
                || {
                    if r.orphans.is_empty() {
                        return "No orphaned key material".into();
                    }
                    r.orphans
                        .iter()
                        .map(|o| format!("{}\t{}\t{}", o.keystore, o.key_id, o.key_version))
                        .collect::<Vec<_>>()
                        .join("\n")
                },
            );
        }
        KeystoreCommand::DestroyOrphan {
            keystore,
            key_id,
            key_version,
        } => {
            let request = v1::DestroyOrphanedKeyMaterialRequest {
                keystore,
                key_id,
                key_version,
            };
            let r = kms
                .destroy_orphaned_key_material(client.signed("DestroyOrphanedKeyMaterial", request))
                .await?
                .into_inner();
            let destroyed = r.destroyed.unwrap_or_default();
            out.print(json!({ "Destroyed": orphan_json(&destroyed) }), || {
                format!(
                    "Destroyed version {} of key {} in {}",
                    destroyed.key_version, destroyed.key_id, destroyed.keystore
                )
            });
        }
    }
    Ok(())
}
