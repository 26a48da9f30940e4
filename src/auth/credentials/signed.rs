//! The check of a signed request: its signature by its door's rules, its date, its replay,
//! its credentials (a temporary credential's token, the access key's state) and the host it
//! was addressed to.

use super::{CredentialStore, MAX_SKEW_SECONDS, SignatureUse};
use crate::auth::signature::{self, HOST_HEADER, TOKEN_HEADER};
use crate::auth::{AuthError, Caller};
use sha2::{Digest, Sha256};

/// Which door a signed request came through, and so which rules its signature follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureDoor {
    /// Keyhaven's gRPC signatures: a signed nonce, and each signature accepted once.
    Grpc,
    /// Standard SigV4 as the AWS SDKs send it. SigV4 has no nonce, so an identical request
    /// (an SDK's retry, or two CreateKey calls in one second) is answered again, as AWS does;
    /// the five-minute window still bounds when it is accepted.
    AwsHttp,
}

/// A signed request as its door received it.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub door: SignatureDoor,
    /// The service the request is for (`kms`, `sts`): its credential scope must name it.
    pub service: &'a str,
    pub method: &'a str,
    /// The canonical URI (the gRPC method path, or `/`).
    pub path: &'a str,
    /// The canonical query string.
    pub query: &'a str,
    /// The `:authority` or `Host` the request arrived with.
    pub authority: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    /// The hex SHA-256 of the body as received.
    pub body_sha256_hex: &'a str,
}

/// Whether `authority` (`name` or `name:port`) is one of `accepted` (an empty list accepts
/// all): an entry `name` matches on any port, `name:port` on that port only; case is ignored.
pub(crate) fn host_accepted(accepted: &[String], authority: &str) -> bool {
    let authority = authority.to_ascii_lowercase();
    let name = match authority.rsplit_once(':') {
        // Not an IPv6 literal's colon: `[::1]:7878` splits at the port, `[::1]` not at all.
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => authority.as_str(),
    };
    accepted.is_empty()
        || accepted.iter().any(|entry| {
            let entry = entry.to_ascii_lowercase();
            entry == authority || entry == name
        })
}

impl CredentialStore {
    /// Verifies a gRPC request's signature: `method_path` is the gRPC path, `authority` the
    /// `:authority` (or `Host`) the request arrived with, `body_sha256_hex` the hash of the
    /// request message as received.
    pub fn authenticate(
        &self,
        method_path: &str,
        authority: Option<&str>,
        headers: &http::HeaderMap,
        body_sha256_hex: &str,
    ) -> Result<(Caller, SignatureUse), AuthError> {
        self.authenticate_request(&SignedRequest {
            door: SignatureDoor::Grpc,
            service: signature::SERVICE,
            method: "POST",
            path: method_path,
            query: "",
            authority,
            headers,
            body_sha256_hex,
        })
    }

