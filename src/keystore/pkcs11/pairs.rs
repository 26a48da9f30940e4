//! Key pairs made and used in the device: a pair generated under the version's label,
//! RSAES-OAEP decryption and ECDH with its private key, and its public key read back (what to
//! ask the token for, and how its answers are shaped, is in `asymmetric`).

use super::*;

impl Pkcs11KeyStore {
    /// Makes a key pair of `spec` in the device: the private key (what signing, or for a key
    /// of `agreement`, ECDH uses) and the public key, both token objects under the version's
    /// label. A curve the token does not know is refused by name, as a missing mechanism is.
    pub(super) fn generate_pair(
        &self,
        material: MaterialRef,
        spec: KeySpec,
        agreement: bool,
    ) -> Result<GeneratedMaterial, KeyStoreError> {
        let label = object_label(&self.account_id, material).into_bytes();
        let Some((mechanism, public, private)) =
            asymmetric::templates(spec, label, object_id(material), agreement)
        else {
            return Err(self.cannot_make(spec));
        };
        let mut refusal = None;
        let generated = self.generate_with(material, |session| {
            session
                .generate_key_pair(&mechanism, &public, &private)
                .map(|(_, private)| private)
                .inspect_err(|error| {
                    // How tokens say they cannot make this curve or size.
                    if let CryptokiError::Pkcs11(
                        rv @ (RvError::CurveNotSupported
                        | RvError::DomainParamsInvalid
                        | RvError::AttributeValueInvalid
                        | RvError::TemplateInconsistent
                        | RvError::KeySizeRange),
                        _,
                    ) = error
                    {
                        refusal = Some(*rv);
                    }
                })
        });
        match (generated, refusal) {
            (Err(_), Some(rv)) => Err(KeyStoreError::Unsupported(format!(
                "the token of keystore {} cannot make {} keys (the curve or size is refused: {rv})",
                self.name,
                spec.as_str()
            ))),
            (other, _) => other,
        }
    }

    /// RSAES-OAEP decryption in the device (`CKM_RSA_PKCS_OAEP`, MGF1 of the same hash, no
    /// label) with an RSA version's private key. Any ciphertext that does not open is
    /// [`KeyStoreError::DecryptFailed`], one answer for every failure; a token that refuses
    /// the hash (SoftHSM2 2.6 takes SHA-1 only) is `Unsupported`, naming it. The keystore
    /// trait's asymmetric decryption delegates here.
    pub fn decrypt_oaep(
        &self,
        material: MaterialRef,
        spec: KeySpec,
        hash: OaepHash,
        ciphertext: &[u8],
    ) -> Result<SecretBytes, KeyStoreError> {
        if spec.rsa_bits().is_none() {
            return Err(self.cannot_make(spec));
        }
        self.require_mechanism(MechanismType::RSA_PKCS_OAEP, hash.as_str())?;
        let mechanism = hash.mechanism();
        let refused = std::sync::atomic::AtomicBool::new(false);
        let opened = self.with_key(material, |session, handle| {
            session
                .decrypt(&mechanism, handle, ciphertext)
                .map(SecretBytes::new)
                .map_err(|error| match error {
                    CryptokiError::Pkcs11(
                        RvError::MechanismParamInvalid
                        | RvError::ArgumentsBad
                        | RvError::MechanismInvalid,
                        Function::DecryptInit,
                    ) => {
                        refused.store(true, std::sync::atomic::Ordering::Relaxed);
                        error
                    }
                    // NSS's softoken answers a ciphertext whose value is not below the
                    // modulus with CKR_ARGUMENTS_BAD from C_Decrypt: one that does not open.
                    CryptokiError::Pkcs11(RvError::ArgumentsBad, Function::Decrypt) => {
                        CryptokiError::Pkcs11(RvError::EncryptedDataInvalid, Function::Decrypt)
                    }
                    // Whatever the device says of a ciphertext it cannot open (SoftHSM2:
                    // CKR_GENERAL_ERROR) is one answer, not a broken device to retry.
                    other => tag_failure_as_invalid_data(other),
                })
        });
        match opened {
            Err(_) if refused.load(std::sync::atomic::Ordering::Relaxed) => {
                Err(KeyStoreError::Unsupported(format!(
                    "the token of keystore {} refuses {} (CKM_RSA_PKCS_OAEP with this hash)",
                    self.name,
                    hash.as_str()
                )))
            }
            other => other,
        }
    }

