//! `keyhaven user|role bind-certificate | unbind-certificate | list-certificates`: the
//! client-certificate identities a user or role is bound to (the certificate door).

use super::commands::{CliError, Context};
use crate::clock::rfc3339;
use crate::proto::v1;
use clap::Args;
use serde_json::{Value, json};

/// `NAME --subject CN` or `NAME --uri URI`.
#[derive(Debug, Args)]
pub struct CertificateArgs {
    name: String,
    /// The certificate subject's common name.
    #[arg(long, conflicts_with = "uri", required_unless_present = "uri")]
    subject: Option<String>,
    /// A URI subject alternative name (a SPIFFE id, say).
    #[arg(long)]
    uri: Option<String>,
}

impl CertificateArgs {
    fn identity(&self) -> v1::CertificateIdentity {
        v1::CertificateIdentity {
            subject: self.subject.clone().unwrap_or_default(),
            uri: self.uri.clone().unwrap_or_default(),
        }
    }
}

fn shown(identity: &Option<v1::CertificateIdentity>) -> (Value, String) {
    let identity = identity.clone().unwrap_or_default();
    if identity.uri.is_empty() {
        (
            json!({ "Subject": identity.subject }),
            format!("subject {}", identity.subject),
        )
    } else {
        (
            json!({ "Uri": identity.uri }),
            format!("uri {}", identity.uri),
        )
    }
}

fn binding_json(label: &str, binding: &v1::CertificateBinding) -> (Value, String) {
    let (mut value, line) = shown(&binding.identity);
    value[format!("{label}Name")] = json!(binding.entity_name);
    value["CreateDate"] = json!(rfc3339(binding.create_date));
    (value, line)
}

fn label(kind: v1::EntityType) -> &'static str {
    match kind {
        v1::EntityType::Role => "Role",
        v1::EntityType::Group => "Group",
        _ => "User",
    }
}

pub async fn bind(
    ctx: Context,
    kind: v1::EntityType,
    args: CertificateArgs,
) -> Result<(), CliError> {
    let Context { client, out } = ctx;
    let request = v1::BindCertificateRequest {
        entity_type: kind as i32,
        entity_name: args.name.clone(),
        identity: Some(args.identity()),
    };
    let r = client
        .iam()
        .bind_certificate(client.signed_iam("BindCertificate", request))
        .await?
        .into_inner();
    let binding = r.binding.unwrap_or_default();
    let (value, line) = binding_json(label(kind), &binding);
    out.print(json!({ "CertificateBinding": value }), || {
        format!(
            "Bound {} {} to certificate {line}",
            label(kind).to_lowercase(),
            args.name
        )
    });
    Ok(())
}

pub async fn unbind(
    ctx: Context,
    kind: v1::EntityType,
    args: CertificateArgs,
) -> Result<(), CliError> {
    let Context { client, out } = ctx;
    let identity = Some(args.identity());
    let request = v1::UnbindCertificateRequest {
        entity_type: kind as i32,
        entity_name: args.name.clone(),
        identity: identity.clone(),
    };
    client
        .iam()
        .unbind_certificate(client.signed_iam("UnbindCertificate", request))
        .await?;
    let (_, line) = shown(&identity);
    out.print(json!({}), || {
        format!(
            "Unbound {} {} from certificate {line}",
            label(kind).to_lowercase(),
            args.name
        )
    });
    Ok(())
}

pub async fn list(ctx: Context, kind: v1::EntityType, name: String) -> Result<(), CliError> {
    let Context { client, out } = ctx;
    let request = v1::ListCertificatesRequest {
        entity_type: kind as i32,
        entity_name: name,
    };
    let r = client
        .iam()
        .list_certificates(client.signed_iam("ListCertificates", request))
        .await?
        .into_inner();
    let rows: Vec<(Value, String)> = r
        .bindings
        .iter()
        .map(|b| binding_json(label(kind), b))
        .collect();
    out.print(
        json!({ "CertificateBindings": rows.iter().map(|(v, _)| v.clone()).collect::<Vec<_>>() }),
        || {
            rows.iter()
                .map(|(_, line)| line.clone())
                .collect::<Vec<_>>()
                .join("\n")
        },
    );
    Ok(())
}
