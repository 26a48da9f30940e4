//! Which condition keys exist in the namespaces Keyhaven answers for (`aws:`, `kms:` and its
//! own `audit:`), so that a policy naming one that does not is refused when it is put: a Deny
//! conditioned on a misspelt key (`kms:EncryptionContex:tenant`) would otherwise never apply,
//! and nobody would know.
//!
//! The lists are AWS's documented global keys and AWS KMS's keys, so a policy written for AWS
//! parses here unchanged even where it asks about a key Keyhaven never sets (the key is then
//! simply absent from the request). Keys of other services (`s3:prefix`, `ec2:Region`) are
//! AWS's business and are accepted as they are.

/// AWS's global condition keys (lower-case; keys are case-insensitive).
const AWS_KEYS: &[&str] = &[
    "aws:calledvia",
    "aws:calledviafirst",
    "aws:calledvialast",
    "aws:currenttime",
    "aws:ec2instancesourceprivateipv4",
    "aws:ec2instancesourcevpc",
    "aws:epochtime",
    "aws:federatedprovider",
    "aws:multifactorauthage",
    "aws:multifactorauthpresent",
    "aws:principalaccount",
    "aws:principalarn",
    "aws:principalisawsservice",
    "aws:principalorgid",
    "aws:principalorgpaths",
    "aws:principalservicename",
    "aws:principalservicenameslist",
    "aws:principaltype",
    "aws:referer",
    "aws:requestedregion",
    "aws:resourceaccount",
    "aws:resourceorgid",
    "aws:resourceorgpaths",
    "aws:securetransport",
    "aws:sourceaccount",
    "aws:sourcearn",
    "aws:sourceidentity",
    "aws:sourceip",
    "aws:sourceorgid",
    "aws:sourceorgpaths",
    "aws:sourcevpc",
    "aws:sourcevpcarn",
    "aws:sourcevpce",
    "aws:tagkeys",
    "aws:tokenissuetime",
    "aws:useragent",
    "aws:userid",
    "aws:username",
    "aws:viaawsservice",
    "aws:vpcsourceip",
];

/// AWS's global keys that take a tag name after a slash (`aws:PrincipalTag/team`).
const AWS_PREFIXES: &[&str] = &["aws:principaltag/", "aws:requesttag/", "aws:resourcetag/"];

/// AWS KMS's condition keys.
const KMS_KEYS: &[&str] = &[
    "kms:bypasspolicylockoutsafetycheck",
    "kms:calleraccount",
    "kms:customermasterkeyspec",
    "kms:customermasterkeyusage",
    "kms:datakeypairspec",
    "kms:encryptionalgorithm",
    "kms:encryptioncontextkeys",
    "kms:expirationmodel",
    "kms:grantconstrainttype",
    "kms:grantisforawsresource",
    "kms:grantoperations",
    "kms:granteeprincipal",
    "kms:keyagreementalgorithm",
    "kms:keyorigin",
    "kms:keyspec",
    "kms:keyusage",
    "kms:macalgorithm",
    "kms:messagetype",
    "kms:multiregion",
    "kms:multiregionkeytype",
    "kms:primaryregion",
    "kms:reencryptonsamekey",
    "kms:replicaregion",
    "kms:requestalias",
    "kms:resourcealiases",
    "kms:retiringprincipal",
    "kms:rotationperiodindays",
    "kms:schedulekeydeletionpendingwindowindays",
    "kms:signingalgorithm",
    "kms:validto",
    "kms:viaservice",
    "kms:wrappingalgorithm",
    "kms:wrappingkeyspec",
];

/// AWS KMS's keys that take a name after a colon (`kms:EncryptionContext:tenant`).
const KMS_PREFIXES: &[&str] = &["kms:encryptioncontext:", "kms:recipientattestation:"];

/// Keyhaven's own keys: the keystore a key is made in (`pkcs11:hsm`, `sealed`).
const KEYHAVEN_KEYS: &[&str] = &["keyhaven:keystore"];

/// The namespaces whose keys Keyhaven vouches for.
const OWNED: &[&str] = &["aws", "kms", "audit", "keyhaven"];

/// `Ok` when `key` is a key Keyhaven knows or belongs to another service; otherwise why not.
pub fn check(key: &str) -> Result<(), String> {
    let lower = key.to_ascii_lowercase();
    let Some((namespace, _)) = lower.split_once(':') else {
        return Ok(());
    };
    if !OWNED.contains(&namespace) {
        return Ok(());
    }
    let known = AWS_KEYS.contains(&lower.as_str())
        || KMS_KEYS.contains(&lower.as_str())
        || KEYHAVEN_KEYS.contains(&lower.as_str())
        || AWS_PREFIXES
            .iter()
            .chain(KMS_PREFIXES)
            .any(|prefix| lower.len() > prefix.len() && lower.starts_with(prefix));
    if known {
        Ok(())
    } else {
        Err(format!(
            "\"{key}\" is not a condition key of the {namespace}: namespace (a condition on it \
             would never apply)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn keys_of_our_namespaces_must_exist_and_others_are_accepted() {
        for key in [
            "kms:EncryptionContext:tenant",
            "KMS:ENCRYPTIONCONTEXT:Tenant",
            "kms:EncryptionContextKeys",
            "kms:ViaService",
            "kms:CallerAccount",
            "aws:SourceIp",
            "aws:PrincipalArn",
            "aws:userid",
            "aws:PrincipalTag/team",
            "aws:MultiFactorAuthPresent",
            "s3:prefix",
            "ec2:Region",
            "sts:ExternalId",
            "nonamespace",
        ] {
            assert_eq!(check(key), Ok(()), "{key}");
        }
        for key in [
            "kms:EncryptionContex:tenant",
            "kms:EncryptionContext:",
            "kms:EncryptionContextKey",
            "aws:SourceIP4",
            "aws:PrincipalTag/",
            "aws:usrname",
            "audit:Anything",
        ] {
            let refusal = check(key).expect_err(key);
            assert!(refusal.contains(key), "{refusal}");
        }
    }
}
