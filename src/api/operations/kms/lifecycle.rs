//! Key lifecycle: create, describe, list, enable and disable, deletion, aliases, tags,
//! rotation and key policies.

use super::*;

impl KmsOperations {
    pub async fn create_key(
        &self,
        call: &CallContext,
        request: v1::CreateKeyRequest,
    ) -> Outcome<v1::CreateKeyResponse> {
        let r = request;
        let spec = crate::keys::key_spec_and_usage(&r.key_spec, &r.key_usage)?;
        let origin = MaterialOrigin::parse(&r.origin)?;
        let mut context = self.context(call);
        context
            .set("kms:KeySpec", spec.0.as_str())
            .set("kms:KeyUsage", spec.1.as_str())
            .set(
                "kms:KeyOrigin",
                match origin {
                    MaterialOrigin::External => "EXTERNAL",
                    MaterialOrigin::Generated => "AWS_KMS",
                },
            );
        // The keystore the key would be made in, named as in `keyhaven keystore list`.
        context.set(
            "keyhaven:KeyStore",
            self.keys.keystore_named(non_empty(&r.keystore)),
        );
        self.authorizer
            .require(call, "kms:CreateKey", "*", None, &context)?;
        let policy = non_empty(&r.policy).map(str::to_owned);
        if let Some(text) = &policy {
            crate::keys::validate_key_policy_size(text)?;
            let parsed = Policy::parse(text, PolicyKind::Resource)
                .map_err(|e| KeyError::MalformedPolicy(e.0))?;
            self.lockout_check(call, "*", parsed, r.bypass_policy_lockout_safety_check)?;
        }
        let record = self
            .keys
            .create_key_from(
                r.description,
                non_empty(&r.keystore),
                tags(r.tags)?,
                policy,
                spec,
                origin,
            )
            .await?;
        call.audit.add_key(self.arn(record.id));
        Ok(v1::CreateKeyResponse {
            key_metadata: Some(self.metadata(&record)),
        })
    }

    pub async fn describe_key(
        &self,
        call: &CallContext,
        request: v1::DescribeKeyRequest,
    ) -> Outcome<v1::DescribeKeyResponse> {
        let context = self.context(call);
        let record = self
            .authorizer
            .key(
                call,
                "kms:DescribeKey",
                &request.key_id,
                true,
                &context,
                &GrantAsk::Plain,
            )
            .await?;
        Ok(v1::DescribeKeyResponse {
            key_metadata: Some(self.metadata(&record)),
        })
    }

    pub async fn list_keys(
        &self,
        call: &CallContext,
        request: v1::ListKeysRequest,
    ) -> Outcome<v1::ListKeysResponse> {
        self.anywhere(call, "kms:ListKeys")?;
        let r = &request;
        let page = self.keys.list_keys(r.limit, &r.marker)?;
        Ok(v1::ListKeysResponse {
            keys: page
                .items
                .into_iter()
                .map(|id| v1::KeyListEntry {
                    key_id: id.hyphenated().to_string(),
                    key_arn: self.arn(id),
                })
                .collect(),
            truncated: page.next_marker.is_some(),
            next_marker: page.next_marker.unwrap_or_default(),
        })
    }

    pub async fn update_key_description(
        &self,
        call: &CallContext,
        request: v1::UpdateKeyDescriptionRequest,
    ) -> Outcome<v1::UpdateKeyDescriptionResponse> {
        let r = request;
        let key = self
            .key(call, "kms:UpdateKeyDescription", &r.key_id)
            .await?;
        self.keys.update_description(&key, r.description).await?;
        Ok(v1::UpdateKeyDescriptionResponse {})
    }

    pub async fn enable_key(
        &self,
        call: &CallContext,
        request: v1::EnableKeyRequest,
    ) -> Outcome<v1::EnableKeyResponse> {
        let key = self.key(call, "kms:EnableKey", &request.key_id).await?;
        self.keys.enable_key(&key).await?;
        Ok(v1::EnableKeyResponse {})
    }

