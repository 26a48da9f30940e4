//! Cryptography: encryption, data keys, random bytes, MACs, signatures, public keys, key
//! agreement and data key pairs; and the orphaned key material a device holds.

use super::*;

impl KmsOperations {
    pub async fn encrypt(
        &self,
        call: &CallContext,
        request: v1::EncryptRequest,
    ) -> Outcome<v1::EncryptResponse> {
        let mut r = request;
        let result = async {
            match self.plan_encrypt(call, &mut r, None).await? {
                Sealing::Symmetric { key, context } => {
                    let (blob, id) = self.keys.encrypt(&key, &r.plaintext, &context).await?;
                    Ok((blob, id, EncryptionAlgorithm::SymmetricDefault))
                }
                Sealing::Other { context, algorithm } => {
                    self.encrypt_other(call, &r, context, algorithm).await
                }
            }
        }
        .await;
        r.plaintext.zeroize();
        let (blob, id, algorithm) = result?;
        Ok(self.encrypted(blob, id, algorithm))
    }

    /// Reads an Encrypt request's context and algorithm (taking the context out of it) and,
    /// for the symmetric default, authorises it (with the batch's `judgements` for a batch's
    /// item): what is left is to seal.
    pub(in crate::api::operations) async fn plan_encrypt(
        &self,
        call: &CallContext,
        r: &mut v1::EncryptRequest,
        judgements: Option<&mut Judgements>,
    ) -> Result<Sealing, ApiError> {
        let context = context(std::mem::take(&mut r.encryption_context))?;
        let algorithm = crate::keys::encryption_algorithm(&r.encryption_algorithm)?;
        if algorithm == Ok(EncryptionAlgorithm::SymmetricDefault) {
            let key = self
                .judged_crypto_key(call, "kms:Encrypt", &r.key_id, &context, judgements)
                .await?;
            return Ok(Sealing::Symmetric { key, context });
        }
        Ok(Sealing::Other { context, algorithm })
    }

    /// Encrypt with an algorithm other than the symmetric default (RSA): authorised and done.
    pub(in crate::api::operations) async fn encrypt_other(
        &self,
        call: &CallContext,
        r: &v1::EncryptRequest,
        context: EncryptionContext,
        algorithm: Result<EncryptionAlgorithm, String>,
    ) -> Result<(Vec<u8>, Uuid, EncryptionAlgorithm), ApiError> {
        call.audit.add_context(context.pairs());
        let key = self
            .asymmetric_key(call, "kms:Encrypt", &r.key_id, &algorithm)
            .await?;
        Ok(self
            .keys
            .encrypt_asymmetric(&key, &r.plaintext, algorithm, &context)
            .await?)
    }

    /// Encrypt's answer.
    pub(in crate::api::operations) fn encrypted(
        &self,
        blob: Vec<u8>,
        id: Uuid,
        algorithm: EncryptionAlgorithm,
    ) -> v1::EncryptResponse {
        v1::EncryptResponse {
            ciphertext_blob: blob,
            key_id: self.arn(id),
            encryption_algorithm: algorithm.as_str().into(),
        }
    }

    pub async fn decrypt(
        &self,
        call: &CallContext,
        request: v1::DecryptRequest,
    ) -> Outcome<v1::DecryptResponse> {
        self.judged_decrypt(call, request, None).await
    }

    /// Decrypt, with the batch's `judgements` for a batch's item.
    pub(in crate::api::operations) async fn judged_decrypt(
        &self,
        call: &CallContext,
        request: v1::DecryptRequest,
        mut judgements: Option<&mut Judgements>,
    ) -> Outcome<v1::DecryptResponse> {
        let r = request;
        let context = context(r.encryption_context)?;
        let algorithm = crate::keys::encryption_algorithm(&r.encryption_algorithm)?;
        if algorithm != Ok(EncryptionAlgorithm::SymmetricDefault) {
            // An RSA ciphertext does not name its key: the request must.
            if r.key_id.is_empty() {
                return Err(KeyError::Validation(format!(
                    "KeyId is required to decrypt with EncryptionAlgorithm {}",
                    crate::keys::printable_input(&r.encryption_algorithm)
                ))
                .into());
            }
            call.audit.add_context(context.pairs());
            let key = self
                .asymmetric_key(call, "kms:Decrypt", &r.key_id, &algorithm)
                .await?;
            let (decrypted, algorithm) = self
                .keys
                .decrypt_asymmetric(&key, &r.ciphertext_blob, algorithm, &context)
                .await?;
            return Ok(v1::DecryptResponse {
                key_id: self.arn(decrypted.key_id),
                plaintext: decrypted.plaintext.into_bytes(),
                encryption_algorithm: algorithm.as_str().into(),
            });
        }
        self.blob_key(
            call,
            "kms:Decrypt",
            &r.ciphertext_blob,
            &context,
            judgements.as_deref_mut(),
        )
        .await?;
        let expected = self
            .expected_key(call, "kms:Decrypt", &r.key_id, &context, judgements)
            .await?;
        let decrypted = self
            .keys
            .decrypt(&r.ciphertext_blob, &context, expected.as_deref())
            .await?;
        Ok(v1::DecryptResponse {
            key_id: self.arn(decrypted.key_id),
            plaintext: decrypted.plaintext.into_bytes(),
            encryption_algorithm: ALGORITHM.into(),
        })
    }

