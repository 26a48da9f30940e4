//! Aliases: friendly names that point at one key each.

use super::*;

impl KeyService {
    pub(super) fn alias_target(&self, target: &str) -> Result<Arc<KeyEntry>, KeyError> {
        match KeyReference::parse(target, &self.arn_prefix)? {
            KeyReference::Alias(_) => Err(KeyError::Validation(
                "TargetKeyId must be a key id or key ARN, not an alias".into(),
            )),
            KeyReference::Id(_) => {
                let entry = self.resolve(target, false)?;
                entry.record().require_active("CreateAlias")?;
                Ok(entry)
            }
        }
    }

    pub async fn create_alias(&self, alias: &str, target: &str) -> Result<(), KeyError> {
        validate_alias_name(alias)?;
        let _gate = self.alias_gate.lock().await;
        let entry = self.alias_target(target)?;
        if self.alias(alias)?.is_some() {
            return Err(KeyError::AlreadyExists(format!(
                "alias '{alias}' already exists"
            )));
        }
        // Checked under the gate, so concurrent creates cannot overshoot the quota.
        let held = self
            .aliases
            .read()
            .map_err(|_| KeyError::Internal("alias lock poisoned".into()))?
            .len();
        if held >= self.config.alias_quota {
            return Err(KeyError::LimitExceeded(format!(
                "the account already has the most aliases it may hold ({})",
                self.config.alias_quota
            )));
        }
        let now = self.now();
        let record = AliasEntry {
            name: alias.to_owned(),
            target: entry.record().id,
            created: now,
            updated: now,
        };
        self.write_alias(record).await
    }

    /// UpdateAlias: points `alias` at `target` if it still points at `from`, the key the
    /// caller was authorised on. Returns false, changing nothing, when it has moved since: the
    /// caller must then be authorised on the key it points at now.
    pub async fn update_alias(
        &self,
        alias: &str,
        target: &str,
        from: Uuid,
    ) -> Result<bool, KeyError> {
        validate_alias_name(alias)?;
        let _gate = self.alias_gate.lock().await;
        let entry = self.alias_target(target)?;
        let mut record = self.alias(alias)?.ok_or_else(|| {
            KeyError::NotFound(format!("alias '{}' does not exist", printable(alias)))
        })?;
        if record.target != from {
            return Ok(false);
        }
        record.target = entry.record().id;
        record.updated = self.now();
        self.write_alias(record).await?;
        Ok(true)
    }

    /// DeleteAlias: deletes `alias` if it still points at `from`, the key the caller was
    /// authorised on; false, changing nothing, when it has moved since.
    pub async fn delete_alias(&self, alias: &str, from: Uuid) -> Result<bool, KeyError> {
        validate_alias_name(alias)?;
        let _gate = self.alias_gate.lock().await;
        match self.alias(alias)? {
            None => {
                return Err(KeyError::NotFound(format!(
                    "alias '{}' does not exist",
                    printable(alias)
                )));
            }
            Some(record) if record.target != from => return Ok(false),
            Some(_) => {}
        }
        let mut batch = WriteBatch::new();
        batch.delete(alias_record_name(alias));
        self.store.commit(batch).await?;
        self.aliases
            .write()
            .map_err(|_| KeyError::Internal("alias lock poisoned".into()))?
            .remove(alias);
        Ok(true)
    }

    pub(super) fn alias(&self, alias: &str) -> Result<Option<AliasEntry>, KeyError> {
        Ok(self
            .aliases
            .read()
            .map_err(|_| KeyError::Internal("alias lock poisoned".into()))?
            .get(alias)
            .cloned())
    }

    pub(super) async fn write_alias(&self, record: AliasEntry) -> Result<(), KeyError> {
        let mut batch = WriteBatch::new();
        batch.put(alias_record_name(&record.name), encode(&record)?);
        self.store.commit(batch).await?;
        self.aliases
            .write()
            .map_err(|_| KeyError::Internal("alias lock poisoned".into()))?
            .insert(record.name.clone(), record);
        Ok(())
    }

    /// ListAliases: a page in name order, optionally only those of one key.
    pub fn list_aliases(
        &self,
        key: Option<&str>,
        limit: u32,
        marker: &str,
    ) -> Result<ListPage<AliasEntry>, KeyError> {
        let limit = page_limit(limit)?;
        let target = key.map(|k| self.resolve_id(k)).transpose()?;
        let aliases = self
            .aliases
            .read()
            .map_err(|_| KeyError::Internal("alias lock poisoned".into()))?;
        let start = if marker.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(marker.to_owned())
        };
        let mut items = Vec::with_capacity(limit.min(64));
        let mut more = false;
        for alias in aliases.range((start, Bound::Unbounded)).map(|(_, a)| a) {
            if target.is_some_and(|t| t != alias.target) {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(alias.clone());
        }
        let next_marker = if more {
            items.last().map(|a| a.name.clone())
        } else {
            None
        };
        Ok(ListPage { items, next_marker })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_names() {
        for good in ["alias/app", "alias/team/app-1_x"] {
            validate_alias_name(good).unwrap();
        }
        for bad in [
            "app",
            "alias/",
            "alias/aws/x",
            "alias/a b",
            "alias/é",
            &format!("alias/{}", "a".repeat(251)),
        ] {
            assert!(validate_alias_name(bad).is_err(), "{bad}");
        }
    }
}
