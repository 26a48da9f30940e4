//! `Condition` blocks: operators, `…IfExists`, `ForAllValues:` / `ForAnyValue:` and the request
//! context they read.
//!
//! Semantics (IAM's): operators in a block and keys under an operator are ANDed; the values of
//! one key are ORed. When the request has no value for the key, a condition is false, except
//! for negated operators (`StringNotEquals`, `StringNotLike`, `NotIpAddress`,
//! `NumericNotEquals`), `…IfExists`
//! forms and `ForAllValues:`, which are true; `Null` tests for presence itself.
//!
//! Condition key names are case-insensitive, the whole name, as AWS documents:
//! `kms:EncryptionContext:tenant` also reads a request's `TENANT` pair (a policy that cares
//! about the pair's case asks `kms:EncryptionContextKeys`). When a request spells one key
//! several ways (`tenant` and `TENANT`), each value is a candidate for the key, and a
//! condition on it must hold for some candidate to make a `Deny` apply but for every
//! candidate to make an `Allow` apply: the ambiguity can only ever refuse more.

use super::document::Effect;
use super::variables::{self, Glyph};
use super::wildcard;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    Bool,
    DateEquals,
    DateLessThan,
    DateLessThanEquals,
    DateGreaterThan,
    DateGreaterThanEquals,
    IpAddress,
    NotIpAddress,
    NumericEquals,
    NumericNotEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    Null,
}

impl Operator {
    pub fn from_name(name: &str) -> Option<Self> {
        use Operator::*;
        Some(match name {
            "StringEquals" => StringEquals,
            "StringNotEquals" => StringNotEquals,
            "StringEqualsIgnoreCase" => StringEqualsIgnoreCase,
            "StringNotEqualsIgnoreCase" => StringNotEqualsIgnoreCase,
            "StringLike" => StringLike,
            "StringNotLike" => StringNotLike,
            "Bool" => Bool,
            "DateEquals" => DateEquals,
            "DateLessThan" => DateLessThan,
            "DateLessThanEquals" => DateLessThanEquals,
            "DateGreaterThan" => DateGreaterThan,
            "DateGreaterThanEquals" => DateGreaterThanEquals,
            "IpAddress" => IpAddress,
            "NotIpAddress" => NotIpAddress,
            "NumericEquals" => NumericEquals,
            "NumericNotEquals" => NumericNotEquals,
            "NumericLessThan" => NumericLessThan,
            "NumericLessThanEquals" => NumericLessThanEquals,
            "NumericGreaterThan" => NumericGreaterThan,
            "NumericGreaterThanEquals" => NumericGreaterThanEquals,
            "Null" => Null,
            _ => return None,
        })
    }

    fn negated(self) -> bool {
        matches!(
            self,
            Operator::StringNotEquals
                | Operator::StringNotEqualsIgnoreCase
                | Operator::StringNotLike
                | Operator::NotIpAddress
                | Operator::NumericNotEquals
        )
    }

