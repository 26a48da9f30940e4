//! Policy variables, as AWS defines them for `Version` 2012-10-17 policies: `${aws:username}`
//! and any other request key, `${key, 'default'}` for a key the request may lack, and the
//! escapes `${*}`, `${?}`, `${$}` for a literal `*`, `?` or `$`. They stand in `Resource` /
//! `NotResource` and in the values of string conditions; in older policies `${…}` is literal.
//!
//! A value put in by a variable is always literal: a user named `a*` could not widen a pattern
//! written for their own name. A variable whose key the request lacks (or holds several values
//! for) and that has no default cannot be resolved; the statement then does not apply.
//!
//! A key the request spelt several ways (`owner` and `OWNER`, see the condition module) is not
//! "several values" but several candidates for one: [`Choices`] resolves the templates once per
//! candidate, and a `Deny` applies if some resolution makes it apply, an `Allow` only if every
//! one does, so that the ambiguity can only ever refuse more, as it does for conditions.

use super::condition::{RequestContext, normalise_key};
use super::document::Effect;

/// The most resolutions [`Choices::decide`] tries; a request spelling its keys more ways than
/// that gets the answer that refuses (a `Deny` applies, an `Allow` does not).
const MOST_RESOLUTIONS: usize = 64;

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

/// The candidates a request offers for the keys, among those some templates' variables name,
/// that it spelt several ways: one resolution of the templates per combination.
pub struct Choices<'c> {
    context: &'c RequestContext,
    /// Normalised key, and its candidate values (at least two).
    keys: Vec<(String, &'c [String])>,
}

impl<'c> Choices<'c> {
    /// The choices for the variables in `templates`. Costs nothing unless the request spelt
    /// some key several ways.
    pub fn of<'t>(
        templates: impl IntoIterator<Item = &'t str>,
        context: &'c RequestContext,
    ) -> Self {
        let mut keys: Vec<(String, &'c [String])> = Vec::new();
        if context.has_ambiguous_keys() {
            for template in templates {
                for key in variable_keys(template).unwrap_or_default() {
                    let key = normalise_key(key);
                    if keys.iter().any(|(k, _)| *k == key) {
                        continue;
                    }
                    if let Some((values, true)) = context.lookup(&key)
                        && values.len() > 1
                    {
                        keys.push((key, values));
                    }
                }
            }
        }
        Self { context, keys }
    }

    /// Whether a statement of `effect` applies, given whether it does under one resolution:
    /// for a `Deny`, under some resolution; for an `Allow`, under every one.
    pub fn decide(&self, effect: Effect, mut applies: impl FnMut(&Resolver<'_>) -> bool) -> bool {
        if self.keys.is_empty() {
            return applies(&Resolver {
                context: self.context,
                chosen: Vec::new(),
            });
        }
        let combinations = self.keys.iter().try_fold(1usize, |n, (_, values)| {
            n.checked_mul(values.len())
                .filter(|&n| n <= MOST_RESOLUTIONS)
        });
        let Some(combinations) = combinations else {
            return effect == Effect::Deny;
        };
        for combination in 0..combinations {
            let mut rest = combination;
            let chosen = self
                .keys
                .iter()
                .map(|(key, values)| {
                    let value = &values[rest % values.len()];
                    rest /= values.len();
                    (key.as_str(), value.as_str())
                })
                .collect();
            let resolver = Resolver {
                context: self.context,
                chosen,
            };
            match (effect, applies(&resolver)) {
                (Effect::Deny, true) => return true,
                (Effect::Allow, false) => return false,
                _ => {}
            }
        }
        effect == Effect::Allow
    }
}

/// Resolves templates with one candidate chosen for each key the request spelt several ways.
pub struct Resolver<'c> {
    context: &'c RequestContext,
    /// Normalised key and the candidate chosen for it.
    chosen: Vec<(&'c str, &'c str)>,
}

impl<'c> Resolver<'c> {
    /// `text` with its variables replaced; `None` when one cannot be.
    pub fn resolve(&self, text: &str) -> Option<Vec<Glyph>> {
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
                    let chosen = if self.chosen.is_empty() {
                        None
                    } else {
                        let key = normalise_key(key);
                        self.chosen
                            .iter()
                            .find(|(k, _)| *k == key)
                            .map(|(_, value)| *value)
                    };
                    let value = match (chosen, self.context.get(key)) {
                        (Some(value), _) => value,
                        (None, Some([one])) => one.as_str(),
                        _ => default?,
                    };
                    glyphs.extend(value.chars().map(Glyph::Char));
                }
            }
        }
        Some(glyphs)
    }
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

    /// `text` resolved with no candidate chosen for any key.
    fn resolve(text: &str, context: &RequestContext) -> Option<Vec<Glyph>> {
        Resolver {
            context,
            chosen: Vec::new(),
        }
        .resolve(text)
    }

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
