//! Policy variables, as AWS defines them for `Version` 2012-10-17 policies: `${aws:username}`
//! and any other request key, `${key, 'default'}` for a key the request may lack, and the
//! escapes `${*}`, `${?}`, `${$}` for a literal `*`, `?` or `$`. They stand in `Resource` /
//! `NotResource` and in the values of string conditions; in older policies `${…}` is literal.
//!
//! A value put in by a variable is always literal: a user named `a*` could not widen a pattern
//! written for their own name. A variable whose key the request lacks (or holds several values
//! for) and that has no default cannot be resolved; the statement then does not apply.

use super::condition::RequestContext;

/// One position of a resolved pattern: a character, or a wildcard the policy itself wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Glyph {
    Char(char),
    AnyRun,
    AnyOne,
}

#[derive(Debug, PartialEq, Eq)]
enum Part<'a> {
    Literal(&'a str),
    Escape(char),
    Variable {
        key: &'a str,
        default: Option<&'a str>,
    },
}

/// Whether `text` needs resolving at all.
pub fn has_variables(text: &str) -> bool {
    text.contains("${")
}

fn parts(text: &str) -> Result<Vec<Part<'_>>, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            parts.push(Part::Literal(&rest[..start]));
        }
        let inside = &rest[start + 2..];
        let end = inside
            .find('}')
            .ok_or_else(|| format!("\"{text}\" opens a policy variable (${{) it does not close"))?;
        let body = inside[..end].trim();
        parts.push(match body {
            "*" => Part::Escape('*'),
            "?" => Part::Escape('?'),
            "$" => Part::Escape('$'),
            _ => {
                let (key, default) = match body.split_once(',') {
                    None => (body, None),
                    Some((key, default)) => {
                        let default = default.trim();
                        let quoted = default
                            .strip_prefix('\'')
                            .and_then(|d| d.strip_suffix('\''))
                            .filter(|d| !d.contains('\''));
                        match quoted {
                            Some(d) => (key.trim(), Some(d)),
                            None => {
                                return Err(format!(
                                    "\"{text}\": a variable's default must be in single quotes \
                                     (${{key, 'default'}})"
                                ));
                            }
                        }
                    }
                };
                let plain = !key.is_empty()
                    && key
                        .chars()
                        .all(|c| !c.is_whitespace() && !matches!(c, '\'' | '$' | '{' | '}'));
                if !plain {
                    return Err(format!("\"{text}\": \"{body}\" is not a policy variable"));
                }
                Part::Variable { key, default }
            }
        });
        rest = &inside[end + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Literal(rest));
    }
    Ok(parts)
}

/// The keys the variables in `text` name, or why `text` is not a well-formed template.
pub fn variable_keys(text: &str) -> Result<Vec<&str>, String> {
    Ok(parts(text)?
        .into_iter()
        .filter_map(|part| match part {
            Part::Variable { key, .. } => Some(key),
            _ => None,
        })
        .collect())
}

/// `text` with its variables replaced by the request's values; `None` when one cannot be.
pub fn resolve(text: &str, context: &RequestContext) -> Option<Vec<Glyph>> {
    let mut glyphs = Vec::with_capacity(text.len());
    for part in parts(text).ok()? {
        match part {
            Part::Literal(literal) => glyphs.extend(literal.chars().map(|c| match c {
                '*' => Glyph::AnyRun,
                '?' => Glyph::AnyOne,
                c => Glyph::Char(c),
            })),
            Part::Escape(c) => glyphs.push(Glyph::Char(c)),
            Part::Variable { key, default } => {
                let value = match context.get(key) {
                    Some([one]) => one.as_str(),
                    _ => default?,
                };
                glyphs.extend(value.chars().map(Glyph::Char));
            }
        }
    }
    Some(glyphs)
}

/// A resolved pattern as text, wildcards written as `*` and `?` (for the equality operators,
/// to which `*` is just a character).
pub fn literal(glyphs: &[Glyph]) -> String {
    glyphs
        .iter()
        .map(|g| match g {
            Glyph::Char(c) => *c,
            Glyph::AnyRun => '*',
            Glyph::AnyOne => '?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::wildcard;

    fn context() -> RequestContext {
        let mut context = RequestContext::new();
        context
            .set("aws:username", "alice")
            .set("kms:EncryptionContext:Tenant", "a*b");
        context
    }

    #[test]
    fn variables_resolve_with_defaults_and_escapes() {
        let context = context();
        let resolved = |text: &str| resolve(text, &context).map(|g| literal(&g));
        assert_eq!(
            resolved("arn:aws:iam::*:user/${aws:username}").as_deref(),
            Some("arn:aws:iam::*:user/alice")
        );
        assert_eq!(
            resolved("${AWS:UserName}-${ kms:encryptioncontext:tenant }").as_deref(),
            Some("alice-a*b")
        );
        assert_eq!(resolved("${aws:userid}"), None);
        assert_eq!(
            resolved("${aws:userid, 'nobody'}/${aws:username,'x'}").as_deref(),
            Some("nobody/alice")
        );
        assert_eq!(resolved("${aws:userid, ''}x").as_deref(), Some("x"));
        assert_eq!(resolved("a${*}b${?}c${$}d").as_deref(), Some("a*b?c$d"));
        assert_eq!(resolved("no variables").as_deref(), Some("no variables"));
    }

    #[test]
    fn resolved_values_and_escapes_are_literal_but_written_wildcards_are_not() {
        let context = context();
        let pattern = |text: &str| resolve(text, &context).unwrap();
        // The context value `a*b` is three characters, not a pattern.
        assert!(wildcard::matches_resolved(
            &pattern("t/${kms:EncryptionContext:Tenant}"),
            "t/a*b",
            false
        ));
        assert!(!wildcard::matches_resolved(
            &pattern("t/${kms:EncryptionContext:Tenant}"),
            "t/aXXb",
            false
        ));
        assert!(!wildcard::matches_resolved(&pattern("x${*}"), "xyz", false));
        assert!(wildcard::matches_resolved(&pattern("x${*}"), "x*", false));
        assert!(wildcard::matches_resolved(
            &pattern("user/${aws:username}/*"),
            "user/alice/key",
            false
        ));
    }

    #[test]
    fn malformed_variables_are_named() {
        for text in [
            "${aws:username",
            "${aws:username, default}",
            "${}",
            "${aws user}",
        ] {
            assert!(variable_keys(text).is_err(), "{text}");
        }
        assert_eq!(
            variable_keys("${aws:username}/${*}/${kms:ViaService, 'x'}"),
            Ok(vec!["aws:username", "kms:ViaService"])
        );
    }
}