    /// Whether one request value matches one policy value, before negation.
    fn value_matches(self, request: &str, policy: &str) -> bool {
        use Operator::*;
        match self {
            StringEquals | StringNotEquals => request == policy,
            StringEqualsIgnoreCase | StringNotEqualsIgnoreCase => {
                request.to_lowercase() == policy.to_lowercase()
            }
            StringLike | StringNotLike => wildcard::matches(policy, request, false),
            Bool => request.eq_ignore_ascii_case(policy),
            DateEquals
            | DateLessThan
            | DateLessThanEquals
            | DateGreaterThan
            | DateGreaterThanEquals => match (parse_date(request), parse_date(policy)) {
                (Some(r), Some(p)) => match self {
                    DateEquals => r == p,
                    DateLessThan => r < p,
                    DateLessThanEquals => r <= p,
                    DateGreaterThan => r > p,
                    _ => r >= p,
                },
                _ => false,
            },
            NumericEquals
            | NumericNotEquals
            | NumericLessThan
            | NumericLessThanEquals
            | NumericGreaterThan
            | NumericGreaterThanEquals => match (parse_number(request), parse_number(policy)) {
                (Some(r), Some(p)) => match self {
                    NumericEquals | NumericNotEquals => r == p,
                    NumericLessThan => r < p,
                    NumericLessThanEquals => r <= p,
                    NumericGreaterThan => r > p,
                    _ => r >= p,
                },
                _ => false,
            },
            IpAddress | NotIpAddress => match (request.parse::<IpAddr>(), parse_cidr(policy)) {
                (Ok(ip), Some((network, bits))) => in_network(ip, network, bits),
                _ => false,
            },
            Null => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetQualifier {
    Single,
    ForAllValues,
    ForAnyValue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub operator: Operator,
    pub if_exists: bool,
    pub qualifier: SetQualifier,
    /// The key, normalised ([`normalise_key`]).
    pub key: String,
    pub values: Vec<String>,
    /// Whether the values hold policy variables to resolve (string operators of a
    /// 2012-10-17 policy only).
    pub variables: bool,
}

/// A date as IAM writes them: ISO 8601 / RFC 3339, or seconds since the epoch. Returned as
/// nanoseconds since the epoch, so that fractions of a second count.
pub fn parse_date(text: &str) -> Option<i128> {
    const NANOS: i128 = 1_000_000_000;
    if let Ok(seconds) = text.parse::<i64>() {
        return Some(i128::from(seconds) * NANOS);
    }
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Some(t.unix_timestamp_nanos());
    }
    // A bare date: midnight UTC.
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, &format)
        .ok()
        .map(|d| d.midnight().assume_utc().unix_timestamp_nanos())
}

/// A number as IAM's numeric operators take them: an integer or a decimal.
fn parse_number(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

fn parse_cidr(text: &str) -> Option<(IpAddr, u8)> {
    let (address, bits) = match text.split_once('/') {
        Some((a, b)) => (a, Some(b.parse::<u8>().ok()?)),
        None => (text, None),
    };
    let ip: IpAddr = address.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    (bits <= max).then_some((ip, bits))
}

fn in_network(ip: IpAddr, network: IpAddr, bits: u8) -> bool {
    match (ip, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V4(n)) => a
            .to_ipv4_mapped()
            .is_some_and(|a| in_network(IpAddr::V4(a), IpAddr::V4(n), bits)),
        _ => false,
    }
}

/// Condition keys every request has but most policies never ask about (the caller, the time,
/// the source address): a [`RequestContext`] spells them out on the first lookup only.
pub trait DeferredKeys: Send + Sync {
    /// Sets the keys in `context`.
    fn fill(&self, context: &mut RequestContext);
}

/// The request's condition keys and their values (several for multi-valued keys).
#[derive(Clone, Default)]
pub struct RequestContext {
    values: HashMap<String, Vec<String>>,
    /// Keys whose values came from differently spelt request keys (see the module docs).
    ambiguous: Vec<String>,
    /// Keys looked up only when no value set here answers, and computed then, once.
    deferred: Option<Arc<dyn DeferredKeys>>,
    filled: OnceLock<HashMap<String, Vec<String>>>,
}

impl std::fmt::Debug for RequestContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys only: values include encryption-context values, which are never printed.
        f.debug_struct("RequestContext")
            .field("keys", &self.values.keys().collect::<Vec<_>>())
            .field("deferred", &self.deferred.is_some())
            .finish()
    }
}

/// Condition key names are case-insensitive, the part after `kms:EncryptionContext:` too.
pub fn normalise_key(key: &str) -> String {
    key.to_lowercase()
}

/// Whether [`normalise_key`] would leave `key` as it is (so looking it up needs no copy).
fn is_normalised(key: &str) -> bool {
    key.is_ascii() && !key.bytes().any(|b| b.is_ascii_uppercase())
}

impl RequestContext {
    pub fn new() -> Self {
        Self::default()
    }

    /// A context whose keys `deferred` sets when a condition first asks for one; keys set
    /// with [`RequestContext::set`] take precedence.
    pub fn with_deferred(deferred: Arc<dyn DeferredKeys>) -> Self {
        Self {
            deferred: Some(deferred),
            ..Self::default()
        }
    }

    /// Sets the key's one value, replacing what it had.
    pub fn set(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.set_all(key, vec![value.into()])
    }

    /// Sets the key's values (several for a multi-valued key), replacing what it had.
    pub fn set_all(&mut self, key: &str, values: Vec<String>) -> &mut Self {
        let key = normalise_key(key);
        self.ambiguous.retain(|k| *k != key);
        self.values.insert(key, values);
        self
    }