    pub async fn disable_key(
        &self,
        call: &CallContext,
        request: v1::DisableKeyRequest,
    ) -> Outcome<v1::DisableKeyResponse> {
        let key = self.key(call, "kms:DisableKey", &request.key_id).await?;
        // A call the key's state refuses is refused now, not made an approval request.
        (*self.keys.lookup(&key, false)?).clone().disable()?;
        let parameters = serde_json::json!({ "KeyId": self.key_arn(&key)? });
        self.approval_gate(call, "kms:DisableKey", &key, parameters)
            .await?;
        self.keys.disable_key(&key).await?;
        Ok(v1::DisableKeyResponse {})
    }

    pub async fn schedule_key_deletion(
        &self,
        call: &CallContext,
        request: v1::ScheduleKeyDeletionRequest,
    ) -> Outcome<v1::ScheduleKeyDeletionResponse> {
        let r = &request;
        let mut context = self.context(call);
        context.set(
            "kms:ScheduleKeyDeletionPendingWindowInDays",
            r.pending_window_in_days
                .unwrap_or(crate::keys::DEFAULT_PENDING_DAYS)
                .to_string(),
        );
        let key = self
            .authorizer
            .key(
                call,
                "kms:ScheduleKeyDeletion",
                &r.key_id,
                false,
                &context,
                &GrantAsk::Plain,
            )
            .await?
            .id
            .hyphenated()
            .to_string();
        // A call the key's state or the window refuses is refused now, not made an approval
        // request (this changes a copy only).
        (*self.keys.lookup(&key, false)?)
            .clone()
            .schedule_deletion(self.keys.now(), r.pending_window_in_days)?;
        let parameters = serde_json::json!({
            "KeyId": self.key_arn(&key)?,
            "PendingWindowInDays": r.pending_window_in_days,
        });
        self.approval_gate(call, "kms:ScheduleKeyDeletion", &key, parameters)
            .await?;
        let record = self
            .keys
            .schedule_deletion(&key, r.pending_window_in_days)
            .await?;
        Ok(v1::ScheduleKeyDeletionResponse {
            key_id: self.arn(record.id),
            deletion_date: record.deletion_date.unwrap_or_default(),
            key_state: v1::KeyState::PendingDeletion as i32,
            pending_window_in_days: record.pending_window_days.unwrap_or_default(),
        })
    }

    pub async fn cancel_key_deletion(
        &self,
        call: &CallContext,
        request: v1::CancelKeyDeletionRequest,
    ) -> Outcome<v1::CancelKeyDeletionResponse> {
        let key = self
            .key(call, "kms:CancelKeyDeletion", &request.key_id)
            .await?;
        let record = self.keys.cancel_deletion(&key).await?;
        Ok(v1::CancelKeyDeletionResponse {
            key_id: self.arn(record.id),
        })
    }

    pub async fn create_alias(
        &self,
        call: &CallContext,
        request: v1::CreateAliasRequest,
    ) -> Outcome<v1::CreateAliasResponse> {
        let r = &request;
        // The alias by the caller's identity policies, the key by its key policy (as AWS).
        self.alias(call, "kms:CreateAlias", &r.alias_name)?;
        let key = self
            .alias_target(call, "kms:CreateAlias", &r.target_key_id)
            .await?;
        self.keys.create_alias(&r.alias_name, &key).await?;
        Ok(v1::CreateAliasResponse {})
    }

    pub async fn update_alias(
        &self,
        call: &CallContext,
        request: v1::UpdateAliasRequest,
    ) -> Outcome<v1::UpdateAliasResponse> {
        let r = &request;
        // The alias itself, then both the key it leaves and the key it joins must allow it.
        self.alias(call, "kms:UpdateAlias", &r.alias_name)?;
        let mut from = self
            .alias_key(call, "kms:UpdateAlias", &r.alias_name)
            .await?;
        let key = self
            .alias_target(call, "kms:UpdateAlias", &r.target_key_id)
            .await?;
        for _ in 0..ALIAS_ATTEMPTS {
            if self.keys.update_alias(&r.alias_name, &key, from).await? {
                return Ok(v1::UpdateAliasResponse {});
            }
            from = self
                .alias_key(call, "kms:UpdateAlias", &r.alias_name)
                .await?;
        }
        Err(alias_kept_moving(&r.alias_name))
    }

