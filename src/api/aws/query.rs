//! The AWS Query protocol, for STS and IAM: a form-encoded body (`Action=AssumeRole&Version=
//! 2011-06-15&RoleArn=…`), an XML answer `<ActionResponse><ActionResult>…`, and errors as
//! `<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/></ErrorResponse>` with
//! the Query protocol's codes (`AccessDenied`, `InvalidClientTokenId`, `SignatureDoesNotMatch`…).
//! The STS actions are here; the IAM actions in [`super::iam`].

use crate::api::authorize::CallContext;
use crate::api::operations::{IamOperations, StsOperations, WebIdentityOperations};
use crate::api::status::ApiError;
use crate::proto::v1;
use bytes::Bytes;
use http_body_util::Full;
use std::collections::BTreeMap;
use tonic::Code;

const STS_VERSION: &str = "2011-06-15";
const STS_NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
const ACTIONS: [&str; 4] = [
    "GetCallerIdentity",
    "AssumeRole",
    "GetSessionToken",
    "AssumeRoleWithWebIdentity",
];

/// The service a Query request's action belongs to (what its signature must be scoped to).
pub fn service(body: &[u8]) -> &'static str {
    let action = fields(body).ok().and_then(|f| f.get("Action").cloned());
    match action {
        Some(action) if super::iam::ACTIONS.contains(&action.as_str()) => "iam",
        _ => "sts",
    }
}

fn namespace(service: &str) -> &'static str {
    if service == "iam" {
        super::iam::NAMESPACE
    } else {
        STS_NAMESPACE
    }
}

pub(super) fn invalid(code: &'static str, message: impl std::fmt::Display) -> ApiError {
    ApiError::new(Code::InvalidArgument, code, message)
}

/// The form's fields; a field given twice is refused (which of them was meant is not known).
pub(super) fn fields(body: &[u8]) -> Result<BTreeMap<String, String>, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| invalid("MalformedQueryString", "the body is not UTF-8"))?;
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(&part.replace('+', " "))
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| invalid("MalformedQueryString", "a field is not UTF-8 once decoded"))
    };
    let mut fields = BTreeMap::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(name)?;
        if fields.insert(name.clone(), decode(value)?).is_some() {
            return Err(invalid(
                "InvalidParameterCombination",
                format!(
                    "the field {} is given more than once",
                    crate::keys::printable_input(&name)
                ),
            ));
        }
    }
    Ok(fields)
}

/// `sts:<Action>` or `iam:<Action>` for a served action; `unknown` otherwise.
pub fn operation_name(body: &[u8]) -> String {
    fields(body)
        .ok()
        .and_then(|f| f.get("Action").cloned())
        .and_then(|action| {
            if ACTIONS.contains(&action.as_str()) {
                Some(format!("sts:{action}"))
            } else if super::iam::ACTIONS.contains(&action.as_str()) {
                Some(format!("iam:{action}"))
            } else {
                None
            }
        })
        .unwrap_or_else(|| crate::api::auth_layer::UNKNOWN_OPERATION.to_owned())
}

pub(super) fn required<'a>(
    fields: &'a BTreeMap<String, String>,
    name: &str,
) -> Result<&'a str, ApiError> {
    fields
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| invalid("MissingParameter", format!("the field {name} is required")))
}

/// Text for XML element content.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// `<name>text</name>` for each pair.
pub(super) fn elements(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(name, text)| format!("<{name}>{}</{name}>", escape(text)))
        .collect()
}

pub(super) fn document(namespace: &str, action: &str, result: &str, request_id: &str) -> Vec<u8> {
    format!(
        "<{action}Response xmlns=\"{namespace}\"><{action}Result>{result}</{action}Result>\
         <ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{action}Response>",
        escape(request_id)
    )
    .into_bytes()
}