    /// Adds one value of a request key as the request spelt it. Keys that differ only in case
    /// are one key: a second spelling adds a candidate value and marks the key ambiguous.
    pub fn add_spelling(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        match self.values.entry(normalise_key(key)) {
            Entry::Occupied(mut entry) => {
                entry.get_mut().push(value.into());
                if !self.ambiguous.contains(entry.key()) {
                    self.ambiguous.push(entry.key().clone());
                }
            }
            Entry::Vacant(entry) => {
                entry.insert(vec![value.into()]);
            }
        }
        self
    }

    pub fn get(&self, key: &str) -> Option<&[String]> {
        self.lookup(key).map(|(values, _)| values)
    }

    /// Whether the request spelt some key several ways.
    pub(super) fn has_ambiguous_keys(&self) -> bool {
        !self.ambiguous.is_empty()
    }

    /// The key's values, and whether they are candidates from several spellings.
    pub(super) fn lookup(&self, key: &str) -> Option<(&[String], bool)> {
        let normalised;
        let key = if is_normalised(key) {
            key
        } else {
            normalised = normalise_key(key);
            &normalised
        };
        if let Some(values) = self.values.get(key) {
            let ambiguous = !self.ambiguous.is_empty() && self.ambiguous.iter().any(|k| k == key);
            return Some((values.as_slice(), ambiguous));
        }
        let deferred = self.deferred.as_ref()?;
        self.filled
            .get_or_init(|| {
                let mut spelt_out = RequestContext::new();
                deferred.fill(&mut spelt_out);
                spelt_out.values
            })
            .get(key)
            .map(|values| (values.as_slice(), false))
    }
}

impl Condition {
    /// Checks the values against the operator (dates parse, addresses parse, …).
    pub fn validate(&self) -> Result<(), String> {
        use Operator::*;
        if self.operator == Null && (self.if_exists || self.qualifier != SetQualifier::Single) {
            return Err("Null takes neither IfExists nor a set operator".into());
        }
        for value in &self.values {
            let ok = match self.operator {
                Bool | Null => {
                    value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false")
                }
                DateEquals
                | DateLessThan
                | DateLessThanEquals
                | DateGreaterThan
                | DateGreaterThanEquals => parse_date(value).is_some(),
                IpAddress | NotIpAddress => parse_cidr(value).is_some(),
                NumericEquals
                | NumericNotEquals
                | NumericLessThan
                | NumericLessThanEquals
                | NumericGreaterThan
                | NumericGreaterThanEquals => parse_number(value).is_some(),
                _ => true,
            };
            if !ok {
                let what = match self.operator {
                    Bool | Null => "true or false",
                    IpAddress | NotIpAddress => "an IP address or CIDR block",
                    NumericEquals
                    | NumericNotEquals
                    | NumericLessThan
                    | NumericLessThanEquals
                    | NumericGreaterThan
                    | NumericGreaterThanEquals => "a number",
                    _ => "a date",
                };
                return Err(format!("\"{value}\" is not {what}"));
            }
        }
        Ok(())
    }

    /// Whether the condition holds for the request, in a statement of `effect` (which
    /// matters only for a key the request spelt several ways: in the condition's key, or in
    /// a variable its values name).
    pub fn holds(&self, context: &RequestContext, effect: Effect) -> bool {
        if !self.variables {
            return self.holds_resolved(context, effect, None);
        }
        // Only statements with variables pay for resolving them.
        variables::Choices::of(self.values.iter().map(String::as_str), context)
            .decide(effect, |resolver| {
                self.holds_resolved(context, effect, Some(resolver))
            })
    }

