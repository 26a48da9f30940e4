//! Imported key material: import parameters, import and deletion.

use super::*;

impl KmsOperations {
    pub async fn get_parameters_for_import(
        &self,
        call: &CallContext,
        request: v1::GetParametersForImportRequest,
    ) -> Outcome<v1::GetParametersForImportResponse> {
        let r = request;
        let mut context = self.context(call);
        context
            .set("kms:WrappingAlgorithm", r.wrapping_algorithm.clone())
            .set("kms:WrappingKeySpec", r.wrapping_key_spec.clone());
        let key = self
            .authorizer
            .key(
                call,
                "kms:GetParametersForImport",
                &r.key_id,
                false,
                &context,
                &GrantAsk::Plain,
            )
            .await?
            .id
            .hyphenated()
            .to_string();
        let parameters = self
            .keys
            .get_parameters_for_import(&key, &r.wrapping_algorithm, &r.wrapping_key_spec)
            .await?;
        Ok(v1::GetParametersForImportResponse {
            key_id: self.arn(parameters.key_id),
            import_token: parameters.import_token,
            public_key: parameters.public_key,
            parameters_valid_to: parameters.valid_to,
        })
    }

    pub async fn import_key_material(
        &self,
        call: &CallContext,
        request: v1::ImportKeyMaterialRequest,
    ) -> Outcome<v1::ImportKeyMaterialResponse> {
        let r = request;
        let mut context = self.context(call);
        let model = match (r.expiration_model.as_str(), r.valid_to) {
            ("", Some(_)) => "KEY_MATERIAL_EXPIRES",
            ("", None) => "KEY_MATERIAL_DOES_NOT_EXPIRE",
            (model, _) => model,
        };
        context.set("kms:ExpirationModel", model.to_owned());
        if let Some(valid_to) = r.valid_to {
            context.set("kms:ValidTo", valid_to.to_string());
        }
        let key = self
            .authorizer
            .key(
                call,
                "kms:ImportKeyMaterial",
                &r.key_id,
                false,
                &context,
                &GrantAsk::Plain,
            )
            .await?
            .id
            .hyphenated()
            .to_string();
        let record = self
            .keys
            .import_key_material(
                &key,
                &r.import_token,
                &r.encrypted_key_material,
                &r.expiration_model,
                r.valid_to,
            )
            .await?;
        Ok(v1::ImportKeyMaterialResponse {
            key_id: self.arn(record.id),
        })
    }

    pub async fn delete_imported_key_material(
        &self,
        call: &CallContext,
        request: v1::DeleteImportedKeyMaterialRequest,
    ) -> Outcome<v1::DeleteImportedKeyMaterialResponse> {
        let key = self
            .key(call, "kms:DeleteImportedKeyMaterial", &request.key_id)
            .await?;
        let parameters = serde_json::json!({ "KeyId": self.key_arn(&key)? });
        self.approval_gate(call, "kms:DeleteImportedKeyMaterial", &key, parameters)
            .await?;
        let record = self.keys.delete_imported_key_material(&key).await?;
        Ok(v1::DeleteImportedKeyMaterialResponse {
            key_id: self.arn(record.id),
        })
    }
}
