"""The AWS Encryption SDK (stock, from PyPI) encrypts and decrypts a 100 KB file with a
Keyhaven key through the AWS door. Reads the AWS_* variables and KEY_ARN; prints
`encryption sdk complete`."""

import os
import sys

import aws_encryption_sdk
import botocore.session
from aws_encryption_sdk import CommitmentPolicy

key_arn = os.environ["KEY_ARN"]
plaintext = os.urandom(100 * 1024)
client = aws_encryption_sdk.EncryptionSDKClient(
    commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
)
provider = aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(
    key_ids=[key_arn], botocore_session=botocore.session.Session()
)
ciphertext, header = client.encrypt(
    source=plaintext, key_provider=provider, encryption_context={"file": "report.bin"}
)
assert plaintext not in ciphertext
assert header.encryption_context["file"] == "report.bin"
decrypted, decrypted_header = client.decrypt(source=ciphertext, key_provider=provider)
assert decrypted == plaintext, "the file did not come back"
assert [k.key_provider.key_info.decode() for k in decrypted_header.encrypted_data_keys] == [key_arn]
tampered = bytearray(ciphertext)
tampered[len(tampered) // 2] ^= 1
try:
    client.decrypt(source=bytes(tampered), key_provider=provider)
except Exception as error:  # the SDK's own error types differ by version
    print("tampered file refused:", type(error).__name__, flush=True)
else:
    sys.exit("a tampered file decrypted")
print("encryption sdk complete", len(plaintext), flush=True)