    /// [`Condition::holds`], its values' variables (if any) resolved by `resolver`.
    fn holds_resolved(
        &self,
        context: &RequestContext,
        effect: Effect,
        resolver: Option<&variables::Resolver<'_>>,
    ) -> bool {
        let present = context.lookup(&self.key).filter(|(v, _)| !v.is_empty());
        if self.operator == Operator::Null {
            let wants_absent = self.values.iter().any(|v| v.eq_ignore_ascii_case("true"));
            return present.is_none() == wants_absent;
        }
        let Some((request_values, ambiguous)) = present else {
            return self.if_exists
                || self.qualifier == SetQualifier::ForAllValues
                || (self.qualifier == SetQualifier::Single && self.operator.negated());
        };
        let resolved: Option<Vec<(String, Vec<Glyph>)>> = match resolver {
            Some(resolver) => {
                let resolved = self
                    .values
                    .iter()
                    .map(|v| resolver.resolve(v).map(|g| (variables::literal(&g), g)))
                    .collect::<Option<Vec<_>>>();
                match resolved {
                    Some(resolved) => Some(resolved),
                    // An unresolvable variable: the statement does not apply.
                    None => return false,
                }
            }
            None => None,
        };
        let one = |request: &String| {
            let any = match &resolved {
                None => self
                    .values
                    .iter()
                    .any(|policy| self.operator.value_matches(request, policy)),
                Some(resolved) => resolved.iter().any(|(text, glyphs)| match self.operator {
                    Operator::StringLike | Operator::StringNotLike => {
                        wildcard::matches_resolved(glyphs, request, false)
                    }
                    _ => self.operator.value_matches(request, text),
                }),
            };
            any != self.operator.negated()
        };
        let over = |values: &[String]| match self.qualifier {
            SetQualifier::ForAllValues => values.iter().all(one),
            SetQualifier::ForAnyValue => values.iter().any(one),
            SetQualifier::Single if self.operator.negated() => values.iter().all(one),
            SetQualifier::Single => values.iter().any(one),
        };
        if ambiguous && request_values.len() > 1 {
            let each = |value: &String| over(std::slice::from_ref(value));
            match effect {
                Effect::Deny => request_values.iter().any(each),
                Effect::Allow => request_values.iter().all(each),
            }
        } else {
            over(request_values)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deferred_keys_are_spelt_out_once_and_set_keys_take_precedence() {
        use std::sync::atomic::{AtomicU32, Ordering};
        struct Counted(AtomicU32);
        impl DeferredKeys for Counted {
            fn fill(&self, context: &mut RequestContext) {
                self.0.fetch_add(1, Ordering::SeqCst);
                context
                    .set("aws:SourceIp", "10.0.0.1")
                    .set("aws:username", "alice");
            }
        }
        let deferred = Arc::new(Counted(AtomicU32::new(0)));
        let mut context = RequestContext::with_deferred(deferred.clone());
        context.set("aws:username", "bob");
        assert_eq!(deferred.0.load(Ordering::SeqCst), 0);
        assert_eq!(context.get("aws:username"), Some(&["bob".to_string()][..]));
        assert_eq!(
            deferred.0.load(Ordering::SeqCst),
            0,
            "a set key needs no deferred ones"
        );
        assert_eq!(
            context.get("AWS:SOURCEIP"),
            Some(&["10.0.0.1".to_string()][..])
        );
        assert_eq!(
            context.get("aws:sourceip"),
            Some(&["10.0.0.1".to_string()][..])
        );
        assert_eq!(context.get("aws:CurrentTime"), None);
        assert_eq!(deferred.0.load(Ordering::SeqCst), 1);
        let printed = format!("{context:?}");
        assert!(
            printed.contains("aws:username") && !printed.contains("bob"),
            "{printed}"
        );
    }

    #[test]
    fn normalised_keys_are_recognised_without_copying() {
        for key in [
            "aws:sourceip",
            "aws:SourceIp",
            "kms:encryptioncontext:Tenant",
            "kms:encryptioncontext:tenant",
            "kms:EncryptionContext:tenant",
            "kms:encryptioncontext:",
            "KMS:ENCRYPTIONCONTEXTKEYS",
            "kms:encryptioncontextkeys",
            "kms:encryptioncontext:É",
            "",
        ] {
            assert!(
                !is_normalised(key) || normalise_key(key) == key,
                "{key} is taken as normalised but is not"
            );
        }
        assert!(is_normalised("kms:encryptioncontext:tenant"));
        let mut context = RequestContext::new();
        context.set("kms:EncryptionContext:Tenant", "blue");
        assert_eq!(
            context.get("KMS:encryptioncontext:TENANT"),
            Some(&["blue".to_owned()][..])
        );
        assert_eq!(
            context.get("kms:encryptioncontext:tenant"),
            Some(&["blue".to_owned()][..])
        );
    }

    #[test]
    fn dates_and_networks_parse() {
        const SECOND: i128 = 1_000_000_000;
        assert_eq!(parse_date("1970-01-02T00:00:00Z"), Some(86_400 * SECOND));
        assert_eq!(
            parse_date("1970-01-02T00:00:00.5Z"),
            Some(86_400 * SECOND + SECOND / 2)
        );
        assert_eq!(parse_date("1970-01-02"), Some(86_400 * SECOND));
        assert_eq!(parse_date("86400"), Some(86_400 * SECOND));
        assert_eq!(parse_date("tomorrow"), None);
        assert!(in_network(
            "10.1.2.3".parse().unwrap(),
            "10.0.0.0".parse().unwrap(),
            8
        ));
        assert!(!in_network(
            "11.1.2.3".parse().unwrap(),
            "10.0.0.0".parse().unwrap(),
            8
        ));
        assert!(in_network(
            "::ffff:10.1.2.3".parse().unwrap(),
            "10.0.0.0".parse().unwrap(),
            8
        ));
        assert!(in_network(
            "1.2.3.4".parse().unwrap(),
            "0.0.0.0".parse().unwrap(),
            0
        ));
        assert_eq!(parse_cidr("10.0.0.0/33"), None);
        assert_eq!(parse_cidr("::1"), Some(("::1".parse().unwrap(), 128)));
    }

    #[test]
    fn context_keys_are_case_insensitive_encryption_context_names_too() {
        let mut context = RequestContext::new();
        context.set("aws:SourceIp", "1.2.3.4");
        context.add_spelling("kms:EncryptionContext:TENANT", "a");
        assert!(context.get("AWS:SOURCEIP").is_some());
        assert!(context.get("KMS:ENCRYPTIONCONTEXT:Tenant").is_some());
        assert_eq!(
            context.get("kms:EncryptionContext:tenant"),
            Some(&["a".to_owned()][..])
        );
    }

    fn condition(operator: &str, if_exists: bool, key: &str, values: &[&str]) -> Condition {
        Condition {
            operator: Operator::from_name(operator).unwrap(),
            if_exists,
            qualifier: SetQualifier::Single,
            key: normalise_key(key),
            values: values.iter().map(|v| (*v).to_owned()).collect(),
            variables: false,
        }
    }

    /// A Deny written for `tenant` must apply to a request that spells the pair `TENANT`.
    #[test]
    fn a_deny_on_an_encryption_context_key_applies_whatever_its_case() {
        let mut context = RequestContext::new();
        context.add_spelling("kms:EncryptionContext:TENANT", "a");
        let key = "kms:EncryptionContext:tenant";
        for deny in [
            condition("StringNotEquals", false, key, &["b"]),
            condition("StringNotEquals", true, key, &["b"]),
            condition("StringEquals", false, key, &["a"]),
            condition("StringLike", true, key, &["*"]),
            condition("Null", false, key, &["false"]),
        ] {
            assert!(deny.holds(&context, Effect::Deny), "{deny:?}");
        }
        assert!(!condition("Null", false, key, &["true"]).holds(&context, Effect::Deny));
    }

    /// `tenant: a` and `TENANT: b` in one request: each value is a candidate; a Deny applies
    /// if its condition holds for any, an Allow only if it holds for all.
    #[test]
    fn keys_spelt_two_ways_refuse_more_never_less() {
        let mut context = RequestContext::new();
        context
            .add_spelling("kms:EncryptionContext:tenant", "a")
            .add_spelling("kms:EncryptionContext:TENANT", "b");
        let key = "kms:EncryptionContext:Tenant";
        let only_a = condition("StringEquals", false, key, &["a"]);
        assert!(!only_a.holds(&context, Effect::Allow));
        assert!(only_a.holds(&context, Effect::Deny));
        let not_a = condition("StringNotEquals", false, key, &["a"]);
        assert!(not_a.holds(&context, Effect::Deny));
        assert!(!not_a.holds(&context, Effect::Allow));
        let either = condition("StringEquals", false, key, &["a", "b"]);
        assert!(either.holds(&context, Effect::Allow));
        let mut any = condition("StringEquals", false, key, &["a"]);
        any.qualifier = SetQualifier::ForAnyValue;
        assert!(!any.holds(&context, Effect::Allow));
        assert!(any.holds(&context, Effect::Deny));
        let mut all = condition("StringEquals", false, key, &["a"]);
        all.qualifier = SetQualifier::ForAllValues;
        assert!(!all.holds(&context, Effect::Allow));
        assert!(all.holds(&context, Effect::Deny));
        // Setting the key again (the simulator does) ends the ambiguity.
        context.set(key, "a");
        assert!(only_a.holds(&context, Effect::Allow));
    }

    fn username_is_owner(operator: Operator) -> Condition {
        Condition {
            operator,
            if_exists: false,
            qualifier: SetQualifier::Single,
            key: normalise_key("aws:username"),
            values: vec!["${kms:EncryptionContext:owner}".into()],
            variables: true,
        }
    }

    fn spelt(username: &str, spellings: &[(&str, &str)]) -> RequestContext {
        let mut context = RequestContext::new();
        context.set("aws:username", username);
        for (key, value) in spellings {
            context.add_spelling(&format!("kms:EncryptionContext:{key}"), *value);
        }
        context
    }

    #[test]
    fn a_variable_on_a_key_spelt_several_ways_keeps_a_deny_in_force() {
        let deny = username_is_owner(Operator::StringNotEquals);
        let one = spelt("mallory", &[("owner", "alice")]);
        assert!(
            deny.holds(&one, Effect::Deny),
            "one spelling: the Deny applies"
        );
        let two = spelt("mallory", &[("owner", "alice"), ("OWNER", "alice")]);
        assert!(
            deny.holds(&two, Effect::Deny),
            "two spellings: still applies"
        );
        let mixed = spelt("alice", &[("owner", "alice"), ("OWNER", "bob")]);
        assert!(
            deny.holds(&mixed, Effect::Deny),
            "applies when some candidate makes it apply"
        );
        let own = spelt("alice", &[("owner", "alice"), ("OWNER", "alice")]);
        assert!(
            !deny.holds(&own, Effect::Deny),
            "no candidate makes it apply"
        );
    }

    #[test]
    fn a_variable_on_a_key_spelt_several_ways_allows_only_if_every_candidate_does() {
        let allow = username_is_owner(Operator::StringEquals);
        let own = spelt("alice", &[("owner", "alice"), ("OWNER", "alice")]);
        assert!(allow.holds(&own, Effect::Allow));
        let mixed = spelt("alice", &[("owner", "alice"), ("OWNER", "bob")]);
        assert!(!allow.holds(&mixed, Effect::Allow));
        let like = Condition {
            operator: Operator::StringLike,
            values: vec!["${kms:EncryptionContext:owner}*".into()],
            ..username_is_owner(Operator::StringLike)
        };
        assert!(like.holds(&own, Effect::Allow));
        assert!(!like.holds(&mixed, Effect::Allow));
        assert!(like.holds(&mixed, Effect::Deny));
    }

    #[test]
    fn too_many_spellings_refuse() {
        let spellings: Vec<(String, String)> = ["owner", "OWNER", "Owner", "oWner", "owNer"]
            .iter()
            .map(|k| (k.to_string(), "alice".to_string()))
            .collect();
        let mut context = RequestContext::new();
        context.set("aws:username", "alicex");
        for (key, value) in &spellings {
            for prefix in [
                "kms:EncryptionContext:",
                "KMS:ENCRYPTIONCONTEXT:",
                "Kms:EncryptionContext:",
            ] {
                context.add_spelling(&format!("{prefix}{key}"), value.clone());
            }
        }
        context.add_spelling("kms:EncryptionContext:team", "x");
        let mut both = context.clone();
        for key in ["TEAM", "Team", "tEam", "teAm"] {
            both.add_spelling(&format!("kms:EncryptionContext:{key}"), "x");
        }
        let allow = Condition {
            values: vec!["${kms:EncryptionContext:owner}*${kms:EncryptionContext:team}".into()],
            ..username_is_owner(Operator::StringLike)
        };
        // Every one of the 15 × 5 resolutions is `alice*x`, which `alicex` matches, but that is
        // more resolutions than are tried: an Allow does not apply, a Deny does.
        assert!(
            allow.holds(&context, Effect::Allow),
            "15 resolutions are tried"
        );
        assert!(!allow.holds(&both, Effect::Allow));
        let deny = Condition {
            values: allow.values.clone(),
            ..username_is_owner(Operator::StringNotLike)
        };
        assert!(!deny.holds(&context, Effect::Deny));
        assert!(deny.holds(&both, Effect::Deny));
    }
}
