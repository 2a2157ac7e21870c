//! Property test of the request headers dav-server and our checks parse
//! (`If:`, `Depth`, `Destination`, `Overwrite`, `Range`, `Timeout`): any
//! value gets an answer below 500 from a real server, which keeps serving
//! and never changes what it stores.

use bytes::Bytes;
use proptest::prelude::*;
use tessera_integration::cluster::TestCluster;
use tessera_integration::data::pseudo_random;
use tessera_integration::http::{Http, StatusCode};
use tessera_meta::Settings;

/// Header values built from the pieces their grammars use, and noise.
fn value() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("(".to_string()),
        Just(")".to_string()),
        Just("<".to_string()),
        Just(">".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("Not ".to_string()),
        Just("\"".to_string()),
        Just("opaquelocktoken:".to_string()),
        Just("urn:uuid:".to_string()),
        Just("http://127.0.0.1/keep.bin".to_string()),
        Just("/keep.bin".to_string()),
        Just("bytes=".to_string()),
        Just("Second-".to_string()),
        Just("infinity".to_string()),
        Just(",".to_string()),
        Just("-".to_string()),
        Just(" ".to_string()),
        "[0-9]{1,20}",
        "[ -~]{0,12}",
    ];
    proptest::collection::vec(piece, 0..16).prop_map(|v| v.concat())
}

#[test]
fn any_header_value_gets_an_answer_below_500() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (c, h, data) = rt.block_on(async {
        let mut c = TestCluster::start(2, Settings::default()).await;
        let h = Http::new(&c.webdav().await);
        let data = pseudo_random(1, 3000);
        assert_eq!(
            h.put("/keep.bin", data.clone()).await.unwrap().status,
            StatusCode::CREATED
        );
        (c, h, data)
    });
    // Found by this test: dav-server's If parser indexed past the end of
    // an unclosed `[` or `<` and panicked the connection's task.
    // Likewise its entity-tag parser on a lone `"` in If-Match.
    for (name, v) in [
        ("If", "["),
        ("If", "(<a"),
        ("If", "(["),
        ("If-Match", "\""),
        ("If-None-Match", "W/\""),
    ] {
        let r = rt.block_on(h.request("PUT", "/scratch", &[(name, v)], Bytes::from_static(b"x")));
        assert_eq!(r.unwrap().status, StatusCode::BAD_REQUEST, "{name}: {v}");
    }
    let config = ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(
        header in prop_oneof![
            Just("If"), Just("Depth"), Just("Destination"), Just("Overwrite"),
            Just("Range"), Just("Timeout"), Just("If-Match"), Just("If-None-Match"),
        ],
        method in prop_oneof![
            Just("GET"), Just("PROPFIND"), Just("PROPPATCH"), Just("COPY"),
            Just("MOVE"), Just("DELETE"), Just("PUT"), Just("LOCK"), Just("UNLOCK"),
        ],
        v in value(),
    )| {
        // Values a header cannot carry are refused by the client.
        if hyper::header::HeaderValue::from_str(&v).is_err() {
            return Ok(());
        }
        // Only what must not change is guarded: PUT and DELETE go to a
        // scratch name, and COPY/MOVE never overwrite the kept file.
        let path = if matches!(method, "PUT" | "DELETE" | "MOVE") { "/scratch" } else { "/keep.bin" };
        let r = rt.block_on(h.request(method, path, &[(header, v.as_str())], Bytes::from_static(b"x")));
        let r = r.unwrap();
        prop_assert!(
            r.status.as_u16() < 500 || r.status == StatusCode::BAD_GATEWAY && header == "Destination",
            "{method} with {header}: {v:?} got {}: {}", r.status, r.text()
        );
    });
    rt.block_on(async {
        let back = h.get("/keep.bin").await.unwrap();
        assert!(back.body == data, "a stored byte changed");
        c.shutdown().await;
    });
}
