//! Hostile input, property-tested (proptest, stable Rust): the parsers and decoders that see
//! bytes from outside never panic, do work bounded by their input, and round-trip what the
//! daemon itself produces.
//!
//! - the ciphertext blob parser (`CiphertextBlob::parse`): allocation-free, exact layout;
//! - encryption-context canonicalisation: injective (a decoder recovers the pairs), order-free;
//! - the request-signature parsers (`parse_authorization`, `parse_amz_date`);
//! - the sealed-record decoder (`MasterKey::unwrap`) on arbitrary and on damaged records;
//! - the policy parser and evaluator: any text or policy-shaped JSON is parsed or refused
//!   without panic, the wildcard matcher agrees with a naive reference and stays fast on
//!   hostile patterns, an explicit Deny beats every Allow, and no policy means no access.
//!
//! "Bounded work" is measured: a counting global allocator records the bytes each thread
//! allocates, and each property asserts a bound on what one call may allocate. Cases per
//! property: proptest's default (256), or `PROPTEST_CASES=N` for longer runs.

use keyhaven::auth::signature::{
    ALGORITHM, DATE_HEADER, HOST_HEADER, NONCE_HEADER, format_amz_date, parse_amz_date,
    parse_authorization,
};
use keyhaven::crypto::{BLOB_HEADER_LEN, BLOB_VERSION, CiphertextBlob, EncryptionContext, TAG_LEN};
use keyhaven::policy::{
    Decision, Identity, MAX_POLICY_BYTES, NamedPolicy, Policy, PolicyKind, Request, RequestContext,
    evaluate, wildcard_matches,
};
use keyhaven::seal::{self, KdfParams, MasterKey};
use keyhaven::secret::SecretString;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use uuid::Uuid;

// ------------------------------------------------------------------ allocation accounting

/// The system allocator, counting the bytes each thread asks for.
struct CountingAllocator;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

fn count(bytes: usize) {
    // `try_with`: the thread-local may be gone while a thread is being torn down.
    let _ = ALLOCATED.try_with(|total| total.set(total.get().saturating_add(bytes)));
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Runs `f` and returns its result with the bytes it allocated on this thread.
fn allocated_by<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATED.with(Cell::get);
    let out = f();
    (out, ALLOCATED.with(Cell::get) - before)
}

#[test]
fn the_allocation_counter_counts() {
    let (buffer, allocated) = allocated_by(|| vec![7u8; 1000]);
    assert!(allocated >= 1000, "{allocated}");
    assert_eq!(allocated_by(|| buffer.len()).1, 0);
}

// ------------------------------------------------------------------------ ciphertext blobs

const BLOB_MIN: usize = BLOB_HEADER_LEN + TAG_LEN;

proptest! {
    #[test]
    fn blob_parser_takes_any_bytes_without_allocating(bytes in vec(any::<u8>(), 0..512)) {
        let (parsed, allocated) = allocated_by(|| CiphertextBlob::parse(&bytes));
        prop_assert_eq!(allocated, 0, "parse allocated");
        match parsed {
            Ok(blob) => {
                prop_assert!(bytes.len() >= BLOB_MIN);
                prop_assert_eq!(bytes[0], BLOB_VERSION);
                // Everything after the header is the sealed part, borrowed in place.
                prop_assert_eq!(blob.sealed.as_ptr(), bytes[BLOB_HEADER_LEN..].as_ptr());
                let again =
                    CiphertextBlob::assemble(blob.key_id, blob.key_version, &blob.nonce, blob.sealed);
                prop_assert_eq!(again, bytes);
            }
            Err(_) => prop_assert!(bytes.len() < BLOB_MIN || bytes[0] != BLOB_VERSION),
        }
    }

    #[test]
    fn blobs_round_trip(
        id in any::<[u8; 16]>(),
        version in any::<u32>(),
        nonce in any::<[u8; 12]>(),
        sealed in vec(any::<u8>(), TAG_LEN..600),
    ) {
        let key_id = Uuid::from_bytes(id);
        let blob = CiphertextBlob::assemble(key_id, version, &nonce, &sealed);
        prop_assert_eq!(blob.len(), BLOB_HEADER_LEN + sealed.len());
        let parsed = CiphertextBlob::parse(&blob).unwrap();
        prop_assert_eq!(parsed.key_id, key_id);
        prop_assert_eq!(parsed.key_version, version);
        prop_assert_eq!(parsed.nonce, nonce);
        prop_assert_eq!(parsed.sealed, &sealed[..]);
        // The AAD starts with exactly the header bytes.
        let aad = parsed.aad_for(&EncryptionContext::default());
        prop_assert_eq!(&aad[..], &blob[..BLOB_HEADER_LEN]);
    }
}

