//! The operator's command line: `init` and `serve`, and the client subcommands.
//!
//! Client subcommands print human output by default and, with `--output json`, one JSON object
//! in the shape the AWS CLI gives for the same operation (`KeyMetadata.KeyId`,
//! `CiphertextBlob`, …). Errors go to stderr with their reason name, and exit non-zero.

mod approval;
mod audit;
mod batch;
pub mod bench;
mod certificates;
mod cluster;
mod commands;
mod crypto;
mod federation;
mod grants;
mod identity;
mod keystore;
mod mfa;
mod org;
mod output;
mod passwords;
mod serve;
mod store;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

pub use output::Output;

/// Keyhaven: a self-hosted key management service.
#[derive(Debug, Parser)]
#[command(name = "keyhaven", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    #[default]
    Human,
    Json,
}

/// Where the daemon is and how to print.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The daemon's gRPC endpoint.
    #[arg(long, env = "KEYHAVEN_ENDPOINT", default_value = crate::client::DEFAULT_ENDPOINT, global = true)]
    pub endpoint: String,
    /// `json` prints one JSON object shaped like the AWS CLI's output.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human, global = true)]
    pub output: OutputFormat,
    /// For https:// endpoints: the PEM CA that signed the daemon's certificate
    /// (KEYHAVEN_CA_CERT); KEYHAVEN_CLIENT_CERT and KEYHAVEN_CLIENT_KEY give a client
    /// certificate for mutual TLS.
    #[arg(long, global = true)]
    pub ca_cert: Option<PathBuf>,
    /// Execute the approved request ID: the call must be exactly the one approved.
    #[arg(long, env = "KEYHAVEN_APPROVAL_ID", global = true)]
    pub approval_id: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a sealed data directory and print the root credentials (once).
    Init {
        #[arg(long)]
        data_dir: PathBuf,
        /// Read the passphrase from this file's first line (else KEYHAVEN_PASSPHRASE, else a prompt).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// ARN partition of the root principal shown.
        #[arg(long, default_value = "keyhaven")]
        partition: String,
        #[command(flatten)]
        store: serve::StoreArgs,
    },
    /// Run the daemon.
    Serve(Box<serve::ServeArgs>),
    /// Manage keys.
    #[command(subcommand)]
    Key(commands::KeyCommand),
    /// Manage aliases.
    #[command(subcommand)]
    Alias(commands::AliasCommand),
    /// Manage grants: narrow, revocable use of one key by one principal.
    #[command(subcommand)]
    Grant(grants::GrantCommand),
    /// Encrypt stdin (at most 4096 bytes); prints the base64 ciphertext blob.
    Encrypt(crypto::EncryptArgs),
    /// Decrypt a base64 ciphertext blob from stdin; prints the plaintext.
    Decrypt(crypto::DecryptArgs),
    /// Decrypt a base64 ciphertext blob from stdin and encrypt it under another key, inside the daemon.
    ReEncrypt(crypto::ReEncryptArgs),
    /// Generate a data key: its plaintext and its ciphertext under KEY.
    DataKey(crypto::DataKeyArgs),
    /// Generate a data key pair (RSA or ECC): its public key, its private key (PKCS#8 DER)
    /// and the private key's ciphertext under KEY, base64.
    DataKeyPair(crypto::DataKeyPairArgs),
    /// ECDH of a KEY_AGREEMENT key with a peer's public key (DER or PEM on stdin); prints the
    /// shared secret, base64.
    DeriveSharedSecret(crypto::DeriveSharedSecretArgs),
    /// N random bytes (1-1024), base64.
    Random(crypto::RandomArgs),
    /// HMACs with HMAC keys: generate, verify.
    #[command(subcommand)]
    Mac(crypto::MacCommand),
    /// Sign stdin with an asymmetric key; prints the base64 DER signature.
    Sign(crypto::SignArgs),
    /// Verify a base64 signature of stdin; exits non-zero if it does not verify.
    Verify(crypto::VerifyArgs),
    /// An asymmetric key's public key (PEM, or DER SubjectPublicKeyInfo).
    GetPublicKey(crypto::GetPublicKeyArgs),
    /// Batches of Encrypt, Decrypt or GenerateDataKey items, as JSON lines on stdin.
    #[command(flatten)]
    Batch(batch::BatchCommand),
    /// Key policies, and the policy simulator.
    #[command(subcommand)]
    Policy(identity::PolicyCommand),
    /// Manage users and their inline policies.
    #[command(subcommand)]
    User(identity::EntityCommand),
    /// Manage groups, their members and inline policies.
    #[command(subcommand)]
    Group(identity::EntityCommand),
    /// Manage roles (with their trust policies) and their inline policies.
    #[command(subcommand)]
    Role(identity::EntityCommand),
    /// Manage users' access keys.
    #[command(subcommand)]
    AccessKey(identity::AccessKeyCommand),
    /// Temporary credentials for a role; prints them and `export` lines.
    AssumeRole(identity::AssumeRoleArgs),
    /// Virtual MFA devices (TOTP): create, enable, list, deactivate, delete.
    #[command(subcommand)]
    Mfa(mfa::MfaCommand),
    /// Users' passwords (login profiles).
    #[command(subcommand)]
    LoginProfile(passwords::LoginProfileCommand),
    /// The account's password policy.
    #[command(subcommand)]
    PasswordPolicy(passwords::PasswordPolicyCommand),
    /// Change your own password.
    ChangePassword(passwords::ChangePasswordArgs),
    /// Sign in with a user's password (no credentials needed); prints export lines of a
    /// one-hour session.
    SignIn(passwords::SignInArgs),
    /// OpenID Connect identity providers, for federation.
    #[command(subcommand)]
    OidcProvider(federation::OidcProviderCommand),
    /// A role's session for a web identity token (no credentials needed: the token is one);
    /// prints export lines.
    AssumeRoleWithWebIdentity(federation::WebIdentityArgs),
    /// The organisation (management account): member accounts and guardrail policies.
    #[command(subcommand)]
    Org(org::OrgCommand),
    /// Temporary credentials of the caller (with an MFA code for MFA-protected actions);
    /// prints them and `export` lines.
    SessionToken(mfa::SessionTokenArgs),
    /// Two-person approval: requests (list, show, approve, reject) and which actions need it.
    #[command(subcommand)]
    Approval(approval::ApprovalCommand),
    /// Who the credentials in use belong to.
    Whoami,
    /// Read the audit log (tail) or check its hash chain (verify).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Keystore maintenance: orphaned key material (never destroyed automatically).
    #[command(subcommand)]
    Keystore(keystore::KeystoreCommand),
    /// Put a daemon under load; print throughput and latency percentiles.
    Bench(bench::BenchArgs),
    /// Offline maintenance of a data directory's store (compact, authenticate).
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Several daemons on one etcd prefix: join one, list them.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
}

