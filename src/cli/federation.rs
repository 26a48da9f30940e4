//! Federation from the command line: OpenID Connect providers (`keyhaven oidc-provider …`,
//! as `aws iam …-open-id-connect-provider`) and `keyhaven assume-role-with-web-identity`,
//! which needs no credentials of its own (the token is the credential) and prints `export`
//! lines of the role's session.

use super::commands::{CliError, Context};
use crate::clock::rfc3339;
use crate::proto::v1;
use clap::{Args, Subcommand};
use serde_json::json;
use std::path::PathBuf;

type CliResult = Result<(), CliError>;

#[derive(Debug, Subcommand)]
pub enum OidcProviderCommand {
    /// Register a provider: its https:// issuer URL, its audiences and its signing keys.
    Create {
        #[arg(long)]
        url: String,
        /// An audience (client id) its tokens may be for; repeat for several.
        #[arg(long = "client-id", required = true)]
        client_ids: Vec<String>,
        /// The provider's JWKS document (its `jwks_uri`'s content), as a file. Without it,
        /// the daemon fetches the keys from the issuer (its discovery document's jwks_uri),
        /// and again when a token names a key it has not seen.
        #[arg(long)]
        jwks_file: Option<PathBuf>,
    },
    List,
    Show {
        arn: String,
    },
    Delete {
        arn: String,
    },
}

/// `keyhaven assume-role-with-web-identity`.
#[derive(Debug, Args)]
pub struct WebIdentityArgs {
    #[arg(long)]
    role_arn: String,
    #[arg(long)]
    session_name: String,
    /// The file holding the token (a Kubernetes projected token, a CI job's OIDC token).
    #[arg(long)]
    token_file: PathBuf,
    /// 900-43200 (default 3600).
    #[arg(long)]
    duration_seconds: Option<u32>,
}

pub async fn oidc_provider(ctx: Context, command: OidcProviderCommand) -> CliResult {
    let Context { client, out } = ctx;
    let mut iam = client.iam();
    match command {
        OidcProviderCommand::Create {
            url,
            client_ids,
            jwks_file,
        } => {
            let jwks = match &jwks_file {
                Some(file) => super::identity::read_file(file)?,
                None => String::new(),
            };
            let r = iam
                .create_open_id_connect_provider(client.signed_iam(
                    "CreateOpenIDConnectProvider",
                    v1::CreateOpenIdConnectProviderRequest {
                        url,
                        client_id_list: client_ids,
                        thumbprint_list: Vec::new(),
                        jwks,
                    },
                ))
                .await?
                .into_inner();
            out.print(
                json!({ "OpenIDConnectProviderArn": r.open_id_connect_provider_arn }),
                || r.open_id_connect_provider_arn.clone(),
            );
        }
        OidcProviderCommand::List => {
            let r = iam
                .list_open_id_connect_providers(client.signed_iam(
                    "ListOpenIDConnectProviders",
                    v1::ListOpenIdConnectProvidersRequest {},
                ))
                .await?
                .into_inner();
            let arns = r.open_id_connect_provider_arns;
            out.print(
                json!({ "OpenIDConnectProviderList": arns.iter().map(|a| json!({ "Arn": a })).collect::<Vec<_>>() }),
                || arns.join("\n"),
            );
        }
        OidcProviderCommand::Show { arn } => {
            let r = iam
                .get_open_id_connect_provider(client.signed_iam(
                    "GetOpenIDConnectProvider",
                    v1::GetOpenIdConnectProviderRequest {
                        open_id_connect_provider_arn: arn,
                    },
                ))
                .await?
                .into_inner();
            out.print(
                json!({
                    "Url": r.url,
                    "ClientIDList": r.client_id_list,
                    "CreateDate": rfc3339(r.create_date),
                }),
                || format!("{} (audiences: {})", r.url, r.client_id_list.join(", ")),
            );
        }
        OidcProviderCommand::Delete { arn } => {
            iam.delete_open_id_connect_provider(client.signed_iam(
                "DeleteOpenIDConnectProvider",
                v1::DeleteOpenIdConnectProviderRequest {
                    open_id_connect_provider_arn: arn,
                },
            ))
            .await?;
        }
    }
    Ok(())
}

pub async fn assume_role_with_web_identity(ctx: Context, args: WebIdentityArgs) -> CliResult {
    let Context { client, out } = ctx;
    let token = super::identity::read_file(&args.token_file)?;
    let r = client
        .iam()
        .assume_role_with_web_identity(tonic::Request::new(v1::AssumeRoleWithWebIdentityRequest {
            role_arn: args.role_arn,
            role_session_name: args.session_name,
            web_identity_token: token.trim().to_owned(),
            duration_seconds: args.duration_seconds,
        }))
        .await?
        .into_inner();
    let c = r.credentials.unwrap_or_default();
    let more = json!({
        "AssumedRoleUser": { "Arn": r.assumed_role_arn, "AssumedRoleId": r.assumed_role_id },
        "SubjectFromWebIdentityToken": r.subject_from_web_identity_token,
        "Provider": r.provider,
        "Audience": r.audience,
    });
    out.print_session(
        &c,
        &format!(
            "{} for {}",
            r.assumed_role_arn, r.subject_from_web_identity_token
        ),
        more.as_object().cloned().unwrap_or_default(),
    );
    Ok(())
}