// ------------------------------------------------------------------- encryption context

/// Decodes the canonical form (what a verifier on the other side would do); `None` if the
/// bytes are not a canonical encoding. Its existence is what makes the encoding injective.
fn decode_canonical(mut bytes: &[u8]) -> Option<BTreeMap<String, String>> {
    fn part(bytes: &mut &[u8]) -> Option<String> {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return None;
        }
        let (text, rest) = rest.split_at(len);
        *bytes = rest;
        String::from_utf8(text.to_vec()).ok()
    }
    let mut pairs = BTreeMap::new();
    let mut previous: Option<String> = None;
    while !bytes.is_empty() {
        let key = part(&mut bytes)?;
        let value = part(&mut bytes)?;
        // Canonical means strictly sorted keys.
        if previous.as_ref().is_some_and(|p| *p >= key) {
            return None;
        }
        previous = Some(key.clone());
        pairs.insert(key, value);
    }
    Some(pairs)
}

/// Small alphabets so that near-collisions ("ab"+"c" vs "a"+"bc") are common.
fn context_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    btree_map("[ab\u{e9}]{1,3}", "[ab\u{e9}]{0,3}", 0..4)
}

proptest! {
    #[test]
    fn canonical_contexts_decode_back_to_their_pairs(pairs in context_map()) {
        let context = EncryptionContext::new(pairs.clone()).unwrap();
        let canonical = context.canonical();
        prop_assert_eq!(canonical.len(), context.canonical_len());
        prop_assert_eq!(decode_canonical(&canonical), Some(pairs.clone()));
        // Insertion order does not matter.
        let shuffled: HashMap<String, String> = pairs.into_iter().rev().collect();
        prop_assert_eq!(EncryptionContext::from_map(shuffled).unwrap().canonical(), canonical);
    }

    #[test]
    fn distinct_contexts_have_distinct_canonical_bytes(a in context_map(), b in context_map()) {
        let ca = EncryptionContext::new(a.clone()).unwrap().canonical();
        let cb = EncryptionContext::new(b.clone()).unwrap().canonical();
        prop_assert_eq!(a == b, ca == cb, "{:?} / {:?}", a, b);
    }

    #[test]
    fn any_context_is_accepted_or_refused_without_panic(
        pairs in btree_map(".{0,40}", ".{0,200}", 0..80),
    ) {
        let bytes: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
        let (result, _) = allocated_by(|| EncryptionContext::new(pairs.clone()));
        match result {
            Ok(context) => {
                prop_assert!(pairs.len() <= 64 && bytes <= 8192);
                prop_assert!(!pairs.contains_key(""));
                prop_assert_eq!(decode_canonical(&context.canonical()), Some(pairs));
            }
            Err(_) => prop_assert!(pairs.len() > 64 || bytes > 8192 || pairs.contains_key("")),
        }
    }
}

// -------------------------------------------------------------------- request signatures

fn authorization(
    access_key_id: &str,
    date: &str,
    region: &str,
    signed: &[String],
    signature: &[u8; 32],
) -> String {
    format!(
        "{ALGORITHM} Credential={access_key_id}/{date}/{region}/kms/aws4_request, SignedHeaders={}, Signature={}",
        signed.join(";"),
        hex::encode(signature)
    )
}

/// Sorted, distinct, lower-case header names that include the required ones.
fn signed_headers() -> impl Strategy<Value = Vec<String>> {
    vec("[a-z0-9-]{1,12}", 0..4).prop_map(|extra| {
        let mut all: Vec<String> = extra;
        all.push(HOST_HEADER.into());
        all.push(DATE_HEADER.into());
        all.push(NONCE_HEADER.into());
        all.sort();
        all.dedup();
        all
    })
}

