//! Body encoding: bincode with a size limit, so a hostile length prefix can
//! never make a server allocate more than the body it actually sent.

use bincode::Options;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn options() -> impl Options {
    bincode::DefaultOptions::new().with_limit(crate::MAX_BODY as u64)
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    options()
        .serialize(value)
        .expect("bincode serialization of an in-memory value cannot fail")
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    options().deserialize(bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_garbage() {
        let v: (u64, String, Vec<u8>) = (7, "x".into(), vec![1, 2, 3]);
        let b = encode(&v);
        assert_eq!(decode::<(u64, String, Vec<u8>)>(&b).unwrap(), v);
        // A huge length prefix must fail cleanly, not allocate.
        let hostile = [0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert!(decode::<Vec<u8>>(&hostile).is_err());
        assert!(decode::<(u64, String)>(&[]).is_err());
    }
}
