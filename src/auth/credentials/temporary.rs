//! Temporary credentials: sessions (STS, a role's, a user's own, a console sign-in's),
//! their issue against the per-principal limit, and their end (one, a user's sign-ins, the
//! expired ones).

use super::*;

/// What [`CredentialStore::issue_temporary`] is asked to issue.
struct TemporaryIssue {
    /// The stored principal (`assumed-role/<role>/<session>`, `user/<name>`, `root`).
    principal: String,
    principal_id: Option<String>,
    /// Live sessions of this principal count against `live_limit`; ending in `/`, those of
    /// every principal it starts (every session of a role).
    live_prefix: String,
    /// Who the sessions are of, for the refusal.
    owner: String,
    /// `sts` for role sessions, `iam` for a user's own.
    arn_service: &'static str,
    duration: i64,
    mfa_authenticated: Option<UnixSeconds>,
    signed_in: bool,
    live_limit: usize,
}

impl CredentialStore {
    /// Ends the sign-in sessions of user `user` (their temporary credentials made by signing
    /// in with a password), but `keep`: the user's password was reset, removed or changed.
    /// Returns how many ended.
    pub async fn end_sign_in_sessions(
        &self,
        user: &str,
        keep: Option<&str>,
    ) -> Result<usize, CredentialError> {
        let principal = format!("user/{user}");
        self.delete_where(|record| {
            record.principal == principal
                && record.signed_in
                && Some(record.access_key_id.as_str()) != keep
        })
        .await
    }

    /// Ends one session: its temporary credentials are removed (a sign-out). Long-term access
    /// keys are not sessions and are left alone; a key already gone is no error.
    pub async fn end_session(&self, access_key_id: &str) -> Result<(), CredentialError> {
        let _gate = self.gate.lock().await;
        let temporary = self
            .entry(access_key_id)
            .is_some_and(|e| e.record.session_token_sha256.is_some());
        if temporary {
            self.write(vec![], vec![access_key_id.to_owned()]).await?;
        }
        Ok(())
    }

    /// Temporary credentials for a session of the role whose unique id is `role_id`, valid for
    /// `duration` seconds; refused when the role already has `live_limit` sessions that have
    /// not expired (expired ones no longer count, whether or not the sweep has removed them).
    pub async fn create_session(
        &self,
        role: &str,
        role_id: &str,
        session_name: &str,
        duration: i64,
        live_limit: usize,
    ) -> Result<NewAccessKey, CredentialError> {
        self.create_role_session(role, role_id, session_name, duration, None, live_limit)
            .await
    }

    /// As [`create_session`](Self::create_session), for a session issued against an MFA code
    /// accepted at `mfa_authenticated`.
    pub async fn create_role_session(
        &self,
        role: &str,
        role_id: &str,
        session_name: &str,
        duration: i64,
        mfa_authenticated: Option<UnixSeconds>,
        live_limit: usize,
    ) -> Result<NewAccessKey, CredentialError> {
        let session = TemporaryIssue {
            principal: format!("assumed-role/{role}/{session_name}"),
            principal_id: Some(role_id.to_owned()),
            live_prefix: format!("assumed-role/{role}/"),
            owner: format!("role {role}"),
            arn_service: "sts",
            duration,
            mfa_authenticated,
            signed_in: false,
            live_limit,
        };
        self.issue_temporary(session).await
    }

    /// Temporary credentials of a user themselves (STS `GetSessionToken`): the same principal
    /// as the user's access keys, for `duration` seconds, issued against an MFA code when
    /// `mfa_authenticated` says when it was accepted. `user` `None` is the account root.
    /// `signed_in`: the session of a sign-in with a password.
    pub async fn create_user_session(
        &self,
        user: Option<(&str, &str)>,
        duration: i64,
        mfa_authenticated: Option<UnixSeconds>,
        signed_in: bool,
        live_limit: usize,
    ) -> Result<NewAccessKey, CredentialError> {
        let (principal, principal_id) = match user {
            Some((name, id)) => (format!("user/{name}"), Some(id.to_owned())),
            None => ("root".to_owned(), None),
        };
        let session = TemporaryIssue {
            live_prefix: principal.clone(),
            owner: principal.clone(),
            principal,
            principal_id,
            arn_service: "iam",
            duration,
            mfa_authenticated,
            signed_in,
            live_limit,
        };
        self.issue_temporary(session).await
    }

    async fn issue_temporary(
        &self,
        issue: TemporaryIssue,
    ) -> Result<NewAccessKey, CredentialError> {
        let TemporaryIssue {
            principal: principal_name,
            principal_id,
            live_prefix,
            owner,
            arn_service,
            duration,
            mfa_authenticated,
            signed_in,
            live_limit,
        } = issue;
        let now = self.clock.now();
        let (mut record, secret) = new_record(&self.master, &principal_name, now, "KHAS")?;
        let mut token_bytes = [0u8; 48];
        rand::rngs::OsRng.fill_bytes(&mut token_bytes);
        let token = SecretString::new(B64URL.encode(token_bytes));
        zeroize::Zeroize::zeroize(&mut token_bytes);
        record.expires = Some(now + duration);
        record.principal_id = principal_id;
        record.mfa_authenticated = mfa_authenticated;
        record.signed_in = signed_in;
        record.session_token_sha256 = Some(hex::encode(Sha256::digest(token.expose().as_bytes())));
        let id = record.access_key_id.clone();
        let _gate = self.gate.lock().await;
        let live = self
            .keys
            .read()
            .map(|keys| {
                keys.values()
                    .filter(|e| {
                        let principal = &e.record.principal;
                        (principal == &live_prefix
                            || (live_prefix.ends_with('/') && principal.starts_with(&live_prefix)))
                            && e.record.session_token_sha256.is_some()
                            && e.record.expires.is_some_and(|t| t > now)
                    })
                    .count()
            })
            .unwrap_or(0);
        if live >= live_limit {
            return Err(CredentialError::LimitExceeded(format!(
                "{owner} already has {live_limit} sessions that have not expired; \
                 try again when one has"
            )));
        }
        self.write(vec![record], vec![]).await?;
        Ok(NewAccessKey {
            credentials: Credentials {
                access_key_id: id,
                secret_access_key: secret,
                session_token: Some(token),
            },
            principal_arn: format!(
                "arn:{}:{arn_service}::{}:{principal_name}",
                self.partition, self.account_id
            ),
            created: now,
            expires: Some(now + duration),
        })
    }

    /// Removes temporary credentials that have expired. Returns their access key ids and
    /// principals.
    pub async fn remove_expired(&self) -> Result<Vec<(String, String)>, CredentialError> {
        let now = self.clock.now();
        let _gate = self.gate.lock().await;
        let expired: Vec<(String, String)> = self
            .keys
            .read()
            .map(|keys| {
                keys.values()
                    .filter(|e| e.record.expires.is_some_and(|t| t <= now))
                    .map(|e| (e.record.access_key_id.clone(), e.principal.arn.clone()))
                    .collect()
            })
            .unwrap_or_default();
        if !expired.is_empty() {
            let ids = expired.iter().map(|(id, _)| id.clone()).collect();
            self.write(vec![], ids).await?;
        }
        Ok(expired)
    }
}
