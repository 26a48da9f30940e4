//! The policy parser on arbitrary text, as both kinds of policy: never panics, and what it
//! accepts parses again to the same policy; the wildcard matcher on arbitrary patterns never
//! panics and agrees with itself on case when asked to ignore it.

#![no_main]

use keyhaven::policy::{Policy, PolicyKind, wildcard_matches};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for kind in [PolicyKind::Resource, PolicyKind::Identity] {
        if let Ok(policy) = Policy::parse(text, kind) {
            assert_eq!(Policy::parse(text, kind).ok(), Some(policy));
        }
    }
    // The first line is a pattern, the rest the text it is matched against.
    let (pattern, subject) = text.split_once('\n').unwrap_or((text, ""));
    let exact = wildcard_matches(pattern, subject, false);
    let folded = wildcard_matches(pattern, subject, true);
    assert!(
        !exact || folded,
        "a case-sensitive match must also match ignoring case"
    );
    assert!(wildcard_matches("*", subject, false));
    assert!(wildcard_matches(
        subject.replace(['*', '?'], "").as_str(),
        &subject.replace(['*', '?'], ""),
        false
    ));
});
