//! Timestamps in the JSON shapes: seconds since the Unix epoch, which SDKs send with a
//! fraction (botocore: `1767225600.5`); Keyhaven keeps whole seconds (the fraction dropped).

use serde::{Deserialize, Deserializer};

/// An optional timestamp member, as an integer or a number with a fraction.
pub fn optional<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    let Some(value) = Option::<f64>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if !value.is_finite() || value.abs() > 1e15 {
        return Err(serde::de::Error::custom("timestamp out of range"));
    }
    Ok(Some(value.floor() as i64))
}

#[cfg(test)]
mod tests {
    #[test]
    fn valid_to_reads_sdk_timestamps() {
        for (body, expected) in [
            (r#"{"ValidTo":1767225600}"#, Some(1767225600)),
            (r#"{"ValidTo":1767225600.75}"#, Some(1767225600)),
            (r#"{}"#, None),
        ] {
            let request: crate::proto::v1::ImportKeyMaterialRequest =
                serde_json::from_str(body).unwrap();
            assert_eq!(request.valid_to, expected, "{body}");
        }
        assert!(
            serde_json::from_str::<crate::proto::v1::ImportKeyMaterialRequest>(
                r#"{"ValidTo":"soon"}"#
            )
            .is_err()
        );
    }
}