    pub async fn re_encrypt(
        &self,
        call: &CallContext,
        request: v1::ReEncryptRequest,
    ) -> Outcome<v1::ReEncryptResponse> {
        let r = request;
        let source_context = context(r.source_encryption_context)?;
        let destination_context = context(r.destination_encryption_context)?;
        self.blob_key(
            call,
            "kms:ReEncryptFrom",
            &r.ciphertext_blob,
            &source_context,
            None,
        )
        .await?;
        let source = self
            .expected_key(
                call,
                "kms:ReEncryptFrom",
                &r.source_key_id,
                &source_context,
                None,
            )
            .await?;
        let destination = self
            .crypto_key(
                call,
                "kms:ReEncryptTo",
                &r.destination_key_id,
                &destination_context,
            )
            .await?;
        let (blob, source, destination) = self
            .keys
            .re_encrypt(
                &r.ciphertext_blob,
                &source_context,
                source.as_deref(),
                &destination,
                &destination_context,
            )
            .await?;
        Ok(v1::ReEncryptResponse {
            ciphertext_blob: blob,
            source_key_id: self.arn(source),
            key_id: self.arn(destination),
        })
    }

    pub async fn generate_data_key(
        &self,
        call: &CallContext,
        request: v1::GenerateDataKeyRequest,
    ) -> Outcome<v1::GenerateDataKeyResponse> {
        let (key, size, context) = self.plan_generate_data_key(call, request, None).await?;
        let (plaintext, blob, id) = self.keys.generate_data_key(&key, size, &context).await?;
        Ok(v1::GenerateDataKeyResponse {
            ciphertext_blob: blob,
            plaintext: plaintext.into_bytes(),
            key_id: self.arn(id),
        })
    }

    /// Reads and authorises a GenerateDataKey request (with the batch's `judgements` for a
    /// batch's item): the key id, the data key's size and the context to seal it with.
    pub(in crate::api::operations) async fn plan_generate_data_key(
        &self,
        call: &CallContext,
        r: v1::GenerateDataKeyRequest,
        judgements: Option<&mut Judgements>,
    ) -> Result<(String, DataKeySize, EncryptionContext), ApiError> {
        let context = context(r.encryption_context)?;
        let key = self
            .judged_crypto_key(call, "kms:GenerateDataKey", &r.key_id, &context, judgements)
            .await?;
        let size = DataKeySize::from_request(&r.key_spec, r.number_of_bytes)?;
        Ok((key, size, context))
    }

    pub async fn generate_data_key_without_plaintext(
        &self,
        call: &CallContext,
        request: v1::GenerateDataKeyWithoutPlaintextRequest,
    ) -> Outcome<v1::GenerateDataKeyWithoutPlaintextResponse> {
        let r = request;
        let context = context(r.encryption_context)?;
        let key = self
            .crypto_key(
                call,
                "kms:GenerateDataKeyWithoutPlaintext",
                &r.key_id,
                &context,
            )
            .await?;
        let size = DataKeySize::from_request(&r.key_spec, r.number_of_bytes)?;
        let (_plaintext, blob, id) = self.keys.generate_data_key(&key, size, &context).await?;
        Ok(v1::GenerateDataKeyWithoutPlaintextResponse {
            ciphertext_blob: blob,
            key_id: self.arn(id),
        })
    }

    pub async fn generate_random(
        &self,
        call: &CallContext,
        request: v1::GenerateRandomRequest,
    ) -> Outcome<v1::GenerateRandomResponse> {
        self.anywhere(call, "kms:GenerateRandom")?;
        let bytes = self.keys.generate_random(request.number_of_bytes)?;
        Ok(v1::GenerateRandomResponse {
            plaintext: bytes.into_bytes(),
        })
    }