pub(super) fn iso8601(time: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(time)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn optional(fields: &BTreeMap<String, String>, name: &str) -> String {
    fields.get(name).cloned().unwrap_or_default()
}

fn duration_seconds(fields: &BTreeMap<String, String>) -> Result<Option<u32>, ApiError> {
    match fields.get("DurationSeconds") {
        Some(text) => Ok(Some(text.parse().map_err(|_| {
            invalid(
                "ValidationError",
                "DurationSeconds must be a number of seconds",
            )
        })?)),
        None => Ok(None),
    }
}

/// `<Credentials>…</Credentials>`; the secrets are wiped from the message once written.
fn credentials(credentials: v1::Credentials) -> String {
    let mut secret = credentials.secret_access_key;
    let mut token = credentials.session_token;
    let result = format!(
        "<Credentials>{}</Credentials>",
        elements(&[
            ("AccessKeyId", &credentials.access_key_id),
            ("SecretAccessKey", &secret),
            ("SessionToken", &token),
            ("Expiration", &iso8601(credentials.expiration)),
        ])
    );
    zeroize::Zeroize::zeroize(&mut secret);
    zeroize::Zeroize::zeroize(&mut token);
    result
}

/// Runs STS `AssumeRoleWithWebIdentity`, admitted unsigned (its token is its credential).
pub async fn dispatch_web_identity(
    accounts: &crate::api::accounts::Accounts,
    source_ip: Option<std::net::IpAddr>,
    audit: &crate::api::AuditSlot,
    body: &[u8],
    request_id: &str,
) -> Result<Vec<u8>, ApiError> {
    let fields = fields(body)?;
    if required(&fields, "Version")? != STS_VERSION {
        return Err(invalid(
            "InvalidAction",
            format!("Version must be {STS_VERSION}"),
        ));
    }
    // A session policy would narrow the session: refused rather than ignored.
    if fields
        .keys()
        .any(|k| k == "Policy" || k.starts_with("PolicyArns."))
    {
        return Err(invalid(
            "ValidationError",
            "session policies (Policy, PolicyArns) are not supported",
        ));
    }
    let request = v1::AssumeRoleWithWebIdentityRequest {
        role_arn: required(&fields, "RoleArn")?.to_owned(),
        role_session_name: required(&fields, "RoleSessionName")?.to_owned(),
        web_identity_token: required(&fields, "WebIdentityToken")?.to_owned(),
        duration_seconds: duration_seconds(&fields)?,
    };
    let session = WebIdentityOperations::new(accounts)
        .assume_role_with_web_identity(source_ip, audit, request)
        .await?;
    let result = format!(
        "{}<SubjectFromWebIdentityToken>{}</SubjectFromWebIdentityToken>\
         <AssumedRoleUser>{}</AssumedRoleUser>{}",
        credentials(session.credentials.unwrap_or_default()),
        escape(&session.subject_from_web_identity_token),
        elements(&[
            ("Arn", &session.assumed_role_arn),
            ("AssumedRoleId", &session.assumed_role_id),
        ]),
        elements(&[
            ("Provider", &session.provider),
            ("Audience", &session.audience),
        ]),
    );
    Ok(document(
        STS_NAMESPACE,
        "AssumeRoleWithWebIdentity",
        &result,
        request_id,
    ))
}

/// Runs the action the form names.
pub async fn dispatch(
    (sts, iam): (&StsOperations, &IamOperations),
    call: &CallContext,
    body: &[u8],
    request_id: &str,
) -> Result<Vec<u8>, ApiError> {
    let fields = fields(body)?;
    let action = fields
        .get("Action")
        .ok_or_else(|| invalid("MissingAction", "the field Action is required"))?;
    if super::iam::ACTIONS.contains(&action.as_str()) {
        return super::iam::dispatch(iam, call, action, &fields, request_id).await;
    }
    if !ACTIONS.contains(&action.as_str()) {
        return Err(invalid(
            "InvalidAction",
            format!(
                "the action {} is not valid for this endpoint",
                crate::keys::printable_input(action)
            ),
        ));
    }
    if required(&fields, "Version")? != STS_VERSION {
        return Err(invalid(
            "InvalidAction",
            format!("Version must be {STS_VERSION}"),
        ));
    }
    match action.as_str() {
        "GetCallerIdentity" => {
            let who = sts
                .get_caller_identity(call, v1::GetCallerIdentityRequest {})
                .await?;
            let result = elements(&[
                ("Arn", &who.arn),
                ("UserId", &who.user_id),
                ("Account", &who.account),
            ]);
            Ok(document(
                STS_NAMESPACE,
                "GetCallerIdentity",
                &result,
                request_id,
            ))
        }
        "GetSessionToken" => {
            let request = v1::GetSessionTokenRequest {
                duration_seconds: duration_seconds(&fields)?,
                serial_number: optional(&fields, "SerialNumber"),
                token_code: optional(&fields, "TokenCode"),
            };
            let session = sts.get_session_token(call, request).await?;
            let result = credentials(session.credentials.unwrap_or_default());
            Ok(document(
                STS_NAMESPACE,
                "GetSessionToken",
                &result,
                request_id,
            ))
        }
        // Admitted unsigned and run before the caller's account is known (see
        // `dispatch_web_identity`); never here.
        "AssumeRoleWithWebIdentity" => Err(invalid(
            "InvalidAction",
            "AssumeRoleWithWebIdentity is not signed",
        )),
        _ => {
            let request = v1::AssumeRoleRequest {
                role_arn: required(&fields, "RoleArn")?.to_owned(),
                role_session_name: required(&fields, "RoleSessionName")?.to_owned(),
                duration_seconds: duration_seconds(&fields)?,
                serial_number: optional(&fields, "SerialNumber"),
                token_code: optional(&fields, "TokenCode"),
            };
            let session = sts.assume_role(call, request).await?;
            let result = format!(
                "{}<AssumedRoleUser>{}</AssumedRoleUser>",
                credentials(session.credentials.unwrap_or_default()),
                elements(&[
                    ("Arn", &session.assumed_role_arn),
                    ("AssumedRoleId", &session.assumed_role_id),
                ])
            );
            Ok(document(STS_NAMESPACE, "AssumeRole", &result, request_id))
        }
    }
}

/// The Query protocol's code for an error every door reports (its AWS JSON name, mostly
/// without the `Exception`).
fn code(error: &ApiError) -> &'static str {
    match error.aws_type() {
        "AccessDeniedException" => "AccessDenied",
        "UnrecognizedClientException" => "InvalidClientTokenId",
        "InvalidSignatureException" => "SignatureDoesNotMatch",
        "MissingAuthenticationTokenException" => "MissingAuthenticationToken",
        "IncompleteSignatureException" => "IncompleteSignature",
        "ExpiredTokenException" => "ExpiredToken",
        "NoSuchEntityException" => "NoSuchEntity",
        "EntityAlreadyExistsException" => "EntityAlreadyExists",
        "ValidationException" => "ValidationError",
        "LimitExceededException" => "LimitExceeded",
        "InvalidAuthenticationCodeException" => "InvalidAuthenticationCode",
        "DeleteConflictException" => "DeleteConflict",
        "ConcurrentModificationException" => "ConcurrentModification",
        "MalformedPolicyDocumentException" => "MalformedPolicyDocument",
        "PasswordPolicyViolationException" => "PasswordPolicyViolation",
        "ThrottlingException" => "Throttling",
        "UnknownOperationException" => "InvalidAction",
        "SerializationException" => "MalformedQueryString",
        other => other,
    }
}

