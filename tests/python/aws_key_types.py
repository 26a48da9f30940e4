"""Drives Keyhaven's asymmetric and HMAC keys through the AWS door with boto3, and checks
the answers with the `cryptography` package (both stock, nobody here wrote them).

Run by tests/aws_door.rs against a daemon it started. Reads AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION (the root). Prints `ok: <step>` per
step and `key types complete` at the end; any failed expectation raises.
"""

import os

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

CONFIG = Config(retries={"max_attempts": 1, "mode": "standard"})
kms = boto3.client(
    "kms",
    endpoint_url=os.environ["AWS_ENDPOINT_URL"],
    region_name=os.environ["AWS_REGION"],
    config=CONFIG,
)


def refused(reason, call, **kwargs):
    try:
        call(**kwargs)
    except ClientError as error:
        got = error.response["Error"]["Code"]
        assert got == reason, f"{call.__name__}: {got} ({error}), expected {reason}"
        return
    raise AssertionError(f"{call.__name__} was not refused ({reason} expected)")


def create(spec, usage):
    return kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]


# Sign and Verify, P-256, P-521 and secp256k1: cryptography verifies the DER signatures with
# the DER SubjectPublicKeyInfo of GetPublicKey.
for spec, algorithm, digest in [
    ("ECC_NIST_P256", "ECDSA_SHA_256", hashes.SHA256()),
    ("ECC_NIST_P521", "ECDSA_SHA_512", hashes.SHA512()),
    ("ECC_SECG_P256K1", "ECDSA_SHA_256", hashes.SHA256()),
]:
    key = create(spec, "SIGN_VERIFY")
    assert key["SigningAlgorithms"] == [algorithm], key
    public = kms.get_public_key(KeyId=key["KeyId"])
    assert public["KeySpec"] == spec and public["KeyUsage"] == "SIGN_VERIFY", public
    assert public["SigningAlgorithms"] == [algorithm], public
    verifier = serialization.load_der_public_key(public["PublicKey"])
    message = b"signed through the AWS door"
    signed = kms.sign(
        KeyId=key["KeyId"], Message=message, MessageType="RAW", SigningAlgorithm=algorithm
    )
    assert signed["SigningAlgorithm"] == algorithm and signed["KeyId"] == key["Arn"]
    verifier.verify(signed["Signature"], message, ec.ECDSA(digest))
    try:
        verifier.verify(signed["Signature"], b"another message", ec.ECDSA(digest))
        raise AssertionError("cryptography accepted a signature of another message")
    except InvalidSignature:
        pass
    # A signature cryptography makes over a digest verifies in Keyhaven (DIGEST).
    hasher = hashes.Hash(digest)
    hasher.update(message)
    prehashed = hasher.finalize()
    assert kms.verify(
        KeyId=key["KeyId"],
        Message=prehashed,
        MessageType="DIGEST",
        Signature=signed["Signature"],
        SigningAlgorithm=algorithm,
    )["SignatureValid"]
    bad = bytearray(signed["Signature"])
    bad[-1] ^= 1
    refused(
        "KMSInvalidSignatureException",
        kms.verify,
        KeyId=key["KeyId"],
        Message=message,
        Signature=bytes(bad),
        SigningAlgorithm=algorithm,
    )
    refused(
        "InvalidKeyUsageException",
        kms.sign,
        KeyId=key["KeyId"],
        Message=message,
        SigningAlgorithm="RSASSA_PSS_SHA_256",
    )
    print(f"ok: sign and verify {spec}")

# HMAC.
mac_key = create("HMAC_256", "GENERATE_VERIFY_MAC")
assert mac_key["MacAlgorithms"] == ["HMAC_SHA_256"], mac_key
mac = kms.generate_mac(KeyId=mac_key["KeyId"], Message=b"m", MacAlgorithm="HMAC_SHA_256")
assert len(mac["Mac"]) == 32
assert kms.verify_mac(
    KeyId=mac_key["KeyId"], Message=b"m", MacAlgorithm="HMAC_SHA_256", Mac=mac["Mac"]
)["MacValid"]
refused(
    "KMSInvalidMacException",
    kms.verify_mac,
    KeyId=mac_key["KeyId"],
    Message=b"n",
    MacAlgorithm="HMAC_SHA_256",
    Mac=mac["Mac"],
)
print("ok: generate and verify mac")