    pub async fn list_orphaned_key_material(
        &self,
        call: &CallContext,
        _request: v1::ListOrphanedKeyMaterialRequest,
    ) -> Outcome<v1::ListOrphanedKeyMaterialResponse> {
        self.anywhere(call, "kms:ListOrphanedKeyMaterial")?;
        let orphans = self.keys.orphans().await?;
        Ok(v1::ListOrphanedKeyMaterialResponse {
            orphans: orphans.iter().map(orphan).collect(),
        })
    }

    pub async fn destroy_orphaned_key_material(
        &self,
        call: &CallContext,
        request: v1::DestroyOrphanedKeyMaterialRequest,
    ) -> Outcome<v1::DestroyOrphanedKeyMaterialResponse> {
        let r = request;
        let key_id = uuid::Uuid::try_parse(&r.key_id).map_err(|_| {
            KeyError::Validation(format!(
                "KeyId must be a key id (a UUID); got '{}'",
                crate::keys::printable_input(&r.key_id)
            ))
        })?;
        // The material's key is named in the audit record whether or not the call is allowed.
        call.audit.add_key(self.arn(key_id));
        self.anywhere(call, "kms:DestroyOrphanedKeyMaterial")?;
        let destroyed = self
            .keys
            .destroy_orphan(&r.keystore, key_id, r.key_version)
            .await?;
        Ok(v1::DestroyOrphanedKeyMaterialResponse {
            destroyed: Some(orphan(&destroyed)),
        })
    }

    pub async fn generate_mac(
        &self,
        call: &CallContext,
        request: v1::GenerateMacRequest,
    ) -> Outcome<v1::GenerateMacResponse> {
        let mut r = request;
        let result = async {
            let (key, algorithm) =
                mac_key(self, call, "kms:GenerateMac", &r.key_id, &r.mac_algorithm).await?;
            let answer = self.keys.generate_mac(&key, &r.message, algorithm).await?;
            Ok::<_, ApiError>((answer, algorithm))
        }
        .await;
        r.message.zeroize();
        let (answer, algorithm) = result?;
        Ok(v1::GenerateMacResponse {
            mac: answer.mac,
            mac_algorithm: algorithm.as_str().into(),
            key_id: self.arn(answer.key_id),
        })
    }

    pub async fn verify_mac(
        &self,
        call: &CallContext,
        request: v1::VerifyMacRequest,
    ) -> Outcome<v1::VerifyMacResponse> {
        let mut r = request;
        let result = async {
            let (key, algorithm) =
                mac_key(self, call, "kms:VerifyMac", &r.key_id, &r.mac_algorithm).await?;
            let id = self
                .keys
                .verify_mac(&key, &r.message, algorithm, &r.mac)
                .await?;
            Ok::<_, ApiError>((id, algorithm))
        }
        .await;
        r.message.zeroize();
        let (id, algorithm) = result?;
        Ok(v1::VerifyMacResponse {
            key_id: self.arn(id),
            mac_valid: true,
            mac_algorithm: algorithm.as_str().into(),
        })
    }

    pub async fn sign(
        &self,
        call: &CallContext,
        request: v1::SignRequest,
    ) -> Outcome<v1::SignResponse> {
        let mut r = request;
        let result = async {
            let s = signing_key(
                self,
                call,
                "kms:Sign",
                &r.key_id,
                &r.signing_algorithm,
                &r.message_type,
            )
            .await?;
            Ok::<_, ApiError>(
                self.keys
                    .sign(&s.key, &r.message, s.message_type, s.algorithm)
                    .await?,
            )
        }
        .await;
        r.message.zeroize();
        let signed = result?;
        Ok(v1::SignResponse {
            key_id: self.arn(signed.key_id),
            signature: signed.signature,
            signing_algorithm: r.signing_algorithm,
        })
    }

    pub async fn verify(
        &self,
        call: &CallContext,
        request: v1::VerifyRequest,
    ) -> Outcome<v1::VerifyResponse> {
        let mut r = request;
        let result = async {
            let s = signing_key(
                self,
                call,
                "kms:Verify",
                &r.key_id,
                &r.signing_algorithm,
                &r.message_type,
            )
            .await?;
            Ok::<_, ApiError>(
                self.keys
                    .verify(
                        &s.key,
                        &r.message,
                        s.message_type,
                        s.algorithm,
                        &r.signature,
                    )
                    .await?,
            )
        }
        .await;
        r.message.zeroize();
        let id = result?;
        Ok(v1::VerifyResponse {
            key_id: self.arn(id),
            signature_valid: true,
            signing_algorithm: r.signing_algorithm,
        })
    }