proptest! {
    #[test]
    fn authorization_parser_takes_any_text(text in ".{0,300}") {
        let (result, allocated) = allocated_by(|| parse_authorization(&text));
        prop_assert!(allocated <= 4096 + 8 * text.len(), "{} bytes for {} chars", allocated, text.len());
        if let Ok(parsed) = result {
            prop_assert!(text.starts_with(ALGORITHM));
            prop_assert!(parsed.signed_headers.contains(&DATE_HEADER));
        }
    }

    #[test]
    fn oversized_authorizations_are_refused_before_any_work(
        filler in "[A-Za-z0-9=,;/ ]{1,64}",
        repeat in 1100usize..20_000,
    ) {
        let text: String = filler.chars().cycle().take(repeat).collect();
        let text = format!("{ALGORITHM} {text}");
        let (result, allocated) = allocated_by(|| parse_authorization(&text));
        prop_assert!(result.is_err());
        // The refusal costs the same whatever the size: no copy of the input.
        prop_assert!(allocated <= 256, "{} bytes", allocated);
    }

    #[test]
    fn well_formed_authorizations_round_trip(
        access_key_id in "[A-Z0-9]{1,24}",
        date in "[0-9]{8}",
        region in "[a-z0-9-]{1,16}",
        signed in signed_headers(),
        signature in any::<[u8; 32]>(),
    ) {
        let text = authorization(&access_key_id, &date, &region, &signed, &signature);
        let parsed = parse_authorization(&text).unwrap();
        prop_assert_eq!(&parsed.access_key_id, &access_key_id);
        prop_assert_eq!(&parsed.date, &date);
        prop_assert_eq!(&parsed.region, &region);
        prop_assert_eq!(&parsed.signed_headers, &signed);
        prop_assert_eq!(parsed.signature, signature);
        prop_assert_eq!(parsed.scope(), format!("{date}/{region}/kms/aws4_request"));
    }

    #[test]
    fn damaged_authorizations_never_panic(
        access_key_id in "[A-Z0-9]{1,24}",
        signed in signed_headers(),
        signature in any::<[u8; 32]>(),
        edits in vec((any::<prop::sample::Index>(), any::<char>(), 0u8..3), 1..6),
    ) {
        let mut text: Vec<char> =
            authorization(&access_key_id, "20240229", "local", &signed, &signature).chars().collect();
        for (at, c, kind) in edits {
            let i = at.index(text.len() + 1);
            match kind {
                0 => text.insert(i, c),
                1 if i < text.len() => { text.remove(i); }
                _ if i < text.len() => text[i] = c,
                _ => text.push(c),
            }
        }
        let text: String = text.into_iter().collect();
        if let Ok(parsed) = parse_authorization(&text) {
            // Whatever was accepted is internally consistent.
            prop_assert!(!parsed.access_key_id.is_empty());
            prop_assert_eq!(parsed.date.len(), 8);
            prop_assert!(parsed.signed_headers.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn amz_dates_round_trip(time in 0i64..=253_402_300_799) {
        let text = format_amz_date(time);
        prop_assert_eq!(text.len(), 16);
        prop_assert_eq!(parse_amz_date(&text), Some(time));
    }

    #[test]
    fn amz_date_parser_accepts_only_canonical_text(text in "([0-9T Z+-]|.){0,20}") {
        let (parsed, allocated) = allocated_by(|| parse_amz_date(&text));
        prop_assert!(allocated <= 64, "{} bytes", allocated);
        if let Some(time) = parsed {
            prop_assert_eq!(format_amz_date(time), text);
        }
    }

    #[test]
    fn amz_date_like_text_is_parsed_exactly(
        digits in "[0-9]{8}T[0-9]{6}Z",
    ) {
        if let Some(time) = parse_amz_date(&digits) {
            prop_assert_eq!(format_amz_date(time), digits);
        }
    }
}

// --------------------------------------------------------------------- sealed records

fn master_key() -> &'static MasterKey {
    static MASTER: OnceLock<(tempfile::TempDir, MasterKey)> = OnceLock::new();
    &MASTER
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("temporary directory");
            let (_, master) = seal::init(
                dir.path(),
                &SecretString::new("property tests, not a secret".into()),
                KdfParams::MINIMUM,
                "111122223333",
                0,
            )
            .expect("seal");
            (dir, master)
        })
        .1
}

