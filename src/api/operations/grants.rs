//! The grant operations (CreateGrant, ListGrants, ListRetirableGrants, RetireGrant,
//! RevokeGrant), and the check of the grant tokens a call carries.
//!
//! Who may do what, as AWS KMS: CreateGrant, ListGrants and RevokeGrant are authorised on the
//! key like any key action (CreateGrant also by a grant that holds it, for a subset of that
//! grant's operations under a constraint at least as narrow); ListRetirableGrants by identity
//! policies; RetireGrant by no policy at all but by the grant itself: its retiring principal,
//! its grantee when it holds `RetireGrant`, or whoever presents its token.

use super::kms::{KmsOperations, Outcome};
use crate::api::authorize::{CallContext, grantee_entity};
use crate::api::status::ApiError;
use crate::keys::{Grant, KeyError, NewGrant, printable_input, validate_new_grant};
use crate::policy::{GrantAsk, GrantConstraint, RequestContext};
use crate::proto::v1;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Most grant tokens one request may carry (as AWS KMS).
const MAX_GRANT_TOKENS: usize = 10;
/// Longest principal ARN a grant names.
const MAX_PRINCIPAL: usize = 256;

fn validation(message: impl Into<String>) -> ApiError {
    KeyError::Validation(message.into()).into()
}

/// A request's `Constraints`, as one constraint (an empty or absent one is none).
fn constraint_of(constraints: Option<v1::GrantConstraints>) -> Result<GrantConstraint, ApiError> {
    let Some(c) = constraints else {
        return Ok(GrantConstraint::None);
    };
    let sorted = |m: std::collections::HashMap<String, String>| -> BTreeMap<_, _> {
        m.into_iter().collect()
    };
    match (
        c.encryption_context_equals.is_empty(),
        c.encryption_context_subset.is_empty(),
    ) {
        (true, true) => Ok(GrantConstraint::None),
        (false, true) => Ok(GrantConstraint::EncryptionContextEquals(sorted(
            c.encryption_context_equals,
        ))),
        (true, false) => Ok(GrantConstraint::EncryptionContextSubset(sorted(
            c.encryption_context_subset,
        ))),
        (false, false) => Err(validation(
            "Constraints may have EncryptionContextEquals or EncryptionContextSubset, not both",
        )),
    }
}

fn constraints_of(constraint: &GrantConstraint) -> Option<v1::GrantConstraints> {
    let map = |m: &BTreeMap<String, String>| m.clone().into_iter().collect();
    match constraint {
        GrantConstraint::None => None,
        GrantConstraint::EncryptionContextEquals(pairs) => Some(v1::GrantConstraints {
            encryption_context_equals: map(pairs),
            ..Default::default()
        }),
        GrantConstraint::EncryptionContextSubset(pairs) => Some(v1::GrantConstraints {
            encryption_context_subset: map(pairs),
            ..Default::default()
        }),
    }
}

/// A principal a grant names: an ARN of bounded length.
fn principal(member: &str, arn: &str) -> Result<String, ApiError> {
    if !arn.starts_with("arn:") || arn.len() > MAX_PRINCIPAL || arn.chars().any(char::is_control) {
        return Err(validation(format!(
            "{member} must be a principal ARN of at most {MAX_PRINCIPAL} characters; got '{}'",
            printable_input(arn)
        )));
    }
    Ok(arn.to_owned())
}

impl KmsOperations {
    fn entry(&self, grant: &Grant) -> v1::GrantListEntry {
        v1::GrantListEntry {
            key_id: self.arn(grant.key_id),
            grant_id: grant.grant_id.clone(),
            name: grant.name.clone(),
            creation_date: grant.created,
            grantee_principal: grant.grantee.clone(),
            retiring_principal: grant.retiring_principal.clone(),
            issuing_account: format!(
                "arn:{}:iam::{}:root",
                self.keys.config().partition,
                grant.issuing_account
            ),
            operations: grant.operations.clone(),
            constraints: constraints_of(&grant.constraint),
        }
    }

    /// Checks the grant tokens a call carries: each must be a token this service made for a
    /// grant that is still live (`InvalidGrantTokenException` otherwise). Grants are durable
    /// before CreateGrant answers, so a valid token adds nothing the grant does not already
    /// allow; it is checked so that a forged or stale one is refused, as AWS KMS does.
    pub async fn accept_grant_tokens(
        &self,
        call: &CallContext,
        tokens: &[String],
    ) -> Result<(), ApiError> {
        if tokens.len() > MAX_GRANT_TOKENS {
            return Err(validation(format!(
                "GrantTokens has at most {MAX_GRANT_TOKENS} members"
            )));
        }
        // The token of a grant another daemon has just made is heard of before it is judged:
        // what a grant token is for.
        self.keys
            .hear_of(call.asked, |keys| {
                tokens.iter().all(|t| keys.grant_by_token(t).is_ok())
            })
            .await;
        for token in tokens {
            self.keys.grant_by_token(token)?;
        }
        Ok(())
    }

