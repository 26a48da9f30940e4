//! `*` (any run of characters) and `?` (any one character) patterns, as IAM matches actions,
//! resources, principals and `StringLike` values.

use super::variables::Glyph;

/// Whether `text` matches `pattern`. Linear-time with one backtrack point (no exponential
/// blow-up on hostile patterns). ASCII (every ARN and action name) is matched byte by byte
/// without allocating; anything else character by character, with Unicode case folding.
pub fn matches(pattern: &str, text: &str, ignore_case: bool) -> bool {
    if pattern == "*" {
        return true;
    }
    if pattern.is_ascii() && text.is_ascii() {
        let same = |a: &u8, b: &u8| {
            if ignore_case {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        return glob(pattern.as_bytes(), text.as_bytes(), b'*', b'?', same);
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let same = |a: &char, b: &char| {
        if ignore_case {
            a.to_lowercase().eq(b.to_lowercase())
        } else {
            a == b
        }
    };
    glob(&p, &t, '*', '?', same)
}

/// Whether `text` matches a pattern whose variables were resolved: only the wildcards the
/// policy wrote are wildcards (see the `variables` module).
pub fn matches_resolved(pattern: &[Glyph], text: &str, ignore_case: bool) -> bool {
    let t: Vec<Glyph> = text.chars().map(Glyph::Char).collect();
    let same = |a: &Glyph, b: &Glyph| match (a, b) {
        (Glyph::Char(a), Glyph::Char(b)) if ignore_case => a.to_lowercase().eq(b.to_lowercase()),
        (a, b) => a == b,
    };
    glob(pattern, &t, Glyph::AnyRun, Glyph::AnyOne, same)
}

fn glob<T: PartialEq>(
    p: &[T],
    t: &[T],
    any_run: T,
    any_one: T,
    same: impl Fn(&T, &T) -> bool,
) -> bool {
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == any_one || (p[pi] != any_run && same(&p[pi], &t[ti]))) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == any_run {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((star_p, star_t)) = star {
            pi = star_p + 1;
            ti = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == any_run)
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn wildcards() {
        let cases = [
            ("*", "", true),
            ("*", "anything", true),
            ("kms:*", "kms:Encrypt", true),
            ("kms:*", "iam:CreateUser", false),
            ("kms:Gen*Key", "kms:GenerateDataKey", true),
            ("kms:Gen*Key", "kms:GenerateDataKeyWithoutPlaintext", false),
            ("kms:Generate*", "kms:GenerateDataKeyWithoutPlaintext", true),
            ("kms:?ncrypt", "kms:Encrypt", true),
            ("kms:?ncrypt", "kms:Decrypt", false),
            ("kms:??crypt", "kms:Decrypt", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("", "", true),
            ("", "x", false),
            ("**", "x", true),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                matches(pattern, text, false),
                expected,
                "{pattern} ~ {text}"
            );
        }
        assert!(matches("KMS:encrypt", "kms:Encrypt", true));
        assert!(!matches("KMS:encrypt", "kms:Encrypt", false));
    }

    #[test]
    fn hostile_patterns_stay_linear() {
        let pattern = "*a".repeat(200) + "b";
        let text = "a".repeat(5000);
        assert!(!matches(&pattern, &text, false));
    }
}