proptest! {
    #[test]
    fn record_decoder_refuses_arbitrary_bytes(
        name in vec(any::<u8>(), 0..64),
        bytes in vec(any::<u8>(), 0..2048),
    ) {
        let master = master_key();
        let (result, allocated) = allocated_by(|| master.unwrap(&name, &bytes));
        prop_assert!(result.is_err(), "forged a sealed record");
        prop_assert!(allocated <= 1024 + 2 * bytes.len(), "{} bytes for {}", allocated, bytes.len());
    }

    #[test]
    fn records_round_trip_and_any_damage_is_refused(
        name in vec(any::<u8>(), 0..64),
        secret in vec(any::<u8>(), 0..256),
        flip in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
        other_name in vec(any::<u8>(), 0..64),
    ) {
        let master = master_key();
        let wrapped = master.wrap(&name, &secret);
        prop_assert_eq!(wrapped.len(), 12 + secret.len() + 16);
        let unwrapped = master.unwrap(&name, &wrapped).unwrap();
        prop_assert_eq!(unwrapped.expose(), &secret);
        let mut flipped = wrapped.clone();
        let bit = flip.index(flipped.len() * 8);
        flipped[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(master.unwrap(&name, &flipped).is_err(), "bit {} flipped", bit);
        let len = cut.index(wrapped.len());
        prop_assert!(master.unwrap(&name, &wrapped[..len]).is_err(), "cut to {}", len);
        if other_name != name {
            prop_assert!(master.unwrap(&other_name, &wrapped).is_err(), "moved");
        }
    }
}

// ---------------------------------------------------------------------------- policies

/// Policy-shaped JSON: the right element names, with values of every type and shape.
fn policy_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{Value, json};
    let scalar = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "(kms:\\*|kms:Encrypt|kms:Decrypt|iam:\\*|sts:AssumeRole|\\*|arn:keyhaven:kms:local:111122223333:key/\\*|Allow|Deny|2012-10-17|[a-zA-Z:/*?]{0,12})"
            .prop_map(Value::String),
    ];
    let value = scalar.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map(
                "(AWS|StringEquals|StringLike|Bool|DateLessThan|IpAddress|kms:EncryptionContext:app|aws:SourceIp|aws:CurrentTime|[A-Za-z]{1,6})",
                inner,
                0..3
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let element = prop_oneof![
        Just("Sid"),
        Just("Effect"),
        Just("Principal"),
        Just("Action"),
        Just("NotAction"),
        Just("Resource"),
        Just("NotResource"),
        Just("Condition"),
        Just("Bogus"),
    ];
    let noisy = btree_map(element, value.clone(), 0..7)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()));
    // Mostly well-formed statements, so that the accepting paths are explored too; then a
    // random element replaced by noise now and then.
    let actions = vec(action_pattern(), 1..3).prop_map(|a| json!(a));
    let condition = prop_oneof![
        Just(None),
        Just(Some(
            json!({"StringEquals": {"kms:EncryptionContext:app": "payroll"}})
        )),
        Just(Some(
            json!({"StringLike": {"aws:PrincipalArn": ["arn:*:iam::*:user/a*"]}})
        )),
        Just(Some(json!({"Bool": {"aws:SecureTransport": "true"}}))),
        Just(Some(json!({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}))),
        Just(Some(
            json!({"DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"}})
        )),
        Just(Some(
            json!({"StringEquals": {"kms:CallerAccount": 111122223333u64}})
        )),
    ];
    let well_formed = (
        prop_oneof![Just("Allow"), Just("Deny")],
        actions,
        prop_oneof![
            Just(json!("*")),
            Just(json!(["arn:keyhaven:kms:local:111122223333:key/*"]))
        ],
        prop_oneof![
            Just(None),
            Just(Some(json!("*"))),
            Just(Some(json!({"AWS": [ROOT, "111122223333"]})))
        ],
        condition,
        any::<bool>(),
        proptest::option::of((
            "(Sid|Effect|Action|Resource|Principal|Condition|NotAction)",
            value.clone(),
        )),
    )
        .prop_map(
            |(effect, action, resource, principal, condition, not, noise)| {
                let mut statement = json!({"Sid": "S1", "Effect": effect, "Resource": resource});
                statement[if not { "NotAction" } else { "Action" }] = action;
                if let Some(principal) = principal {
                    statement["Principal"] = principal;
                }
                if let Some(condition) = condition {
                    statement["Condition"] = condition;
                }
                if let Some((element, value)) = noise {
                    statement[element] = value;
                }
                statement
            },
        );
    let statement = prop_oneof![3 => well_formed, 1 => noisy];
    (
        prop_oneof![4 => Just(json!("2012-10-17")), 1 => Just(json!("2008-10-17")), 1 => value.clone()],
        prop_oneof![
            4 => vec(statement.clone(), 0..4).prop_map(Value::Array),
            2 => statement,
            1 => value,
        ],
        prop::bool::weighted(0.9),
    )
        .prop_map(|(version, statements, with_version)| {
            let mut map = serde_json::Map::new();
            if with_version {
                map.insert("Version".into(), version);
            }
            map.insert("Statement".into(), statements);
            Value::Object(map)
        })
}