    /// The condition keys of a CreateGrant.
    fn grant_context(
        &self,
        call: &CallContext,
        grantee: &str,
        retiring: Option<&str>,
        operations: &[String],
        constraint: &GrantConstraint,
    ) -> RequestContext {
        let mut context = self.context(call);
        context
            .set_all(
                "kms:GrantOperations",
                operations.iter().map(|o| o.to_owned()).collect(),
            )
            .set("kms:GranteePrincipal", grantee)
            .set("kms:GrantIsForAWSResource", "false");
        if let Some(retiring) = retiring {
            context.set("kms:RetiringPrincipal", retiring);
        }
        if let Some(kind) = constraint.type_name() {
            context.set("kms:GrantConstraintType", kind);
        }
        context
    }

    /// The unique id of a grantee that is a user or role of an account this daemon serves
    /// (which must exist): this account's or another of the organisation's; `None` for
    /// other principals. A grantee another daemon has just made is heard of before it is
    /// judged missing.
    async fn grantee_unique_id(
        &self,
        call: &CallContext,
        grantee: &str,
    ) -> Result<Option<String>, ApiError> {
        let served = grantee
            .split(':')
            .nth(4)
            .and_then(|account| self.authorizer.iam_of(account));
        match (grantee_entity(grantee), served) {
            (Some((kind, name)), Some(iam)) => {
                self.keys
                    .hear_of(call.asked, |_| iam.unique_id(kind, name).is_some())
                    .await;
                match iam.unique_id(kind, name) {
                    Some(id) => Ok(Some(id)),
                    None => Err(validation(format!(
                        "GranteePrincipal '{}' names no principal of its account",
                        printable_input(grantee)
                    ))),
                }
            }
            _ => Ok(None),
        }
    }

    pub async fn create_grant(
        &self,
        call: &CallContext,
        request: v1::CreateGrantRequest,
    ) -> Outcome<v1::CreateGrantResponse> {
        let r = request;
        self.accept_grant_tokens(call, &r.grant_tokens).await?;
        let constraint = constraint_of(r.constraints)?;
        validate_new_grant(&r.operations, &constraint, &r.name)?;
        let grantee = principal("GranteePrincipal", &r.grantee_principal)?;
        let retiring = r
            .retiring_principal
            .as_deref()
            .filter(|p| !p.is_empty())
            .map(|p| principal("RetiringPrincipal", p))
            .transpose()?;
        let context = self.grant_context(
            call,
            &grantee,
            retiring.as_deref(),
            &r.operations,
            &constraint,
        );
        let ask = GrantAsk::NewGrant {
            operations: &r.operations,
            constraint: &constraint,
        };
        let record = self
            .authorizer
            .key(call, "kms:CreateGrant", &r.key_id, false, &context, &ask)
            .await?;
        let grantee_unique_id = self.grantee_unique_id(call, &grantee).await?;
        let (grant, token) = self
            .keys
            .create_grant(
                record.id,
                NewGrant {
                    name: r.name,
                    grantee,
                    grantee_unique_id,
                    retiring_principal: retiring,
                    issuer: call.caller.principal.arn.clone(),
                    operations: r.operations,
                    constraint,
                },
            )
            .await?;
        call.audit.add_grant(grant.grant_id.clone());
        Ok(v1::CreateGrantResponse {
            grant_token: token,
            grant_id: grant.grant_id.clone(),
        })
    }

    pub async fn list_grants(
        &self,
        call: &CallContext,
        request: v1::ListGrantsRequest,
    ) -> Outcome<v1::ListGrantsResponse> {
        let r = &request;
        let context = self.context(call);
        let record = self
            .authorizer
            .key(
                call,
                "kms:ListGrants",
                &r.key_id,
                false,
                &context,
                &GrantAsk::Plain,
            )
            .await?;
        if !r.grant_id.is_empty() {
            // A grant another daemon has just made is heard of before it is judged missing.
            self.keys
                .hear_of(call.asked, |keys| keys.knows_grant(record.id, &r.grant_id))
                .await;
        }
        let page = self.keys.list_grants(
            record.id,
            Some(r.grant_id.as_str()).filter(|s| !s.is_empty()),
            Some(r.grantee_principal.as_str()).filter(|s| !s.is_empty()),
            r.limit,
            &r.marker,
        )?;
        Ok(v1::ListGrantsResponse {
            grants: page.items.iter().map(|g| self.entry(g)).collect(),
            truncated: page.next_marker.is_some(),
            next_marker: page.next_marker.unwrap_or_default(),
        })
    }