    pub async fn delete_alias(
        &self,
        call: &CallContext,
        request: v1::DeleteAliasRequest,
    ) -> Outcome<v1::DeleteAliasResponse> {
        let alias = &request.alias_name;
        self.alias(call, "kms:DeleteAlias", alias)?;
        for _ in 0..ALIAS_ATTEMPTS {
            let from = self.alias_key(call, "kms:DeleteAlias", alias).await?;
            if self.keys.delete_alias(alias, from).await? {
                return Ok(v1::DeleteAliasResponse {});
            }
        }
        Err(alias_kept_moving(alias))
    }

    pub async fn list_aliases(
        &self,
        call: &CallContext,
        request: v1::ListAliasesRequest,
    ) -> Outcome<v1::ListAliasesResponse> {
        self.anywhere(call, "kms:ListAliases")?;
        let r = &request;
        // A key named here is authorised as any key is, before it is looked up: whether it
        // exists is told only to callers allowed on it.
        let key = match non_empty(&r.key_id) {
            Some(key) => Some(self.key(call, "kms:ListAliases", key).await?),
            None => None,
        };
        let page = self.keys.list_aliases(key.as_deref(), r.limit, &r.marker)?;
        Ok(v1::ListAliasesResponse {
            aliases: page
                .items
                .into_iter()
                .map(|a| v1::AliasListEntry {
                    alias_arn: self.keys.alias_arn(&a.name),
                    alias_name: a.name,
                    target_key_id: a.target.hyphenated().to_string(),
                    creation_date: a.created,
                    last_updated_date: a.updated,
                })
                .collect(),
            truncated: page.next_marker.is_some(),
            next_marker: page.next_marker.unwrap_or_default(),
        })
    }

    pub async fn tag_resource(
        &self,
        call: &CallContext,
        request: v1::TagResourceRequest,
    ) -> Outcome<v1::TagResourceResponse> {
        let r = request;
        let key = self.key(call, "kms:TagResource", &r.key_id).await?;
        self.keys.tag_key(&key, tags(r.tags)?).await?;
        Ok(v1::TagResourceResponse {})
    }

    pub async fn untag_resource(
        &self,
        call: &CallContext,
        request: v1::UntagResourceRequest,
    ) -> Outcome<v1::UntagResourceResponse> {
        let r = request;
        let key = self.key(call, "kms:UntagResource", &r.key_id).await?;
        self.keys.untag_key(&key, r.tag_keys).await?;
        Ok(v1::UntagResourceResponse {})
    }

    pub async fn list_resource_tags(
        &self,
        call: &CallContext,
        request: v1::ListResourceTagsRequest,
    ) -> Outcome<v1::ListResourceTagsResponse> {
        let key = self
            .key(call, "kms:ListResourceTags", &request.key_id)
            .await?;
        let tags = self.keys.list_tags(&key)?;
        Ok(v1::ListResourceTagsResponse {
            tags: tags
                .into_iter()
                .map(|(tag_key, tag_value)| v1::Tag { tag_key, tag_value })
                .collect(),
        })
    }

    pub async fn rotate_key_on_demand(
        &self,
        call: &CallContext,
        request: v1::RotateKeyOnDemandRequest,
    ) -> Outcome<v1::RotateKeyOnDemandResponse> {
        let key = self
            .key(call, "kms:RotateKeyOnDemand", &request.key_id)
            .await?;
        let record = self.keys.rotate_key(&key).await?;
        Ok(v1::RotateKeyOnDemandResponse {
            key_id: self.arn(record.id),
            key_version: record.current_version(),
        })
    }