# RSA encryption: cryptography encrypts with the public key, Keyhaven decrypts; Keyhaven
# encrypts, Keyhaven decrypts.
rsa_key = create("RSA_2048", "ENCRYPT_DECRYPT")
assert rsa_key["EncryptionAlgorithms"] == ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"], rsa_key
rsa_public = serialization.load_der_public_key(
    kms.get_public_key(KeyId=rsa_key["KeyId"])["PublicKey"]
)
for algorithm, digest in [("RSAES_OAEP_SHA_1", hashes.SHA1()), ("RSAES_OAEP_SHA_256", hashes.SHA256())]:
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=digest), algorithm=digest, label=None)
    ciphertext = rsa_public.encrypt(b"for keyhaven only", oaep)
    opened = kms.decrypt(
        KeyId=rsa_key["KeyId"], CiphertextBlob=ciphertext, EncryptionAlgorithm=algorithm
    )
    assert opened["Plaintext"] == b"for keyhaven only" and opened["EncryptionAlgorithm"] == algorithm
    sealed = kms.encrypt(KeyId=rsa_key["KeyId"], Plaintext=b"round trip", EncryptionAlgorithm=algorithm)
    assert sealed["EncryptionAlgorithm"] == algorithm and len(sealed["CiphertextBlob"]) == 256
    assert (
        kms.decrypt(
            KeyId=rsa_key["KeyId"],
            CiphertextBlob=sealed["CiphertextBlob"],
            EncryptionAlgorithm=algorithm,
        )["Plaintext"]
        == b"round trip"
    )
refused(
    "InvalidCiphertextException",
    kms.decrypt,
    KeyId=rsa_key["KeyId"],
    CiphertextBlob=ciphertext,
    EncryptionAlgorithm="RSAES_OAEP_SHA_1",
)
refused("InvalidKeyUsageException", kms.encrypt, KeyId=rsa_key["KeyId"], Plaintext=b"m")
refused(
    "ValidationException",
    kms.encrypt,
    KeyId=rsa_key["KeyId"],
    Plaintext=b"x" * 191,
    EncryptionAlgorithm="RSAES_OAEP_SHA_256",
)
print("ok: rsa encrypt and decrypt")

# Key agreement: Keyhaven's shared secret is cryptography's.
agreeing = create("ECC_NIST_P384", "KEY_AGREEMENT")
assert agreeing["KeyAgreementAlgorithms"] == ["ECDH"], agreeing
kms_public = serialization.load_der_public_key(
    kms.get_public_key(KeyId=agreeing["KeyId"])["PublicKey"]
)
peer = ec.generate_private_key(ec.SECP384R1())
peer_der = peer.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
)
derived = kms.derive_shared_secret(
    KeyId=agreeing["KeyId"], KeyAgreementAlgorithm="ECDH", PublicKey=peer_der
)
assert derived["SharedSecret"] == peer.exchange(ec.ECDH(), kms_public)
assert derived["KeyAgreementAlgorithm"] == "ECDH" and derived["KeyOrigin"] == "AWS_KMS"
refused(
    "ValidationException",
    kms.derive_shared_secret,
    KeyId=agreeing["KeyId"],
    KeyAgreementAlgorithm="ECDH",
    PublicKey=rsa_public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ),
)
print("ok: derive shared secret")

# Data key pairs under a symmetric key.
aes = kms.create_key()["KeyMetadata"]
for spec in ["ECC_NIST_P256", "RSA_2048", "ECC_SECG_P256K1"]:
    pair = kms.generate_data_key_pair(
        KeyId=aes["KeyId"], KeyPairSpec=spec, EncryptionContext={"purpose": "pair"}
    )
    assert pair["KeyPairSpec"] == spec and pair["KeyId"] == aes["Arn"]
    private = serialization.load_der_private_key(pair["PrivateKeyPlaintext"], password=None)
    assert (
        private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == pair["PublicKey"]
    )
    opened = kms.decrypt(
        CiphertextBlob=pair["PrivateKeyCiphertextBlob"], EncryptionContext={"purpose": "pair"}
    )
    assert opened["Plaintext"] == pair["PrivateKeyPlaintext"]
    without = kms.generate_data_key_pair_without_plaintext(KeyId=aes["KeyId"], KeyPairSpec=spec)
    assert "PrivateKeyPlaintext" not in without and without["KeyPairSpec"] == spec
    private = serialization.load_der_private_key(
        kms.decrypt(CiphertextBlob=without["PrivateKeyCiphertextBlob"])["Plaintext"],
        password=None,
    )
    assert (
        private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == without["PublicKey"]
    )
refused(
    "InvalidKeyUsageException",
    kms.generate_data_key_pair,
    KeyId=rsa_key["KeyId"],
    KeyPairSpec="ECC_NIST_P256",
)
print("ok: data key pairs")
print("key types complete")
