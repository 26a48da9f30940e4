//! Key pairs in the device: what to ask a token for (curves, templates, mechanisms), and how
//! its answers become what AWS KMS clients expect (DER ECDSA signatures, DER
//! SubjectPublicKeyInfo). Hashing is done by the daemon; the device signs the digest.

use super::super::{KeySpec, KeyStoreError, RsaPadding, SigningAlgorithm};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use rsa::pkcs8::der::asn1::{BitStringRef, OctetStringRef, UintRef};
use rsa::pkcs8::der::{Decode, Encode};
use rsa::pkcs8::spki::{AlgorithmIdentifierRef, ObjectIdentifier, SubjectPublicKeyInfoRef};

/// The RSA public exponent of every key pair made (F4, as AWS KMS's keys have).
const PUBLIC_EXPONENT: [u8; 3] = [0x01, 0x00, 0x01];

/// `id-ecPublicKey` (RFC 5480), the algorithm of an EC SubjectPublicKeyInfo.
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

/// The named curve of an ECC spec, by AWS's name (so that specs added beside P-256 and P-384
/// are made in the device as soon as they exist): `CKA_EC_PARAMS`, the DER of the curve's OID.
pub fn ec_params(spec: KeySpec) -> Option<&'static [u8]> {
    Some(match spec.as_str() {
        // prime256v1 / secp256r1: 1.2.840.10045.3.1.7
        "ECC_NIST_P256" => &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
        // secp384r1: 1.3.132.0.34
        "ECC_NIST_P384" => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
        // secp521r1: 1.3.132.0.35
        "ECC_NIST_P521" => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
        // secp256k1: 1.3.132.0.10
        "ECC_SECG_P256K1" => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a],
        _ => return None,
    })
}

/// Whether the spec is a key pair this keystore makes in the device.
pub fn is_key_pair(spec: KeySpec) -> bool {
    spec.rsa_bits().is_some() || ec_params(spec).is_some()
}

/// The mechanisms making and using a key pair of `spec` take.
pub fn mechanisms(spec: KeySpec) -> Vec<MechanismType> {
    if spec.rsa_bits().is_some() {
        vec![
            MechanismType::RSA_PKCS_KEY_PAIR_GEN,
            MechanismType::RSA_PKCS_PSS,
            MechanismType::RSA_PKCS,
        ]
    } else {
        vec![MechanismType::ECC_KEY_PAIR_GEN, MechanismType::ECDSA]
    }
}

/// The mechanisms making and using an ECC key pair of `spec` for key agreement take.
pub fn agreement_mechanisms() -> [MechanismType; 2] {
    [MechanismType::ECC_KEY_PAIR_GEN, MechanismType::ECDH1_DERIVE]
}

/// The generation mechanism and the public and private templates of a key pair. The private
/// key is a sensitive, never extractable token object that signs (and for RSA, decrypts
/// OAEP) and does nothing else, or, made for key agreement (`agreement`, ECC only), derives
/// (`CKM_ECDH1_DERIVE`) and does nothing else; the public key is a token object under the
/// same label and id, told apart by its class.
pub fn templates(
    spec: KeySpec,
    label: Vec<u8>,
    id: Vec<u8>,
    agreement: bool,
) -> Option<(Mechanism<'static>, Vec<Attribute>, Vec<Attribute>)> {
    if agreement && ec_params(spec).is_none() {
        return None;
    }
    let (mechanism, key_type, mut public) = if let Some(bits) = spec.rsa_bits() {
        (
            Mechanism::RsaPkcsKeyPairGen,
            KeyType::RSA,
            vec![
                Attribute::ModulusBits((bits as u64).into()),
                Attribute::PublicExponent(PUBLIC_EXPONENT.to_vec()),
            ],
        )
    } else {
        (
            Mechanism::EccKeyPairGen,
            KeyType::EC,
            vec![Attribute::EcParams(ec_params(spec)?.to_vec())],
        )
    };
    public.extend([
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(key_type),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(!agreement),
        // The public half of a pair that decrypts encrypts (NSS's softoken refuses the pair
        // otherwise); it is public in any case.
        Attribute::Encrypt(key_type == KeyType::RSA),
        Attribute::Wrap(false),
        Attribute::Derive(false),
        Attribute::Label(label.clone()),
        Attribute::Id(id.clone()),
    ]);
    let private = vec![
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(key_type),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(!agreement),
        // RSA keys of usage ENCRYPT_DECRYPT decrypt with the same kind of pair, and the
        // keystore is not told whether an RSA key signs or decrypts (the service keeps each
        // key to its own).
        Attribute::Decrypt(key_type == KeyType::RSA),
        Attribute::Unwrap(false),
        Attribute::Derive(agreement),
        Attribute::Label(label),
        Attribute::Id(id),
    ];
    Some((mechanism, public, private))
}

