//! The request-signature parsers on arbitrary text: `parse_authorization` never panics and
//! what it accepts is consistent; `parse_amz_date` accepts only the canonical form.

#![no_main]

use keyhaven::auth::signature::{
    ALGORITHM, DATE_HEADER, HOST_HEADER, NONCE_HEADER, format_amz_date, parse_amz_date,
    parse_authorization,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = parse_authorization(text) {
        assert!(text.starts_with(ALGORITHM));
        assert!(!parsed.access_key_id.is_empty());
        assert_eq!(parsed.date.len(), 8);
        assert!(parsed.signed_headers.windows(2).all(|w| w[0] < w[1]));
        for required in [HOST_HEADER, DATE_HEADER, NONCE_HEADER] {
            assert!(parsed.signed_headers.contains(&required));
        }
    }
    if let Some(time) = parse_amz_date(text) {
        assert_eq!(format_amz_date(time), text);
    }
});
