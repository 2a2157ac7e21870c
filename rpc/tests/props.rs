//! Property tests of the RPC codec: frames of any bytes decode to a value
//! or an error, never a panic; encoded frames decode to what was sent.

use bytes::Bytes;
use proptest::prelude::*;
use tessera_rpc::codec::{decode, decode_frame, encode};

/// A header shaped like the services' (strings, vectors, options, enums).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
enum Header {
    Get {
        object: u64,
        role: u8,
        indices: Vec<u64>,
    },
    Named(String, Option<(u32, bool)>),
    Nothing,
}

fn header() -> impl Strategy<Value = Header> {
    prop_oneof![
        (
            any::<u64>(),
            any::<u8>(),
            proptest::collection::vec(any::<u64>(), 0..50)
        )
            .prop_map(|(object, role, indices)| Header::Get {
                object,
                role,
                indices
            }),
        (".{0,40}", any::<Option<(u32, bool)>>()).prop_map(|(s, o)| Header::Named(s, o)),
        Just(Header::Nothing),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_frame::<Header>(Bytes::from(bytes.clone()));
        let _ = decode::<Header>(&bytes);
        let _ = decode::<(u64, String, Vec<Vec<u8>>)>(&bytes);
    }

    #[test]
    fn frames_round_trip(h in header(), payload in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut frame = encode(&h);
        frame.extend_from_slice(&payload);
        let (back, rest) = decode_frame::<Header>(Bytes::from(frame)).unwrap();
        prop_assert_eq!(back, h);
        prop_assert_eq!(&rest[..], &payload[..]);
    }

    #[test]
    fn truncated_frames_are_errors(h in header(), cut in 0usize..64) {
        let frame = encode(&h);
        let cut = cut.min(frame.len());
        if cut < frame.len() {
            // A header cut short never decodes to the whole value.
            let short = decode::<Header>(&frame[..cut]);
            prop_assert!(short.is_err() || short.unwrap() != h);
        }
    }
}