/// `*` and `?` matching, the obvious exponential way (small inputs only).
fn naive_matches(pattern: &[char], text: &[char], ignore_case: bool) -> bool {
    let same = |a: char, b: char| {
        if ignore_case {
            a.to_lowercase().eq(b.to_lowercase())
        } else {
            a == b
        }
    };
    match pattern.split_first() {
        None => text.is_empty(),
        Some(('*', rest)) => {
            naive_matches(rest, text, ignore_case)
                || (!text.is_empty() && naive_matches(pattern, &text[1..], ignore_case))
        }
        Some(('?', rest)) => !text.is_empty() && naive_matches(rest, &text[1..], ignore_case),
        Some((c, rest)) => {
            !text.is_empty() && same(*c, text[0]) && naive_matches(rest, &text[1..], ignore_case)
        }
    }
}

const USER: &str = "arn:keyhaven:iam::111122223333:user/alice";
const ROOT: &str = "arn:keyhaven:iam::111122223333:root";

fn named(name: &str, document: &str, kind: PolicyKind) -> NamedPolicy {
    NamedPolicy {
        name: name.into(),
        policy: Arc::new(Policy::parse(document, kind).expect("a valid test policy")),
    }
}

fn decide(
    action: &str,
    resource: &str,
    resource_policy: Option<&NamedPolicy>,
    identity: &Identity<'_>,
) -> Decision {
    let principals = [USER.to_owned()];
    let context = RequestContext::new();
    let request = Request {
        principals: &principals,
        account_root: ROOT,
        action,
        resource,
        context: &context,
    };
    evaluate(&request, resource_policy, identity).decision
}

fn action_pattern() -> impl Strategy<Value = String> {
    "(kms:\\*|kms:Encrypt|kms:Decrypt|kms:Re\\*|kms:\\*Key|kms:Generate\\?ataKey|\\*)"
}

fn action() -> impl Strategy<Value = String> {
    "kms:(Encrypt|Decrypt|ReEncryptFrom|CreateKey|DisableKey|GenerateDataKey|ListKeys)"
}

