//! Message encoding: a postcard header (a documented, stable format),
//! optionally followed by raw payload bytes that no serializer touches.
//!
//! A frame is `postcard(header) ++ payload`. postcard's encoding ends where
//! the header ends, so no length prefix is needed; the payload is handed over
//! as a slice of the received buffer (no copy). Decoding reads only the
//! bytes that were sent: a hostile length prefix fails on the missing bytes
//! instead of allocating.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The postcard encoding of `value`.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("postcard serialization of an in-memory value cannot fail")
}

/// Decodes a value that fills all of `bytes`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match postcard::take_from_bytes(bytes) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(format!("{} bytes left after the value", rest.len())),
        Err(e) => Err(e.to_string()),
    }
}

/// Splits a frame into its header and the raw payload after it.
pub fn decode_frame<T: DeserializeOwned>(frame: Bytes) -> Result<(T, Bytes), String> {
    let (value, rest) = postcard::take_from_bytes::<T>(&frame).map_err(|e| e.to_string())?;
    let at = frame.len() - rest.len();
    Ok((value, frame.slice(at..)))
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
        let hostile = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert!(decode::<Vec<u8>>(&hostile).is_err());
        assert!(decode::<Vec<u64>>(&hostile).is_err());
        assert!(decode::<(u64, String)>(&[]).is_err());
        // Trailing bytes are refused where a whole value is expected.
        let mut long = b.clone();
        long.push(0);
        assert!(decode::<(u64, String, Vec<u8>)>(&long).is_err());
    }

    #[test]
    fn frames_carry_a_raw_payload() {
        let mut frame = encode(&(5u32, "head".to_string()));
        frame.extend_from_slice(b"raw payload");
        let frame = Bytes::from(frame);
        let ((n, s), payload): ((u32, String), Bytes) = decode_frame(frame.clone()).unwrap();
        assert_eq!((n, s.as_str()), (5, "head"));
        assert_eq!(&payload[..], b"raw payload");
        // The payload is a slice of the frame, not a copy.
        assert_eq!(
            payload.as_ptr(),
            frame[frame.len() - payload.len()..].as_ptr()
        );
        assert!(decode_frame::<(u32, String)>(Bytes::from_static(&[5])).is_err());
    }
}
