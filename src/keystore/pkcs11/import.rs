//! Importing key material into the device: the import token's RSA wrapping pair made in the
//! device, `C_UnwrapKey` of the material under it (RSAES-OAEP-SHA-256, or RSA-AES key wrap with
//! SHA-256), and the commitment computed in the device (see the keystore's module docs).

use super::*;

/// What an import in the device came to.
enum Unwrapped {
    Made {
        handle: ObjectHandle,
        commitment: Vec<u8>,
    },
    Refused(KeyStoreError),
}

/// The modulus of an RSA key (big-endian); empty when the token reports none.
fn modulus(session: &Session, key: ObjectHandle) -> Result<Vec<u8>, CryptokiError> {
    Ok(session
        .get_attributes(key, &[AttributeType::Modulus])?
        .into_iter()
        .find_map(|a| match a {
            Attribute::Modulus(n) => Some(n),
            _ => None,
        })
        .unwrap_or_default())
}

/// RFC 5649's alternative initial value for 32 bytes of key data: `A65959A6`, then the
/// length as four big-endian bytes.
const RFC5649_IV_32: [u8; 8] = [0xA6, 0x59, 0x59, 0xA6, 0, 0, 0, 32];

/// A device's answer to an unwrap that did not open: the wrap was not made for this key (or
/// was damaged), reported as such and not as a failing device. SoftHSM2 answers a bad OAEP
/// block with a general error, as it does a bad GCM tag.
fn unwrap_refusal(error: &CryptokiError) -> Option<KeyStoreError> {
    match error {
        CryptokiError::Pkcs11(
            RvError::WrappedKeyInvalid
            | RvError::WrappedKeyLenRange
            | RvError::EncryptedDataInvalid
            | RvError::EncryptedDataLenRange
            | RvError::DataInvalid
            | RvError::DataLenRange
            | RvError::GeneralError
            | RvError::FunctionFailed,
            _,
        ) => Some(KeyStoreError::DecryptFailed),
        CryptokiError::Pkcs11(
            RvError::ArgumentsBad | RvError::MechanismParamInvalid | RvError::MechanismInvalid,
            _,
        ) => Some(KeyStoreError::Unsupported(
            "the device cannot unwrap with RSAES-OAEP-SHA-256 (its OAEP takes SHA-1 only); \
             use the wrapping algorithm RSA_AES_KEY_WRAP_SHA_256"
                .into(),
        )),
        _ => None,
    }
}

impl Pkcs11KeyStore {
    /// The label of an import token's wrapping key pair (outside the label space of key
    /// material, so listings of material never see it).
    fn wrapping_label(&self, wrapping: uuid::Uuid) -> Vec<u8> {
        format!(
            "keyhaven-import:{}:{}",
            self.account_id,
            wrapping.hyphenated()
        )
        .into_bytes()
    }