    pub async fn enable_key_rotation(
        &self,
        call: &CallContext,
        request: v1::EnableKeyRotationRequest,
    ) -> Outcome<v1::EnableKeyRotationResponse> {
        let r = &request;
        let key = self.key(call, "kms:EnableKeyRotation", &r.key_id).await?;
        self.keys
            .enable_rotation(&key, r.rotation_period_in_days)
            .await?;
        Ok(v1::EnableKeyRotationResponse {})
    }

    pub async fn disable_key_rotation(
        &self,
        call: &CallContext,
        request: v1::DisableKeyRotationRequest,
    ) -> Outcome<v1::DisableKeyRotationResponse> {
        let key = self
            .key(call, "kms:DisableKeyRotation", &request.key_id)
            .await?;
        self.keys.disable_rotation(&key).await?;
        Ok(v1::DisableKeyRotationResponse {})
    }

    pub async fn get_key_rotation_status(
        &self,
        call: &CallContext,
        request: v1::GetKeyRotationStatusRequest,
    ) -> Outcome<v1::GetKeyRotationStatusResponse> {
        let key = self
            .key(call, "kms:GetKeyRotationStatus", &request.key_id)
            .await?;
        let record = self.keys.rotation_status(&key)?;
        Ok(v1::GetKeyRotationStatusResponse {
            key_id: self.arn(record.id),
            key_rotation_enabled: record.rotation.enabled,
            rotation_period_in_days: record.rotation.period_days,
            next_rotation_date: record.rotation.next_rotation,
        })
    }

    pub async fn list_key_rotations(
        &self,
        call: &CallContext,
        request: v1::ListKeyRotationsRequest,
    ) -> Outcome<v1::ListKeyRotationsResponse> {
        let key = self
            .key(call, "kms:ListKeyRotations", &request.key_id)
            .await?;
        let record = self.keys.rotation_status(&key)?;
        Ok(v1::ListKeyRotationsResponse {
            key_id: self.arn(record.id),
            rotations: record
                .versions
                .iter()
                .map(|v| v1::KeyRotation {
                    key_version: v.number,
                    rotation_date: v.created,
                    rotation_type: v.rotation_type.as_str().into(),
                })
                .collect(),
        })
    }

    pub async fn get_key_policy(
        &self,
        call: &CallContext,
        request: v1::GetKeyPolicyRequest,
    ) -> Outcome<v1::GetKeyPolicyResponse> {
        let r = &request;
        policy_name(&r.policy_name)?;
        let key = self.key(call, "kms:GetKeyPolicy", &r.key_id).await?;
        Ok(v1::GetKeyPolicyResponse {
            policy: self.keys.get_key_policy(&key)?,
            policy_name: "default".into(),
        })
    }

    pub async fn put_key_policy(
        &self,
        call: &CallContext,
        request: v1::PutKeyPolicyRequest,
    ) -> Outcome<v1::PutKeyPolicyResponse> {
        let r = request;
        policy_name(&r.policy_name)?;
        let key = self.key(call, "kms:PutKeyPolicy", &r.key_id).await?;
        crate::keys::validate_key_policy_size(&r.policy)?;
        let parsed = Policy::parse(&r.policy, PolicyKind::Resource)
            .map_err(|e| KeyError::MalformedPolicy(e.0))?;
        let arn = self.keys.key_arn(self.keys.resolve_id(&key)?);
        self.lockout_check(call, &arn, parsed, r.bypass_policy_lockout_safety_check)?;
        let parameters = serde_json::json!({
            "KeyId": arn,
            "Policy": r.policy,
            "BypassPolicyLockoutSafetyCheck": r.bypass_policy_lockout_safety_check,
        });
        self.approval_gate(call, "kms:PutKeyPolicy", &key, parameters)
            .await?;
        self.keys.put_key_policy(&key, r.policy).await?;
        Ok(v1::PutKeyPolicyResponse {})
    }
}