    /// Verifies a request's signature by its door's rules (see [`SignatureDoor`]).
    pub fn authenticate_request(
        &self,
        request: &SignedRequest<'_>,
    ) -> Result<(Caller, SignatureUse), AuthError> {
        let SignedRequest {
            door,
            authority,
            headers,
            body_sha256_hex,
            ..
        } = *request;
        let replay_checked = door == SignatureDoor::Grpc;
        let header = |name: &str| -> Result<Option<&str>, AuthError> {
            headers
                .get(name)
                .map(|v| {
                    v.to_str()
                        .map_err(|_| AuthError::Malformed(format!("{name} is not text")))
                })
                .transpose()
        };
        let authorization = header(signature::AUTHORIZATION)?.ok_or(AuthError::Missing)?;
        let rules = match door {
            SignatureDoor::Grpc => &signature::GRPC_RULES,
            SignatureDoor::AwsHttp => &signature::AWS_HTTP_RULES,
        };
        let parsed = signature::parse_authorization_with(authorization, rules)
            .map_err(AuthError::Malformed)?;
        if parsed.service != request.service {
            return Err(AuthError::Malformed(format!(
                "the Credential should be scoped to the service '{}'",
                request.service
            )));
        }
        let amz_date = header(signature::DATE_HEADER)?
            .ok_or_else(|| AuthError::Malformed("x-amz-date is missing".into()))?;
        let request_time = signature::parse_amz_date(amz_date)
            .ok_or_else(|| AuthError::Malformed("x-amz-date is not YYYYMMDDTHHMMSSZ".into()))?;
        if !amz_date.starts_with(parsed.date) {
            return Err(AuthError::Malformed(
                "the Credential date differs from x-amz-date".into(),
            ));
        }
        if parsed.region != self.region {
            return Err(AuthError::Malformed(format!(
                "the Credential region must be '{}'",
                self.region
            )));
        }
        let now = self.clock.now();
        if (now - request_time).abs() > MAX_SKEW_SECONDS {
            return Err(AuthError::Expired {
                request_time,
                server_time: now,
            });
        }
        let entry = self.usable_entry(parsed.access_key_id)?;
        if entry.record.session_token_sha256.is_some() {
            if !parsed.signed_headers.contains(&TOKEN_HEADER) {
                return Err(AuthError::Malformed(format!(
                    "temporary credentials need {TOKEN_HEADER}, signed"
                )));
            }
        } else if headers.contains_key(TOKEN_HEADER) {
            return Err(AuthError::Malformed(format!(
                "{TOKEN_HEADER} is only for temporary credentials"
            )));
        }
        // A replay is named as one even when it was sent on to another address.
        if replay_checked
            && (self
                .replay
                .seen(&parsed.signature, request_time + MAX_SKEW_SECONDS)
                || self.stored_before_start(&parsed.signature, request_time))
        {
            return Err(AuthError::Replayed);
        }
        // So is one dated before the start, which an earlier run may have accepted without
        // storing its signature.
        if replay_checked && request_time < self.started {
            return Err(AuthError::SignedBeforeStart {
                request_time,
                started: self.started,
            });
        }
        let mut signed = Vec::with_capacity(parsed.signed_headers.len());
        for &name in &parsed.signed_headers {
            let value = if name == HOST_HEADER {
                authority
            } else {
                header(name)?
            };
            let value = value
                .ok_or_else(|| AuthError::Malformed(format!("signed header {name} is missing")))?;
            signed.push((name, value));
        }
        debug_assert!(
            rules
                .required_signed
                .iter()
                .all(|r| signed.iter().any(|(n, _)| n == r))
        );
        // Sent by SDKs that hash the body themselves: it must be this body's hash.
        if let Some(sent) = header(signature::CONTENT_SHA256_HEADER)?
            && sent != body_sha256_hex
        {
            return Err(AuthError::Malformed(format!(
                "{} is not the SHA-256 of the body",
                signature::CONTENT_SHA256_HEADER
            )));
        }
        let to_sign = signature::HttpRequestToSign {
            method: request.method,
            path: request.path,
            query: request.query,
            headers: &signed,
            body_sha256_hex,
            amz_date,
            date: parsed.date,
            region: parsed.region,
            service: parsed.service,
        };
        let key = entry.signing_key(parsed.date, parsed.region, parsed.service);
        if !to_sign.verify(key.expose(), &parsed.signature) {
            return Err(AuthError::BadSignature);
        }
        if let Some(expected) = &entry.record.session_token_sha256 {
            let token = header(TOKEN_HEADER)?.unwrap_or_default();
            let actual = hex::encode(Sha256::digest(token.as_bytes()));
            // Both are hashes: comparing them leaks nothing about the token.
            if &actual != expected {
                return Err(AuthError::BadSignature);
            }
            if entry.record.expires.is_some_and(|t| t <= now) {
                return Err(AuthError::ExpiredToken);
            }
        }
        let used = SignatureUse {
            signature: parsed.signature,
            expires: request_time + MAX_SKEW_SECONDS,
            view: self.store.view(),
        };
        if replay_checked && !self.replay.first_use(&used.signature, used.expires, now) {
            return Err(AuthError::Replayed);
        }
        if let Some(authority) = authority
            && !host_accepted(&self.accepted_hosts, authority)
        {
            // An authority is visible ASCII (http checks it); a long one is cut for the message.
            return Err(AuthError::HostNotAccepted(
                authority.chars().take(255).collect(),
            ));
        }
        Ok((
            Caller {
                principal: entry.principal.clone(),
                access_key_id: parsed.access_key_id.to_owned(),
                certificate: None,
                credential_kind: entry.record.credential_kind(),
            },
            used,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_hosts_match_by_name_or_by_name_and_port() {
        let accepted = |list: &[&str], authority: &str| {
            let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
            host_accepted(&list, authority)
        };
        assert!(accepted(&[], "anything:1"));
        let list = ["kms.example.com", "10.0.0.5:7878", "[::1]"];
        assert!(accepted(&list, "kms.example.com"));
        assert!(accepted(&list, "KMS.example.com:443"));
        assert!(accepted(&list, "10.0.0.5:7878"));
        assert!(accepted(&list, "[::1]:7878"));
        assert!(!accepted(&list, "10.0.0.5:7879"));
        assert!(!accepted(&list, "10.0.0.5"));
        assert!(!accepted(&list, "kms.example.com.evil"));
        assert!(!accepted(&list, "evil-kms.example.com"));
        assert!(!accepted(&list, "[::2]:7878"));
    }
}