/// The hash of RSAES-OAEP (MGF1 with the same hash, no label), as AWS KMS's
/// `RSAES_OAEP_SHA_1` and `RSAES_OAEP_SHA_256`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OaepHash {
    Sha1,
    Sha256,
}

impl OaepHash {
    pub fn as_str(self) -> &'static str {
        match self {
            OaepHash::Sha1 => "RSAES_OAEP_SHA_1",
            OaepHash::Sha256 => "RSAES_OAEP_SHA_256",
        }
    }

    /// `CKM_RSA_PKCS_OAEP` with this hash, MGF1 of the same hash and an empty label.
    pub fn mechanism(self) -> Mechanism<'static> {
        use cryptoki::mechanism::rsa::{PkcsOaepParams, PkcsOaepSource};
        let (hash, mgf) = match self {
            OaepHash::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
            OaepHash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
        };
        Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty()))
    }
}

/// The peer's EC point, uncompressed (`04 ‖ x ‖ y`), from its DER SubjectPublicKeyInfo on the
/// curve of `spec`: what `CKM_ECDH1_DERIVE` takes as its public data. The point is decoded
/// (and so checked on the curve) here, so that a compressed point reaches the device in the
/// one form every token takes.
pub fn peer_point(spec: KeySpec, spki: &[u8]) -> Result<Vec<u8>, KeyStoreError> {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use p256::pkcs8::DecodePublicKey;
    let refused = || {
        KeyStoreError::Internal(format!(
            "the peer key is not a {} public key",
            spec.as_str()
        ))
    };
    macro_rules! uncompressed {
        ($curve:ident) => {
            $curve::PublicKey::from_public_key_der(spki)
                .map(|key| key.to_encoded_point(false).as_bytes().to_vec())
                .map_err(|_| refused())
        };
    }
    match spec {
        KeySpec::EccNistP256 => uncompressed!(p256),
        KeySpec::EccNistP384 => uncompressed!(p384),
        KeySpec::EccNistP521 => uncompressed!(p521),
        _ => Err(refused()),
    }
}

/// Bytes of an ECDH shared secret on the curve of `spec` (the field's size: 32, 48, 66).
pub fn shared_secret_len(spec: KeySpec) -> usize {
    spec.material_len()
}

fn hash_mechanism(digest_len: usize) -> (MechanismType, PkcsMgfType) {
    match digest_len {
        48 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
        64 => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512),
        _ => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
    }
}

/// What the device signs for `algorithm`: the mechanism, and the input (the digest; for
/// PKCS#1 v1.5, the DigestInfo around it, as `CKM_RSA_PKCS` takes it). RSASSA-PSS is MGF1
/// with the same hash and a salt as long as the digest, as AWS KMS signs.
pub fn signing_input(
    algorithm: SigningAlgorithm,
    digest: &[u8],
) -> (Mechanism<'static>, MechanismType, Vec<u8>) {
    match algorithm.rsa_padding() {
        None => (Mechanism::Ecdsa, MechanismType::ECDSA, digest.to_vec()),
        Some(RsaPadding::Pss(_)) => {
            let (hash_alg, mgf) = hash_mechanism(digest.len());
            (
                Mechanism::RsaPkcsPss(PkcsPssParams {
                    hash_alg,
                    mgf,
                    s_len: (digest.len() as u64).into(),
                }),
                MechanismType::RSA_PKCS_PSS,
                digest.to_vec(),
            )
        }
        Some(RsaPadding::Pkcs1V15(pkcs1)) => {
            let mut info = pkcs1.prefix.to_vec();
            info.extend_from_slice(digest);
            (Mechanism::RsaPkcs, MechanismType::RSA_PKCS, info)
        }
    }
}

fn internal(what: &str) -> impl Fn(rsa::pkcs8::der::Error) -> KeyStoreError + '_ {
    move |e| KeyStoreError::Internal(format!("{what}: {e}"))
}

/// The device's ECDSA signature (`r ‖ s`, each as long as the curve's order) as the DER
/// `SEQUENCE { r INTEGER, s INTEGER }` AWS KMS answers.
pub fn ecdsa_der(raw: &[u8]) -> Result<Vec<u8>, KeyStoreError> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return Err(KeyStoreError::Internal(format!(
            "the device's ECDSA signature is {} bytes, not r || s",
            raw.len()
        )));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let encode = internal("cannot encode the ECDSA signature");
    let integers = [
        UintRef::new(r).map_err(&encode)?,
        UintRef::new(s).map_err(&encode)?,
    ];
    // A SEQUENCE OF two INTEGERs is the same bytes as the SEQUENCE of r and s.
    integers.to_der().map_err(encode)
}

