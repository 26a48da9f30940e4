"""The README's "Using the AWS SDKs and CLI" example, run as written against the settings
`keyhaven serve --dev` printed (tests/aws_door.rs pastes them into the environment)."""

import boto3
kms = boto3.client("kms")   # endpoint, credentials and region from the environment
key = kms.create_key(Description="orders")["KeyMetadata"]["KeyId"]
kms.create_alias(AliasName="alias/orders", TargetKeyId=key)
blob = kms.encrypt(KeyId="alias/orders", Plaintext=b"hello",
                   EncryptionContext={"tenant": "7"})["CiphertextBlob"]
assert kms.decrypt(CiphertextBlob=blob, EncryptionContext={"tenant": "7"})["Plaintext"] == b"hello"
data_key = kms.generate_data_key(KeyId=key, KeySpec="AES_256")

print("readme example complete", key, flush=True)
