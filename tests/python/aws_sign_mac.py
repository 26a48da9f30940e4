"""Asymmetric and HMAC keys through the AWS door with boto3: Sign, Verify, GetPublicKey,
GenerateMac and VerifyMac. Signatures made by Keyhaven are checked by the `cryptography`
package against the public key GetPublicKey returns, so that what Keyhaven signs verifies
anywhere. Reads the AWS_* variables (the root's); prints `sign and mac complete`."""

import hashlib

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
from cryptography.hazmat.primitives.serialization import load_der_public_key

CONFIG = Config(retries={"max_attempts": 1, "mode": "standard"})
kms = boto3.client("kms", config=CONFIG)


def refused(code, call, **kwargs):
    try:
        call(**kwargs)
    except ClientError as error:
        got = error.response["Error"]["Code"]
        status = error.response["ResponseMetadata"]["HTTPStatusCode"]
        assert got == code and status == 400, f"expected {code}/400, got {got}/{status}: {error}"
        return
    raise AssertionError(f"expected {code}, the call succeeded")


message = b"release v1.2.3"

# ECDSA: signed by Keyhaven, verified by `cryptography` with the public key from the door.
ecc = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
assert ecc["SigningAlgorithms"] == ["ECDSA_SHA_256"], ecc
signed = kms.sign(KeyId=ecc["KeyId"], Message=message, MessageType="RAW",
                  SigningAlgorithm="ECDSA_SHA_256")
assert signed["KeyId"] == ecc["Arn"] and signed["SigningAlgorithm"] == "ECDSA_SHA_256", signed
public = kms.get_public_key(KeyId=ecc["KeyId"])
assert public["KeyId"] == ecc["Arn"], public
assert public["KeySpec"] == "ECC_NIST_P256" and public["KeyUsage"] == "SIGN_VERIFY", public
assert public["SigningAlgorithms"] == ["ECDSA_SHA_256"], public
ec_public = load_der_public_key(public["PublicKey"])
ec_public.verify(signed["Signature"], message, ec.ECDSA(hashes.SHA256()))
try:
    ec_public.verify(signed["Signature"], message + b"!", ec.ECDSA(hashes.SHA256()))
    raise AssertionError("a signature verified for another message")
except InvalidSignature:
    pass
print("ok: ECDSA signature verified by cryptography")

verified = kms.verify(KeyId=ecc["KeyId"], Message=message, Signature=signed["Signature"],
                      SigningAlgorithm="ECDSA_SHA_256")
assert verified["SignatureValid"] is True and verified["KeyId"] == ecc["Arn"], verified
refused("KMSInvalidSignatureException", kms.verify, KeyId=ecc["KeyId"], Message=message + b"!",
        Signature=signed["Signature"], SigningAlgorithm="ECDSA_SHA_256")
# A digest signed as DIGEST verifies as the RAW message it is the hash of.
digest = hashlib.sha256(message).digest()
by_digest = kms.sign(KeyId=ecc["KeyId"], Message=digest, MessageType="DIGEST",
                     SigningAlgorithm="ECDSA_SHA_256")["Signature"]
ec_public.verify(by_digest, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
ec_public.verify(by_digest, message, ec.ECDSA(hashes.SHA256()))
refused("InvalidKeyUsageException", kms.sign, KeyId=ecc["KeyId"], Message=message,
        SigningAlgorithm="RSASSA_PSS_SHA_256")
refused("InvalidKeyUsageException", kms.encrypt, KeyId=ecc["KeyId"], Plaintext=b"x")
print("ok: Verify and refusals")

# RSA-PSS, as AWS: MGF1 of the same hash, salt as long as the digest.
rsa = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
rsa_signature = kms.sign(KeyId=rsa["KeyId"], Message=message,
                         SigningAlgorithm="RSASSA_PSS_SHA_256")["Signature"]
rsa_public = load_der_public_key(kms.get_public_key(KeyId=rsa["KeyId"])["PublicKey"])
rsa_public.verify(rsa_signature, message,
                  padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
                  hashes.SHA256())
print("ok: RSA-PSS signature verified by cryptography")

# A symmetric key has no public key and does not sign.
symmetric = kms.create_key()["KeyMetadata"]["KeyId"]
refused("UnsupportedOperationException", kms.get_public_key, KeyId=symmetric)
refused("InvalidKeyUsageException", kms.sign, KeyId=symmetric, Message=message,
        SigningAlgorithm="ECDSA_SHA_256")

# HMAC keys.
hmac_key = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]
assert hmac_key["MacAlgorithms"] == ["HMAC_SHA_256"], hmac_key
mac = kms.generate_mac(KeyId=hmac_key["KeyId"], Message=message, MacAlgorithm="HMAC_SHA_256")
assert mac["KeyId"] == hmac_key["Arn"] and mac["MacAlgorithm"] == "HMAC_SHA_256", mac
assert len(mac["Mac"]) == 32, mac
again = kms.generate_mac(KeyId=hmac_key["KeyId"], Message=message, MacAlgorithm="HMAC_SHA_256")
assert again["Mac"] == mac["Mac"], "HMAC is deterministic"
checked = kms.verify_mac(KeyId=hmac_key["KeyId"], Message=message, Mac=mac["Mac"],
                         MacAlgorithm="HMAC_SHA_256")
assert checked["MacValid"] is True and checked["KeyId"] == hmac_key["Arn"], checked
tampered = bytes([mac["Mac"][0] ^ 1]) + mac["Mac"][1:]
refused("KMSInvalidMacException", kms.verify_mac, KeyId=hmac_key["KeyId"], Message=message,
        Mac=tampered, MacAlgorithm="HMAC_SHA_256")
refused("InvalidKeyUsageException", kms.generate_mac, KeyId=hmac_key["KeyId"], Message=message,
        MacAlgorithm="HMAC_SHA_512")
refused("InvalidKeyUsageException", kms.generate_mac, KeyId=symmetric, Message=message,
        MacAlgorithm="HMAC_SHA_256")
refused("ValidationException", kms.generate_mac, KeyId=hmac_key["KeyId"], Message=b"x" * 4097,
        MacAlgorithm="HMAC_SHA_256")
kms.disable_key(KeyId=hmac_key["KeyId"])
refused("DisabledException", kms.verify_mac, KeyId=hmac_key["KeyId"], Message=message,
        Mac=mac["Mac"], MacAlgorithm="HMAC_SHA_256")
kms.disable_key(KeyId=ecc["KeyId"])
refused("DisabledException", kms.sign, KeyId=ecc["KeyId"], Message=message,
        SigningAlgorithm="ECDSA_SHA_256")
refused("NotFoundException", kms.get_public_key, KeyId="alias/nothing-here")
print("ok: MACs")
print("sign and mac complete")