/// The HTTP answer: the XML document, or the error as an `<ErrorResponse>` of `service`.
pub fn respond(
    service: &str,
    request_id: &str,
    result: Result<Vec<u8>, ApiError>,
) -> http::Response<Full<Bytes>> {
    let (status, body) = match result {
        Ok(body) => (200, body),
        Err(error) => {
            let code = code(&error);
            let status = match code {
                "AccessDenied"
                | "InvalidClientTokenId"
                | "SignatureDoesNotMatch"
                | "MissingAuthenticationToken"
                | "IncompleteSignature"
                | "ExpiredToken"
                | "InvalidAuthenticationCode" => 403,
                "NoSuchEntity" => 404,
                "DeleteConflict" | "ConcurrentModification" => 409,
                _ => error.http_status(),
            };
            let fault = if status >= 500 { "Receiver" } else { "Sender" };
            let body = format!(
                "<ErrorResponse xmlns=\"{}\"><Error>{}</Error>{}</ErrorResponse>",
                namespace(service),
                elements(&[("Type", fault), ("Code", code), ("Message", &error.message)]),
                elements(&[("RequestId", request_id)])
            );
            (status, body.into_bytes())
        }
    };
    let mut response = http::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/xml"),
    );
    if let Ok(value) = http::HeaderValue::from_str(request_id) {
        headers.insert(super::REQUEST_ID_HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_decoded_and_repeated_fields_refused() {
        let f =
            fields(b"Action=AssumeRole&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fa&X=a+b").unwrap();
        assert_eq!(f["RoleArn"], "arn:aws:iam::1:role/a");
        assert_eq!(f["X"], "a b");
        let repeated = fields(b"Action=AssumeRole&Action=GetCallerIdentity").unwrap_err();
        assert_eq!(repeated.reason, "InvalidParameterCombination");
        assert_eq!(
            operation_name(b"Action=GetCallerIdentity&Version=2011-06-15"),
            "sts:GetCallerIdentity"
        );
        assert_eq!(operation_name(b"Action=DeleteEverything"), "unknown");
        assert_eq!(
            operation_name(b"Action=AssumeRole&Action=AssumeRole"),
            "unknown"
        );
    }

    #[test]
    fn errors_carry_the_query_protocol_codes() {
        let denied = ApiError::new(Code::PermissionDenied, "AccessDeniedException", "no <way>");
        let response = respond("sts", "id-1", Err(denied));
        assert_eq!(response.status(), 403);
        assert_eq!(escape("a<b&\"c\""), "a&lt;b&amp;&quot;c&quot;");
    }
}