    /// The public key of a version: from its public key object, or where the token kept
    /// none, from the private key (RSA keys carry their modulus and exponent).
    pub(super) fn read_public_key(
        &self,
        material: MaterialRef,
        spec: KeySpec,
    ) -> Result<Vec<u8>, KeyStoreError> {
        let label = object_label(&self.account_id, material).into_bytes();
        let wanted = if spec.rsa_bits().is_some() {
            vec![AttributeType::Modulus, AttributeType::PublicExponent]
        } else {
            vec![AttributeType::EcParams, AttributeType::EcPoint]
        };
        let _reading = self.reading_objects();
        let attributes = self
            .device
            .with_session(|session| {
                let mut found = Vec::new();
                for class in [ObjectClass::PUBLIC_KEY, ObjectClass::PRIVATE_KEY] {
                    found = session.find_objects(&[
                        Attribute::Class(class),
                        Attribute::Token(true),
                        Attribute::Label(label.clone()),
                    ])?;
                    if !found.is_empty() {
                        break;
                    }
                }
                if found.is_empty() && !logged_in(session)? {
                    return Err(CryptokiError::Pkcs11(
                        RvError::UserNotLoggedIn,
                        Function::FindObjects,
                    ));
                }
                match found.first() {
                    Some(handle) => session.get_attributes(*handle, &wanted).map(Some),
                    None => Ok(None),
                }
            })
            .map_err(unavailable)?
            .ok_or(KeyStoreError::MaterialNotFound(material))?;
        let mut values: HashMap<AttributeType, Vec<u8>> = HashMap::new();
        for attribute in attributes {
            match attribute {
                Attribute::Modulus(v) => values.insert(AttributeType::Modulus, v),
                Attribute::PublicExponent(v) => values.insert(AttributeType::PublicExponent, v),
                Attribute::EcParams(v) => values.insert(AttributeType::EcParams, v),
                Attribute::EcPoint(v) => values.insert(AttributeType::EcPoint, v),
                _ => None,
            };
        }
        let value = |kind: AttributeType| {
            values.get(&kind).ok_or_else(|| {
                KeyStoreError::Internal(format!(
                    "the token gave no {kind} for the public key of {material:?}"
                ))
            })
        };
        if spec.rsa_bits().is_some() {
            asymmetric::rsa_spki(
                value(AttributeType::Modulus)?,
                value(AttributeType::PublicExponent)?,
            )
        } else {
            asymmetric::ec_spki(
                value(AttributeType::EcParams)?,
                value(AttributeType::EcPoint)?,
            )
        }
    }
}

/// ECDH of the private key `handle` with the peer's uncompressed `point` (`CKD_NULL`): the
/// shared secret's x-coordinate, `len` bytes. The derived session object is destroyed
/// whatever happens once it is made.
pub(super) fn derive_secret(
    session: &Session,
    handle: ObjectHandle,
    point: &[u8],
    len: usize,
) -> Result<SecretBytes, CryptokiError> {
    use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
    let params = Ecdh1DeriveParams::new(EcKdf::null(), point);
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::ValueLen((len as u64).into()),
        Attribute::Token(false),
        Attribute::Private(true),
        // The one object Keyhaven reads a value from: the secret is the answer.
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ];
    let derived = session.derive_key(&Mechanism::Ecdh1Derive(params), handle, &template)?;
    let read = session.get_attributes(derived, &[AttributeType::Value]);
    let destroyed = session.destroy_object(derived);
    let mut secret = None;
    for attribute in read? {
        if let Attribute::Value(value) = attribute {
            secret = Some(SecretBytes::new(value));
        }
    }
    destroyed?;
    match secret {
        Some(secret) if secret.expose().len() == len => Ok(secret),
        // Not a failing device to retry: a token answering another length is refused.
        _ => Err(CryptokiError::Pkcs11(
            RvError::AttributeValueInvalid,
            Function::GetAttributeValue,
        )),
    }
}