    /// The template of imported material: as generated material of `spec`, less its length,
    /// which the unwrapped value sets.
    fn imported_template(&self, material: MaterialRef, spec: KeySpec) -> Vec<Attribute> {
        let mut template = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::Label(object_label(&self.account_id, material).into_bytes()),
            Attribute::Id(object_id(material)),
        ];
        if spec.mac_algorithm().is_some() {
            template.extend([
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::Sign(true),
                Attribute::Verify(true),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
            ]);
        } else {
            template.extend([
                Attribute::KeyType(KeyType::AES),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
            ]);
        }
        template
    }

    /// Opens `encrypted` with the wrapping key `private` into a new token object of
    /// `template`, in the device.
    fn unwrap_in_device(
        &self,
        session: &Session,
        private: ObjectHandle,
        algorithm: WrappingAlgorithm,
        encrypted: &[u8],
        template: &[Attribute],
    ) -> Result<Result<ObjectHandle, KeyStoreError>, CryptokiError> {
        let answer = match algorithm {
            WrappingAlgorithm::RsaesOaepSha256 => {
                // A value the modulus does not bound opens under no key: said here, as a
                // ciphertext that does not open, rather than by the device (NSS's softoken
                // answers it CKR_ARGUMENTS_BAD, which reads as a mechanism it lacks).
                let modulus = modulus(session, private)?;
                if encrypted.len() != modulus.len() || encrypted >= &modulus[..] {
                    return Ok(Err(KeyStoreError::DecryptFailed));
                }
                let oaep = Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
                    MechanismType::SHA256,
                    PkcsMgfType::MGF1_SHA256,
                    PkcsOaepSource::empty(),
                ));
                session.unwrap_key(&oaep, private, encrypted, template)
            }
            WrappingAlgorithm::RsaAesKeyWrapSha256 => {
                let modulus = modulus(session, private)?.len();
                if modulus == 0 || encrypted.len() <= modulus {
                    return Ok(Err(KeyStoreError::DecryptFailed));
                }
                let (wrapped_key, wrapped_material) = encrypted.split_at(modulus);
                // SoftHSM2 reports no length for unwrapped keys: the wrap's tells it to the
                // semiblock (25 to 32 bytes for 40), and of those only 32 is an AES key the
                // commitment's AES-GCM then accepts.
                if wrapped_material.len() != 8 + 32 {
                    return Ok(Err(KeyStoreError::IncorrectMaterial(format!(
                        "imported material for a SYMMETRIC_DEFAULT key must be 32 bytes; this \
                         wrap holds {} to {}",
                        wrapped_material.len().saturating_sub(15),
                        wrapped_material.len().saturating_sub(8)
                    ))));
                }
                let block = match session.decrypt(&Mechanism::RsaX509, private, wrapped_key) {
                    Ok(block) => SecretBytes::new(block),
                    Err(error) => {
                        return match unwrap_refusal(&error) {
                            Some(_) => Ok(Err(KeyStoreError::DecryptFailed)),
                            None => Err(error),
                        };
                    }
                };
                let aes_key =
                    match crate::keystore::import::oaep_sha256_decode(block.expose(), modulus) {
                        Ok(key) if key.expose().len() == 32 => key,
                        _ => return Ok(Err(KeyStoreError::DecryptFailed)),
                    };
                let mut kek_template = [
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Token(false),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Unwrap(true),
                    Attribute::Encrypt(false),
                    Attribute::Decrypt(false),
                    Attribute::Value(aes_key.expose().clone()),
                ];
                let kek = session.create_object(&kek_template);
                for attribute in kek_template.iter_mut() {
                    if let Attribute::Value(value) = attribute {
                        zeroize::Zeroize::zeroize(value);
                    }
                }
                let kek = kek?;
                let mut unwrapped =
                    session.unwrap_key(&Mechanism::AesKeyWrapPad, kek, wrapped_material, template);
                if unwrapped
                    .as_ref()
                    .is_err_and(|e| unwrap_refusal(e).is_some())
                {
                    // Not every token's CKM_AES_KEY_WRAP_PAD is RFC 5649: NSS's softoken pads
                    // RFC 3394 PKCS #7-wise under that name. RFC 5649 of 32 bytes is RFC 3394
                    // under its alternative initial value (RFC 5649, section 4.1), which
                    // CKM_AES_KEY_WRAP takes as its parameter. A wrap that opens under neither
                    // was not made for this key.
                    let rfc5649 = Mechanism::VendorDefined(VendorDefinedMechanism::new(
                        MechanismType::AES_KEY_WRAP,
                        Some(&RFC5649_IV_32),
                    ));
                    unwrapped = session.unwrap_key(&rfc5649, kek, wrapped_material, template);
                }
                let _ = session.destroy_object(kek);
                unwrapped
            }
        };
        match answer {
            Ok(handle) => Ok(Ok(handle)),
            Err(error) => match unwrap_refusal(&error) {
                Some(refusal) => Ok(Err(refusal)),
                None => Err(error),
            },
        }
    }

    /// Checks the length of material just unwrapped, and has the device compute its
    /// commitment (see [`super::COMMITMENT_NONCE`]).
    fn commit_to(
        &self,
        session: &Session,
        handle: ObjectHandle,
        material: MaterialRef,
        spec: KeySpec,
        length_known: bool,
    ) -> Result<Result<Vec<u8>, KeyStoreError>, CryptokiError> {
        let len = session
            .get_attributes(handle, &[AttributeType::ValueLen])?
            .into_iter()
            .find_map(|a| match a {
                Attribute::ValueLen(len) => Some(u64::from(len) as usize),
                _ => None,
            })
            .unwrap_or(0);
        match (len, length_known) {
            (0, true) => {}
            (0, false) => {
                return Ok(Err(KeyStoreError::Unsupported(
                    "the device does not report the length of unwrapped material; use the \
                     wrapping algorithm RSA_AES_KEY_WRAP_SHA_256"
                        .into(),
                )));
            }
            (len, _) => {
                if let Err(refusal) = crate::keystore::import::check_length(spec, len) {
                    return Ok(Err(refusal));
                }
            }
        }
        let aad = commitment_aad(material.key_id);
        // As every encryption on this token: message-based where the token offers it (NSS's
        // softoken answers a single-part GCM length query without the tag).
        let messages = self.device.encrypts_messages();
        match seal(session, handle, messages, &COMMITMENT_NONCE, &aad, &[]) {
            Ok(commitment) if commitment.len() == 16 => Ok(Ok(commitment)),
            Ok(_) => Ok(Err(KeyStoreError::Internal(
                "the device's AES-GCM tag is not 16 bytes".into(),
            ))),
            Err(CryptokiError::Pkcs11(
                RvError::KeySizeRange
                | RvError::KeyTypeInconsistent
                | RvError::GeneralError
                | RvError::FunctionFailed,
                _,
            )) => Ok(Err(KeyStoreError::IncorrectMaterial(
                "the imported material is not a 256-bit AES key".into(),
            ))),
            Err(error) => Err(error),
        }
    }

    /// The pair is generated in the device; only the public half's modulus and exponent leave
    /// it, and the public object is destroyed once read.
    pub(super) fn make_wrapping_key_in_device(
        &self,
        wrapping: uuid::Uuid,
        bits: usize,
    ) -> Result<WrappingKey, KeyStoreError> {
        use rsa::pkcs8::EncodePublicKey;
        self.supports_import(KeySpec::SymmetricDefault)?;
        let label = self.wrapping_label(wrapping);
        let public_template = [
            Attribute::Token(false),
            Attribute::Private(false),
            Attribute::ModulusBits((bits as u64).into()),
            Attribute::PublicExponent(vec![1, 0, 1]),
            Attribute::Encrypt(true),
            Attribute::Verify(false),
            Attribute::Wrap(false),
            Attribute::Label(label.clone()),
        ];
        let private_template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Decrypt(true),
            Attribute::Unwrap(true),
            Attribute::Sign(false),
            Attribute::Derive(false),
            Attribute::Label(label.clone()),
            Attribute::Id(wrapping.as_bytes().to_vec()),
        ];
        let mut attempts = 0;
        let changing = self.changing_objects();
        let made = self.device.with_session(|session| {
            attempts += 1;
            if attempts > 1 {
                for handle in session.find_objects(&[Attribute::Label(label.clone())])? {
                    session.destroy_object(handle)?;
                }
            }
            let (public, private) = session.generate_key_pair(
                &Mechanism::RsaPkcsKeyPairGen,
                &public_template,
                &private_template,
            )?;
            let read = session.get_attributes(
                public,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            );
            let _ = session.destroy_object(public);
            match read {
                Ok(attributes) => Ok(attributes),
                Err(error) => {
                    let _ = session.destroy_object(private);
                    Err(error)
                }
            }
        });
        drop(changing);
        let (mut modulus, mut exponent) = (Vec::new(), Vec::new());
        for attribute in made.map_err(unavailable)? {
            match attribute {
                Attribute::Modulus(n) => modulus = n,
                Attribute::PublicExponent(e) => exponent = e,
                _ => {}
            }
        }
        let public_key = rsa::RsaPublicKey::new(
            rsa::BigUint::from_bytes_be(&modulus),
            rsa::BigUint::from_bytes_be(&exponent),
        )
        .map_err(|e| e.to_string())
        .and_then(|key| key.to_public_key_der().map_err(|e| e.to_string()));
        match public_key {
            Ok(der) => Ok(WrappingKey {
                public_key: der.into_vec(),
                records: WriteBatch::new(),
            }),
            Err(error) => {
                let _ = self.destroy_wrapping_key(wrapping);
                Err(KeyStoreError::Internal(format!(
                    "the device's wrapping public key does not encode: {error}"
                )))
            }
        }
    }

    /// `C_UnwrapKey` into the device (see the module's documentation); the commitment is
    /// computed there too.
    pub(super) fn import_in_device(
        &self,
        material: MaterialRef,
        wrapping: uuid::Uuid,
        algorithm: WrappingAlgorithm,
        spec: KeySpec,
        encrypted: &[u8],
    ) -> Result<ImportedMaterial, KeyStoreError> {
        self.supports_import(spec)?;
        let label = self.wrapping_label(wrapping);
        let template = self.imported_template(material, spec);
        let mut attempts = 0;
        let changing = self.changing_objects();
        let answer = self.device.with_session(|session| {
            attempts += 1;
            if attempts > 1 {
                destroy_labelled(session, object_label(&self.account_id, material).as_bytes())?;
            }
            let Some(private) = session
                .find_objects(&[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::Token(true),
                    Attribute::Label(label.clone()),
                ])?
                .first()
                .copied()
            else {
                if !logged_in(session)? {
                    return Err(CryptokiError::Pkcs11(
                        RvError::UserNotLoggedIn,
                        Function::FindObjects,
                    ));
                }
                return Ok(Unwrapped::Refused(KeyStoreError::Unavailable(
                    "the wrapping key of this import token is not in the device".into(),
                )));
            };
            let handle =
                match self.unwrap_in_device(session, private, algorithm, encrypted, &template)? {
                    Ok(handle) => handle,
                    Err(refusal) => return Ok(Unwrapped::Refused(refusal)),
                };
            let length_known = algorithm == WrappingAlgorithm::RsaAesKeyWrapSha256;
            match self.commit_to(session, handle, material, spec, length_known) {
                Ok(Ok(commitment)) => Ok(Unwrapped::Made { handle, commitment }),
                Ok(Err(refusal)) => {
                    session.destroy_object(handle)?;
                    Ok(Unwrapped::Refused(refusal))
                }
                Err(error) => {
                    let _ = session.destroy_object(handle);
                    Err(error)
                }
            }
        });
        drop(changing);
        match answer.map_err(unavailable)? {
            Unwrapped::Made { handle, commitment } => {
                self.remember(material, handle);
                Ok(ImportedMaterial {
                    records: WriteBatch::new(),
                    commitment,
                })
            }
            Unwrapped::Refused(refusal) => Err(refusal),
        }
    }

    pub(super) fn destroy_wrapping_key_in_device(
        &self,
        wrapping: uuid::Uuid,
    ) -> Result<WriteBatch, KeyStoreError> {
        let label = self.wrapping_label(wrapping);
        let _changing = self.changing_objects();
        self.device
            .with_session(|session| destroy_labelled(session, &label))
            .map_err(unavailable)?;
        Ok(WriteBatch::new())
    }
}
