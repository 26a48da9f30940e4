//! Tags on keys.

use super::*;

impl KeyService {
    pub async fn tag_key(&self, key: &str, tags: BTreeMap<String, String>) -> Result<(), KeyError> {
        validate_tags(&tags)?;
        let entry = self.resolve(key, false)?;
        self.change_key(&entry, |record| {
            record.require_active("TagResource")?;
            record.tags.extend(tags.clone());
            validate_tags(&record.tags)?;
            Ok(WriteBatch::new())
        })
        .await
        .map(|_| ())
    }

    pub async fn untag_key(&self, key: &str, tag_keys: Vec<String>) -> Result<(), KeyError> {
        let entry = self.resolve(key, false)?;
        self.change_key(&entry, |record| {
            record.require_active("UntagResource")?;
            for tag in &tag_keys {
                record.tags.remove(tag);
            }
            Ok(WriteBatch::new())
        })
        .await
        .map(|_| ())
    }

    pub fn list_tags(&self, key: &str) -> Result<BTreeMap<String, String>, KeyError> {
        Ok(self.resolve(key, false)?.record().tags.clone())
    }
}
