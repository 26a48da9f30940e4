"""Imports key material through Keyhaven's AWS door with boto3, a stock client nobody here
wrote, as AWS KMS's documentation does it: CreateKey with Origin EXTERNAL,
GetParametersForImport, the material wrapped with RSAES-OAEP-SHA-256 by the `cryptography`
package, ImportKeyMaterial with a ValidTo, then Encrypt, and the ciphertext opened here with
AES-256-GCM under the same material (Keyhaven's documented blob format). Then a forged token,
DeleteImportedKeyMaterial and other material on re-import are refused as AWS KMS refuses them.

Run by tests/aws_door.rs against a daemon it started. Reads AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION (the root). Prints `ok: <step>` per
step and `import complete` at the end; any failed expectation raises.
"""

import datetime
import os
import struct

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

CONFIG = Config(retries={"max_attempts": 1, "mode": "standard"})
kms = boto3.client("kms", endpoint_url=os.environ["AWS_ENDPOINT_URL"], config=CONFIG)


def refused(code, call, **kwargs):
    try:
        call(**kwargs)
    except ClientError as error:
        got = error.response["Error"]["Code"]
        assert got == code, f"expected {code}, got {got}: {error}"
        return
    raise AssertionError(f"expected {code}, the call succeeded")


def wrap(parameters, material):
    public = serialization.load_der_public_key(parameters["PublicKey"])
    return public.encrypt(
        material,
        padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    )


def open_blob(material, blob, context):
    # version (1) | key id (16) | key version (4) | nonce (12) | ciphertext || tag;
    # AAD = bytes 0-32 || pairs sorted by key, each as a u32 length and its bytes.
    assert blob[0] == 1
    aad = bytearray(blob[:33])
    for key in sorted(context):
        for part in (key, context[key]):
            data = part.encode()
            aad += struct.pack(">I", len(data)) + data
    return AESGCM(material).decrypt(blob[21:33], blob[33:], bytes(aad))


key = kms.create_key(Origin="EXTERNAL", Description="imported with boto3")["KeyMetadata"]
assert key["KeyState"] == "PendingImport", key
assert key["Origin"] == "EXTERNAL", key
key_id = key["KeyId"]
print("ok: create external key")

parameters = kms.get_parameters_for_import(
    KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
)
valid_for = parameters["ParametersValidTo"] - datetime.datetime.now(datetime.timezone.utc)
assert datetime.timedelta(hours=23) < valid_for <= datetime.timedelta(hours=24), valid_for
print("ok: get parameters for import")

material = os.urandom(32)
refused(
    "InvalidImportTokenException",
    kms.import_key_material,
    KeyId=key_id,
    ImportToken=parameters["ImportToken"][:-1] + bytes([parameters["ImportToken"][-1] ^ 1]),
    EncryptedKeyMaterial=wrap(parameters, material),
    ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
)
assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingImport"
print("ok: forged token refused")

valid_to = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30)
kms.import_key_material(
    KeyId=key_id,
    ImportToken=parameters["ImportToken"],
    EncryptedKeyMaterial=wrap(parameters, material),
    ValidTo=valid_to,
    ExpirationModel="KEY_MATERIAL_EXPIRES",
)
described = kms.describe_key(KeyId=key_id)["KeyMetadata"]
assert described["KeyState"] == "Enabled", described
assert described["ExpirationModel"] == "KEY_MATERIAL_EXPIRES", described
assert abs((described["ValidTo"] - valid_to).total_seconds()) < 1, described
print("ok: import key material")

context = {"purpose": "boto3"}
blob = kms.encrypt(KeyId=key_id, Plaintext=b"bring your own key", EncryptionContext=context)[
    "CiphertextBlob"
]
assert open_blob(material, blob, context) == b"bring your own key"
print("ok: the imported material encrypts")

kms.delete_imported_key_material(KeyId=key_id)
assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingImport"
refused("KMSInvalidStateException", kms.decrypt, CiphertextBlob=blob, EncryptionContext=context)
refused(
    "IncorrectKeyMaterialException",
    kms.import_key_material,
    KeyId=key_id,
    ImportToken=parameters["ImportToken"],
    EncryptedKeyMaterial=wrap(parameters, os.urandom(32)),
    ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
)
kms.import_key_material(
    KeyId=key_id,
    ImportToken=parameters["ImportToken"],
    EncryptedKeyMaterial=wrap(parameters, material),
    ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
)
assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"] == (
    b"bring your own key"
)
print("ok: delete and re-import")
print("import complete")