/// Runs the parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let client = cli.client;
    match cli.command {
        Command::Init {
            data_dir,
            passphrase_file,
            partition,
            store,
        } => serve::init(
            &data_dir,
            passphrase_file.as_deref(),
            &partition,
            store,
            client.output,
        ),
        Command::Serve(args) => serve::serve(*args),
        Command::Key(command) => commands::run_client(client, |c| commands::key(c, command)),
        Command::Alias(command) => commands::run_client(client, |c| commands::alias(c, command)),
        Command::Grant(command) => commands::run_client(client, |c| grants::grant(c, command)),
        Command::Encrypt(args) => commands::run_client(client, |c| crypto::encrypt(c, args)),
        Command::Decrypt(args) => commands::run_client(client, |c| crypto::decrypt(c, args)),
        Command::ReEncrypt(args) => commands::run_client(client, |c| crypto::re_encrypt(c, args)),
        Command::DataKey(args) => commands::run_client(client, |c| crypto::data_key(c, args)),
        Command::DataKeyPair(args) => {
            commands::run_client(client, |c| crypto::data_key_pair(c, args))
        }
        Command::DeriveSharedSecret(args) => {
            commands::run_client(client, |c| crypto::derive_shared_secret(c, args))
        }
        Command::Random(args) => commands::run_client(client, |c| crypto::random(c, args)),
        Command::Mac(command) => commands::run_client(client, |c| crypto::mac(c, command)),
        Command::Sign(args) => commands::run_client(client, |c| crypto::sign(c, args)),
        Command::Verify(args) => commands::run_client(client, |c| crypto::verify(c, args)),
        Command::GetPublicKey(args) => {
            commands::run_client(client, |c| crypto::get_public_key(c, args))
        }
        Command::Batch(command) => commands::run_client(client, |c| batch::batch(c, command)),
        Command::Policy(identity::PolicyCommand::Validate {
            policy_file,
            policy_type,
        }) => identity::validate_policy(
            &policy_file,
            policy_type,
            Output {
                format: client.output,
            },
        ),
        Command::Policy(command) => commands::run_client(client, |c| identity::policy(c, command)),
        Command::User(command) => commands::run_client(client, |c| {
            identity::entity(c, crate::proto::v1::EntityType::User, command)
        }),
        Command::Group(command) => commands::run_client(client, |c| {
            identity::entity(c, crate::proto::v1::EntityType::Group, command)
        }),
        Command::Role(command) => commands::run_client(client, |c| {
            identity::entity(c, crate::proto::v1::EntityType::Role, command)
        }),
        Command::AccessKey(command) => {
            commands::run_client(client, |c| identity::access_key(c, command))
        }
        Command::AssumeRole(args) => {
            commands::run_client(client, |c| identity::assume_role(c, args))
        }
        Command::Mfa(command) => commands::run_client(client, |c| mfa::mfa(c, command)),
        Command::Org(command) => commands::run_client(client, |c| org::org(c, command)),
        Command::LoginProfile(command) => {
            commands::run_client(client, |c| passwords::login_profile(c, command))
        }
        Command::PasswordPolicy(command) => {
            commands::run_client(client, |c| passwords::password_policy(c, command))
        }
        Command::ChangePassword(args) => {
            commands::run_client(client, |c| passwords::change_password(c, args))
        }
        Command::SignIn(args) => commands::run_unsigned(client, |c| passwords::sign_in(c, args)),
        Command::OidcProvider(command) => {
            commands::run_client(client, |c| federation::oidc_provider(c, command))
        }
        Command::AssumeRoleWithWebIdentity(args) => commands::run_unsigned(client, |c| {
            federation::assume_role_with_web_identity(c, args)
        }),
        Command::SessionToken(args) => {
            commands::run_client(client, |c| mfa::session_token(c, args))
        }
        Command::Approval(command) => {
            commands::run_client(client, |c| approval::approval(c, command))
        }
        Command::Whoami => commands::run_client(client, identity::whoami),
        Command::Audit(audit::AuditCommand::Tail { lines, follow }) => {
            commands::run_client(client, |c| audit::tail(c, lines, follow))
        }
        Command::Audit(audit::AuditCommand::Verify {
            file,
            data_dir,
            passphrase_file,
            store,
        }) => audit::verify(
            file,
            data_dir,
            passphrase_file,
            *store,
            client.output == OutputFormat::Json,
        ),
        Command::Keystore(command) => {
            commands::run_client(client, |c| keystore::keystore(c, command))
        }
        Command::Bench(args) => bench::run(client, args),
        Command::Store(command) => store::run(command, client.output),
        Command::Cluster(command) => cluster::run(command, client.output),
    }
}