    pub async fn list_retirable_grants(
        &self,
        call: &CallContext,
        request: v1::ListRetirableGrantsRequest,
    ) -> Outcome<v1::ListGrantsResponse> {
        let r = &request;
        let retiring = principal("RetiringPrincipal", &r.retiring_principal)?;
        let context = self.context(call);
        self.authorizer
            .require(call, "kms:ListRetirableGrants", "*", None, &context)?;
        let page = self
            .keys
            .list_retirable_grants(&retiring, r.limit, &r.marker)?;
        Ok(v1::ListGrantsResponse {
            grants: page.items.iter().map(|g| self.entry(g)).collect(),
            truncated: page.next_marker.is_some(),
            next_marker: page.next_marker.unwrap_or_default(),
        })
    }

    /// The grant a RetireGrant names: by its token, or by its key and id. A key or grant that
    /// does not exist answers the same `NotFoundException`.
    async fn grant_to_retire(
        &self,
        call: &CallContext,
        r: &v1::RetireGrantRequest,
    ) -> Result<(Grant, bool), ApiError> {
        // A grant (or its key) another daemon has just made is heard of before it is judged.
        self.keys
            .hear_of(call.asked, |keys| match r.grant_token.is_empty() {
                false => keys.grant_by_token(&r.grant_token).is_ok(),
                true if r.key_id.is_empty() || r.grant_id.is_empty() => true,
                true => keys
                    .lookup(&r.key_id, false)
                    .is_ok_and(|key| keys.knows_grant(key.id, &r.grant_id)),
            })
            .await;
        if !r.grant_token.is_empty() {
            let grant = self.keys.grant_by_token(&r.grant_token)?;
            if !r.grant_id.is_empty() && r.grant_id != grant.grant_id {
                return Err(validation(
                    "GrantId does not name the grant GrantToken is for",
                ));
            }
            if !r.key_id.is_empty()
                && self.keys.lookup(&r.key_id, false).map(|k| k.id).ok() != Some(grant.key_id)
            {
                return Err(validation("KeyId does not name the key GrantToken is for"));
            }
            return Ok(((*grant).clone(), true));
        }
        if r.key_id.is_empty() || r.grant_id.is_empty() {
            return Err(validation(
                "RetireGrant needs GrantToken, or KeyId and GrantId",
            ));
        }
        let missing = || -> ApiError {
            KeyError::NotFound(format!(
                "grant '{}' of key '{}' does not exist",
                printable_input(&r.grant_id),
                printable_input(&r.key_id)
            ))
            .into()
        };
        let key = self.keys.lookup(&r.key_id, false).map_err(|_| missing())?;
        let grant = self.keys.grant(key.id, &r.grant_id).ok_or_else(missing)?;
        Ok(((*grant).clone(), false))
    }

    pub async fn retire_grant(
        &self,
        call: &CallContext,
        request: v1::RetireGrantRequest,
    ) -> Outcome<v1::RetireGrantResponse> {
        let (grant, by_token) = self.grant_to_retire(call, &request).await?;
        call.audit.add_key(self.arn(grant.key_id));
        call.audit.add_grant(grant.grant_id.clone());
        let principals = call
            .caller
            .principal
            .policy_arns(self.authorizer.iam().partition());
        let retiring = grant
            .retiring_principal
            .as_ref()
            .is_some_and(|p| principals.contains(p));
        // The grantee, while it is still the principal the grant was made for.
        let grantee = grant.holds("RetireGrant")
            && self
                .authorizer
                .grant_rules(grant.key_id, &call.caller.principal)
                .iter()
                .any(|g| g.grant_id == grant.grant_id && principals.contains(&g.grantee));
        if !(by_token || retiring || grantee) {
            return Err(KeyError::AccessDenied(format!(
                "{} is not authorized to perform kms:RetireGrant on grant {}",
                call.caller.principal.arn, grant.grant_id
            ))
            .into());
        }
        self.keys
            .remove_grant(call.asked, grant.key_id, &grant.grant_id)
            .await?;
        Ok(v1::RetireGrantResponse {})
    }

    pub async fn revoke_grant(
        &self,
        call: &CallContext,
        request: v1::RevokeGrantRequest,
    ) -> Outcome<v1::RevokeGrantResponse> {
        let r = &request;
        let context = self.context(call);
        let record = self
            .authorizer
            .key(
                call,
                "kms:RevokeGrant",
                &r.key_id,
                false,
                &context,
                &GrantAsk::Plain,
            )
            .await?;
        call.audit.add_grant(printable_input(&r.grant_id));
        let key: Uuid = record.id;
        self.keys.remove_grant(call.asked, key, &r.grant_id).await?;
        Ok(v1::RevokeGrantResponse {})
    }
}
