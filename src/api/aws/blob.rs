//! Blobs in the AWS JSON protocols: standard base64 with padding.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serializer};

pub fn serialize<S: Serializer, T: AsRef<[u8]>>(
    bytes: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut text = STANDARD.encode(bytes.as_ref());
    let result = serializer.serialize_str(&text);
    zeroize::Zeroize::zeroize(&mut text);
    result
}

pub fn deserialize<'de, D: Deserializer<'de>, T: From<Vec<u8>>>(
    deserializer: D,
) -> Result<T, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
    STANDARD
        .decode(text.as_bytes())
        .map(T::from)
        .map_err(|_| serde::de::Error::custom("a blob must be base64"))
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Shape {
        #[serde(with = "super")]
        blob: Vec<u8>,
    }

    #[test]
    fn blobs_are_base64() {
        let text = serde_json::to_string(&Shape {
            blob: b"hi!".to_vec(),
        })
        .unwrap();
        assert_eq!(text, r#"{"blob":"aGkh"}"#);
        assert_eq!(
            serde_json::from_str::<Shape>(&text).unwrap(),
            Shape {
                blob: b"hi!".to_vec()
            }
        );
        assert!(serde_json::from_str::<Shape>(r#"{"blob":"***"}"#).is_err());
    }
}