/// The DER SubjectPublicKeyInfo of an EC public key from `CKA_EC_PARAMS` and `CKA_EC_POINT`
/// (the point as a DER OCTET STRING, as PKCS#11 says; or bare, as some tokens give it).
pub fn ec_spki(params: &[u8], point: &[u8]) -> Result<Vec<u8>, KeyStoreError> {
    let curve = ObjectIdentifier::from_der(params).map_err(internal("CKA_EC_PARAMS"))?;
    let point = match OctetStringRef::from_der(point) {
        Ok(octets) => octets.as_bytes(),
        Err(_) => point,
    };
    let parameters = rsa::pkcs8::der::asn1::AnyRef::from(&curve);
    let info = SubjectPublicKeyInfoRef {
        algorithm: AlgorithmIdentifierRef {
            oid: EC_PUBLIC_KEY,
            parameters: Some(parameters),
        },
        subject_public_key: BitStringRef::from_bytes(point).map_err(internal("CKA_EC_POINT"))?,
    };
    info.to_der()
        .map_err(internal("cannot encode the public key"))
}

/// The DER SubjectPublicKeyInfo of an RSA public key from `CKA_MODULUS` and
/// `CKA_PUBLIC_EXPONENT`.
pub fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Result<Vec<u8>, KeyStoreError> {
    use rsa::pkcs8::EncodePublicKey;
    let key = rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(modulus),
        rsa::BigUint::from_bytes_be(exponent),
    )
    .map_err(|e| KeyStoreError::Internal(format!("the device's RSA public key: {e}")))?;
    key.to_public_key_der()
        .map(|der| der.as_bytes().to_vec())
        .map_err(|e| KeyStoreError::Internal(format!("cannot encode the public key: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_signatures_are_der_with_minimal_integers() {
        // r has its high bit set (a leading zero is added), s has leading zeros (dropped).
        let mut raw = vec![0x80; 32];
        raw.extend([0x00, 0x00, 0x01]);
        raw.extend(vec![0x11; 29]);
        let der = ecdsa_der(&raw).unwrap();
        let parsed = p256::ecdsa::Signature::from_der(&der).unwrap();
        assert_eq!(parsed.to_bytes().as_slice(), raw.as_slice());
        assert!(ecdsa_der(&raw[..63]).is_err());
    }

    #[test]
    fn peer_points_are_uncompressed_whatever_the_spki_holds() {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        use p256::pkcs8::EncodePublicKey;
        let secret = p256::SecretKey::from_slice(&[9u8; 32]).unwrap();
        let public = secret.public_key();
        let uncompressed = public.to_encoded_point(false).as_bytes().to_vec();
        assert_eq!(uncompressed.len(), 65);
        let der = public.to_public_key_der().unwrap();
        assert_eq!(
            peer_point(KeySpec::EccNistP256, der.as_bytes()).unwrap(),
            uncompressed
        );
        // The same point in compressed form, in a hand-made SPKI.
        let compressed = public.to_encoded_point(true);
        let params = ec_params(KeySpec::EccNistP256).unwrap();
        let spki = ec_spki(params, compressed.as_bytes()).unwrap();
        assert_eq!(
            peer_point(KeySpec::EccNistP256, &spki).unwrap(),
            uncompressed
        );
        // Another curve, or a spec that does not agree on keys, is refused.
        assert!(peer_point(KeySpec::EccNistP384, der.as_bytes()).is_err());
        assert!(peer_point(KeySpec::EccSecgP256k1, der.as_bytes()).is_err());
    }

    #[test]
    fn key_agreement_private_keys_derive_and_do_not_sign() {
        let (_, public, private) =
            templates(KeySpec::EccNistP256, b"l".to_vec(), b"i".to_vec(), true).unwrap();
        for expected in [
            Attribute::Derive(true),
            Attribute::Sign(false),
            Attribute::Decrypt(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
        ] {
            assert!(private.contains(&expected), "{expected:?}");
        }
        assert!(public.contains(&Attribute::Verify(false)));
        let (_, _, signing) =
            templates(KeySpec::EccNistP256, b"l".to_vec(), b"i".to_vec(), false).unwrap();
        assert!(
            signing.contains(&Attribute::Sign(true)) && signing.contains(&Attribute::Derive(false))
        );
        assert!(templates(KeySpec::Rsa2048, b"l".to_vec(), b"i".to_vec(), true).is_none());
    }

    #[test]
    fn ec_public_keys_are_the_spki_of_their_curve() {
        use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
        let secret = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
        let point = secret.public_key().to_sec1_bytes();
        let wrapped = OctetStringRef::new(&point).unwrap().to_der().unwrap();
        let params = ec_params(KeySpec::EccNistP256).unwrap();
        let expected = secret.public_key().to_public_key_der().unwrap();
        for given in [&wrapped[..], &point[..]] {
            let der = ec_spki(params, given).unwrap();
            assert_eq!(der, expected.as_bytes());
            p256::PublicKey::from_public_key_der(&der).unwrap();
        }
    }
}