proptest! {
    #[test]
    fn policy_parser_takes_any_text(text in ".{0,400}") {
        for kind in [PolicyKind::Resource, PolicyKind::Identity] {
            let (result, allocated) = allocated_by(|| Policy::parse(&text, kind));
            prop_assert!(allocated <= 65_536 + 64 * text.len(), "{} bytes", allocated);
            if let Ok(policy) = result {
                prop_assert_eq!(Policy::parse(&text, kind).ok(), Some(policy));
            }
        }
    }

    #[test]
    fn policy_parser_takes_policy_shaped_json(document in policy_json()) {
        let text = document.to_string();
        for kind in [PolicyKind::Resource, PolicyKind::Identity] {
            let (result, allocated) = allocated_by(|| Policy::parse(&text, kind));
            prop_assert!(allocated <= 65_536 + 64 * text.len(), "{} bytes", allocated);
            if let Ok(policy) = result {
                // Accepted documents are stable, and have what their kind requires.
                prop_assert_eq!(Policy::parse(&text, kind).ok(), Some(policy.clone()));
                for statement in &policy.statements {
                    prop_assert_eq!(statement.principal.is_some(), kind == PolicyKind::Resource);
                }
            }
        }
    }

    #[test]
    fn oversized_policies_are_refused_before_parsing(extra in 1usize..100_000) {
        let text = format!("{{\"Version\":\"2012-10-17\",\"Statement\":[]{}}}", " ".repeat(MAX_POLICY_BYTES + extra));
        let (result, allocated) = allocated_by(|| Policy::parse(&text, PolicyKind::Identity));
        prop_assert!(result.is_err());
        prop_assert!(allocated <= 1024, "{} bytes", allocated);
    }

    #[test]
    fn wildcards_match_like_the_naive_reference(
        pattern in "[aAb*?]{0,8}",
        text in "[aAb]{0,10}",
        ignore_case in any::<bool>(),
    ) {
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = text.chars().collect();
        prop_assert_eq!(
            wildcard_matches(&pattern, &text, ignore_case),
            naive_matches(&p, &t, ignore_case)
        );
    }

    #[test]
    fn wildcards_stay_fast_on_hostile_patterns(stars in 1usize..400, len in 1usize..4000) {
        // `*a*a*a…*b` against `aaaa…`: exponential for a backtracking matcher.
        let pattern = format!("{}b", "*a".repeat(stars));
        let text = "a".repeat(len);
        let started = Instant::now();
        prop_assert!(!wildcard_matches(&pattern, &text, false));
        prop_assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }

    #[test]
    fn an_explicit_deny_beats_every_allow(
        allows in vec(action_pattern(), 1..5),
        requested in action(),
        deny_in_key_policy in any::<bool>(),
    ) {
        let resource = "arn:keyhaven:kms:local:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let allow = named(
            "user/alice/allow",
            &serde_json::json!({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": allows, "Resource": "*"}]
            }).to_string(),
            PolicyKind::Identity,
        );
        let deny_statement = |principal: bool| {
            let mut statement = serde_json::json!({"Effect": "Deny", "Action": requested, "Resource": "*"});
            if principal {
                statement["Principal"] = serde_json::json!({"AWS": USER});
            }
            statement
        };
        // The key policy lets the account delegate (and allows everything to the user).
        let mut key_statements = vec![
            serde_json::json!({"Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": "kms:*", "Resource": "*"}),
            serde_json::json!({"Effect": "Allow", "Principal": {"AWS": USER}, "Action": "kms:*", "Resource": "*"}),
        ];
        let mut identity = vec![allow];
        if deny_in_key_policy {
            key_statements.push(deny_statement(true));
        } else {
            identity.push(named(
                "user/alice/deny",
                &serde_json::json!({"Version": "2012-10-17", "Statement": [deny_statement(false)]}).to_string(),
                PolicyKind::Identity,
            ));
        }
        let key_policy = named(
            "key policy",
            &serde_json::json!({"Version": "2012-10-17", "Statement": key_statements}).to_string(),
            PolicyKind::Resource,
        );
        prop_assert_eq!(
            decide(&requested, resource, Some(&key_policy), &Identity::Policies(&identity)),
            Decision::ExplicitDeny
        );
        if !deny_in_key_policy {
            prop_assert_eq!(
                decide(&requested, resource, None, &Identity::Policies(&identity)),
                Decision::ExplicitDeny
            );
        }
    }

    #[test]
    fn no_policy_means_no_access(requested in action(), resource in "(\\*|arn:keyhaven:kms:local:111122223333:key/[a-f0-9-]{1,36})") {
        prop_assert_eq!(
            decide(&requested, &resource, None, &Identity::Policies(&[])),
            Decision::ImplicitDeny
        );
    }
}
