//! Inline policies of users, groups and roles (put, get, delete, list, within AWS IAM's
//! limits), and the identity policies that apply to a caller, parsed and cached.

use super::policy_cache::IdentityPolicies;
use super::{Entity, EntityType, IamError, IamService, MAX_INLINE_POLICIES, validate_name};
use crate::auth::{Principal, PrincipalKind};
use crate::policy::{NamedPolicy, Policy, PolicyKind};
use std::sync::Arc;

impl IamService {
    pub async fn put_policy(
        &self,
        kind: EntityType,
        name: &str,
        policy_name: &str,
        document: String,
    ) -> Result<(), IamError> {
        validate_name("policy", policy_name)?;
        let limit = kind.inline_policy_chars();
        let size = document.chars().count();
        if size > limit {
            return Err(IamError::LimitExceeded(format!(
                "the inline policies of a {} total at most {limit} characters; this one has {size}",
                kind.as_str()
            )));
        }
        Policy::parse(&document, PolicyKind::Identity)?;
        let _gate = self.lock_gate().await;
        let mut entity = self.require(kind, name)?;
        if !entity.policies.contains_key(policy_name)
            && entity.policies.len() >= MAX_INLINE_POLICIES
        {
            return Err(IamError::LimitExceeded(format!(
                "a {} has at most {MAX_INLINE_POLICIES} inline policies",
                kind.as_str()
            )));
        }
        let others: usize = entity
            .policies
            .iter()
            .filter(|(existing, _)| existing.as_str() != policy_name)
            .map(|(_, text)| text.chars().count())
            .sum();
        if others + size > limit {
            return Err(IamError::LimitExceeded(format!(
                "the inline policies of a {} total at most {limit} characters; with this one \
                 they would have {}",
                kind.as_str(),
                others + size
            )));
        }
        entity.policies.insert(policy_name.to_owned(), document);
        self.commit(vec![(kind, entity)], vec![]).await
    }

    pub fn get_policy(
        &self,
        kind: EntityType,
        name: &str,
        policy_name: &str,
    ) -> Result<String, IamError> {
        self.require(kind, name)?
            .policies
            .get(policy_name)
            .cloned()
            .ok_or_else(|| {
                IamError::NotFound(format!(
                    "the {} '{name}' has no policy '{}'",
                    kind.as_str(),
                    crate::keys::printable_input(policy_name)
                ))
            })
    }

    pub async fn delete_policy(
        &self,
        kind: EntityType,
        name: &str,
        policy_name: &str,
    ) -> Result<(), IamError> {
        let _gate = self.lock_gate().await;
        let mut entity = self.require(kind, name)?;
        if entity.policies.remove(policy_name).is_none() {
            return Err(IamError::NotFound(format!(
                "the {} '{name}' has no policy '{}'",
                kind.as_str(),
                crate::keys::printable_input(policy_name)
            )));
        }
        self.commit(vec![(kind, entity)], vec![]).await
    }

    pub fn list_policies(&self, kind: EntityType, name: &str) -> Result<Vec<String>, IamError> {
        Ok(self.require(kind, name)?.policies.keys().cloned().collect())
    }

    /// The identity policies of a principal: a user's own and its groups', a role session's
    /// role's. `None` for the account root, whose identity is unrestricted.
    pub fn identity_policies(&self, principal: &Principal) -> Option<IdentityPolicies> {
        if principal.kind == PrincipalKind::Root {
            return None;
        }
        // Asked before the entities are read: a change after this point makes the cache drop
        // what is read below.
        let miss = match self.policies.get(&principal.arn) {
            Ok(cached) => return Some(cached),
            Err(miss) => miss,
        };
        let policies = self.read_identity_policies(principal);
        self.policies.insert(miss, &principal.arn, policies.clone());
        Some(policies)
    }

    /// A principal's identity policies as the entities say now, parsed.
    pub(super) fn read_identity_policies(&self, principal: &Principal) -> IdentityPolicies {
        let mut policies = Vec::new();
        let mut add = |owner: String, entity: &Entity| {
            for (name, text) in &entity.policies {
                // One that no longer parses fails closed: its Denies may be what kept the
                // principal out.
                let policy = Policy::parse_stored(text, PolicyKind::Identity).unwrap_or_else(|e| {
                    tracing::error!(policy = %format!("{owner}/{name}"), error = %e,
                        "a stored identity policy cannot be read; it denies everything");
                    Policy::deny_all(PolicyKind::Identity)
                });
                policies.push(NamedPolicy {
                    name: format!("{owner}/{name}"),
                    policy: Arc::new(policy),
                });
            }
        };
        {
            let entities = self.read();
            match &principal.kind {
                PrincipalKind::Root => {}
                PrincipalKind::User { name } => {
                    if let Some(user) = entities.get(EntityType::User, name) {
                        add(format!("user/{name}"), user);
                        for group in &user.groups {
                            if let Some(g) = entities.get(EntityType::Group, group) {
                                add(format!("group/{group}"), g);
                            }
                        }
                    }
                }
                PrincipalKind::AssumedRole { role, .. } => {
                    if let Some(r) = entities.get(EntityType::Role, role) {
                        add(format!("role/{role}"), r);
                    }
                }
            }
        }
        Arc::new(policies)
    }
}