    pub async fn get_public_key(
        &self,
        call: &CallContext,
        request: v1::GetPublicKeyRequest,
    ) -> Outcome<v1::GetPublicKeyResponse> {
        let key = self.key(call, "kms:GetPublicKey", &request.key_id).await?;
        let public = self.keys.get_public_key(&key).await?;
        Ok(v1::GetPublicKeyResponse {
            key_id: self.arn(public.key_id),
            public_key: public.der,
            key_spec: public.spec.as_str().into(),
            key_usage: public.usage.as_str().into(),
            signing_algorithms: signing_algorithms(public.spec, public.usage),
            encryption_algorithms: encryption_algorithms(public.spec, public.usage),
            key_agreement_algorithms: key_agreement_algorithms(public.usage),
        })
    }

    pub async fn derive_shared_secret(
        &self,
        call: &CallContext,
        request: v1::DeriveSharedSecretRequest,
    ) -> Outcome<v1::DeriveSharedSecretResponse> {
        let r = request;
        let algorithm = crate::keys::key_agreement_algorithm(&r.key_agreement_algorithm)?;
        let mut context = self.context(call);
        context.set("kms:KeyAgreementAlgorithm", algorithm);
        let key = self
            .authorizer
            .key(
                call,
                "kms:DeriveSharedSecret",
                &r.key_id,
                false,
                &context,
                &GrantAsk::Plain,
            )
            .await?
            .id
            .hyphenated()
            .to_string();
        let (secret, id, origin) = self.keys.derive_shared_secret(&key, &r.public_key).await?;
        Ok(v1::DeriveSharedSecretResponse {
            key_id: self.arn(id),
            shared_secret: secret.into_bytes(),
            key_agreement_algorithm: algorithm.into(),
            key_origin: origin,
        })
    }

    /// Authorises a GenerateDataKeyPair(WithoutPlaintext) with the request's encryption
    /// context and `kms:DataKeyPairSpec`; returns the key and the pair's spec.
    async fn data_key_pair_key(
        &self,
        call: &CallContext,
        action: &str,
        key: &str,
        spec: &str,
        encryption_context: &EncryptionContext,
    ) -> Result<(String, KeySpec), ApiError> {
        let spec = crate::keys::key_pair_spec(spec)?;
        let mut context = self.context(call);
        Authorizer::add_encryption_context(&mut context, encryption_context.pairs());
        context
            .set("kms:EncryptionAlgorithm", ALGORITHM)
            .set("kms:DataKeyPairSpec", spec.as_str());
        call.audit.add_context(encryption_context.pairs());
        let ask = GrantAsk::Context(encryption_context.pairs());
        let record = self
            .authorizer
            .key(call, action, key, false, &context, &ask)
            .await?;
        Ok((record.id.hyphenated().to_string(), spec))
    }

    pub async fn generate_data_key_pair(
        &self,
        call: &CallContext,
        request: v1::GenerateDataKeyPairRequest,
    ) -> Outcome<v1::GenerateDataKeyPairResponse> {
        let r = request;
        let context = context(r.encryption_context)?;
        let (key, spec) = self
            .data_key_pair_key(
                call,
                "kms:GenerateDataKeyPair",
                &r.key_id,
                &r.key_pair_spec,
                &context,
            )
            .await?;
        let pair = self
            .keys
            .generate_data_key_pair(&key, spec, &context, "GenerateDataKeyPair")
            .await?;
        Ok(v1::GenerateDataKeyPairResponse {
            private_key_ciphertext_blob: pair.private_key_blob,
            private_key_plaintext: pair.private_key.into_bytes(),
            public_key: pair.public_key,
            key_id: self.arn(pair.key_id),
            key_pair_spec: spec.as_str().into(),
        })
    }

    pub async fn generate_data_key_pair_without_plaintext(
        &self,
        call: &CallContext,
        request: v1::GenerateDataKeyPairWithoutPlaintextRequest,
    ) -> Outcome<v1::GenerateDataKeyPairWithoutPlaintextResponse> {
        let r = request;
        let context = context(r.encryption_context)?;
        let (key, spec) = self
            .data_key_pair_key(
                call,
                "kms:GenerateDataKeyPairWithoutPlaintext",
                &r.key_id,
                &r.key_pair_spec,
                &context,
            )
            .await?;
        // The private key is made and wiped here; only its ciphertext leaves.
        let pair = self
            .keys
            .generate_data_key_pair(&key, spec, &context, "GenerateDataKeyPairWithoutPlaintext")
            .await?;
        Ok(v1::GenerateDataKeyPairWithoutPlaintextResponse {
            private_key_ciphertext_blob: pair.private_key_blob,
            public_key: pair.public_key,
            key_id: self.arn(pair.key_id),
            key_pair_spec: spec.as_str().into(),
        })
    }
}
