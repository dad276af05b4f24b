//! Golden byte fixtures written from the protocol description, round-trip property tests for
//! every message and value, and a never-panic fuzz of both decoders.

use super::*;
use proptest::prelude::*;

/// Bytes from hex digits; whitespace separates words for the reader.
fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).expect("fixtures are ASCII");
            u8::from_str_radix(pair, 16).expect("fixtures are hex")
        })
        .collect()
}

fn check_request(request: Request, fixture: &str) {
    let bytes = hex(fixture);
    let mut encoded = Vec::new();
    request
        .encode(&mut encoded)
        .expect("fixture requests encode");
    assert_eq!(encoded, bytes, "encoding of {request:?}");
    assert_eq!(
        Request::decode_frame(&bytes),
        Ok((request, bytes.len())),
        "decoding of {fixture}"
    );
}

fn check_response(response: Response, fixture: &str) {
    let bytes = hex(fixture);
    let mut encoded = Vec::new();
    response
        .encode(&mut encoded)
        .expect("fixture responses encode");
    assert_eq!(encoded, bytes, "encoding of {response:?}");
    assert_eq!(
        Response::decode_frame(&bytes),
        Ok((response, bytes.len())),
        "decoding of {fixture}"
    );
}

#[test]
fn request_fixtures() {
    // Header: u32 words, u8 type, u8 revision, u16 unused; then the body.
    check_request(Request::Leader, "01000000 00000000  0000000000000000");
    check_request(
        Request::Client { id: 7 },
        "01000000 01000000  0700000000000000",
    );
    check_request(
        Request::Open {
            name: "db".into(),
            flags: 0,
            vfs: "volatile".into(),
        },
        "04000000 03000000  6462000000000000 0000000000000000 766f6c6174696c65 0000000000000000",
    );
    check_request(
        Request::ExecSql {
            db: 1,
            sql: "x".into(),
            params: vec![Value::Integer(5), Value::Text("hi".into())],
        },
        // db, sql, params: count 2, types 1 and 3, padding; then 5 and "hi".
        "05000000 08000000  0100000000000000 7800000000000000 0201030000000000
         0500000000000000 6869000000000000",
    );
    check_request(
        Request::QuerySql {
            db: 0,
            sql: "SELECT 1".into(),
            params: vec![],
        },
        // No parameters: the tuple is omitted entirely.
        "03000000 09000000  0000000000000000 53454c4543542031 0000000000000000",
    );
    check_request(
        Request::QuerySql {
            db: 2,
            sql: "q".into(),
            params: vec![
                Value::Null,
                Value::Float(1.5),
                Value::Blob(vec![0xaa, 0xbb]),
                Value::UnixTime(-1),
                Value::Iso8601("t".into()),
                Value::Boolean(true),
            ],
        },
        "0a000000 09000000  0200000000000000 7100000000000000 06050204090a0b00
         0000000000000000 000000000000f83f 0200000000000000 aabb000000000000
         ffffffffffffffff 7400000000000000 0100000000000000",
    );
    check_request(
        Request::Interrupt { db: 1 },
        "01000000 0a000000  0100000000000000",
    );
    check_request(
        Request::Add {
            id: 2,
            address: "1.2.3.4:9".into(),
        },
        "03000000 0c000000  0200000000000000 312e322e332e343a 3900000000000000",
    );
    check_request(
        Request::Assign {
            id: 2,
            role: NodeRole::StandBy,
        },
        "02000000 0d000000  0200000000000000 0100000000000000",
    );
    check_request(
        Request::Remove { id: 2 },
        "01000000 0e000000  0200000000000000",
    );
    check_request(
        Request::Dump { name: "db".into() },
        "01000000 0f000000  6462000000000000",
    );
    check_request(Request::Cluster, "01000000 10000000  0100000000000000");
    check_request(
        Request::Transfer { id: 3 },
        "01000000 11000000  0300000000000000",
    );
    check_request(Request::Describe, "01000000 12000000  0000000000000000");
    check_request(
        Request::Weight { weight: 4 },
        "01000000 13000000  0400000000000000",
    );
}

#[test]
fn request_with_more_than_255_params_uses_revision_1() {
    let params = vec![Value::Null; 300];
    let request = Request::ExecSql {
        db: 0,
        sql: "x".into(),
        params,
    };
    let mut encoded = Vec::new();
    request.encode(&mut encoded).expect("encodes");
    // Revision byte 1, then a 32-bit count 300 = 0x012c right after db and sql.
    assert_eq!(encoded[5], 1);
    assert_eq!(&encoded[24..28], &[0x2c, 0x01, 0, 0]);
    assert_eq!(
        Request::decode_frame(&encoded),
        Ok((request, encoded.len()))
    );
}

#[test]
fn response_fixtures() {
    check_response(
        Response::Failure {
            code: failure_code::NOT_LEADER,
            message: "not leader".into(),
        },
        "03000000 00000000  0a28000000000000 6e6f74206c656164 6572000000000000",
    );
    check_response(
        Response::Server {
            id: 1,
            address: "127.0.0.1:9001".into(),
        },
        "03000000 01000000  0100000000000000 3132372e302e302e 313a393030310000",
    );
    check_response(
        Response::Welcome {
            heartbeat_timeout: 15000,
        },
        "01000000 02000000  983a000000000000",
    );
    check_response(
        Response::Servers(vec![
            NodeInfo {
                id: 1,
                address: "a:1".into(),
                role: NodeRole::Voter,
            },
            NodeInfo {
                id: 2,
                address: "b:2".into(),
                role: NodeRole::Spare,
            },
        ]),
        "07000000 03000000  0200000000000000
         0100000000000000 613a310000000000 0000000000000000
         0200000000000000 623a320000000000 0200000000000000",
    );
    check_response(
        Response::Db { id: 3 },
        "01000000 04000000  0300000000000000",
    );
    check_response(
        Response::Result {
            last_insert_id: 5,
            rows_affected: 1,
        },
        "02000000 06000000  0500000000000000 0100000000000000",
    );
    check_response(
        Response::Rows(RowsBatch {
            columns: vec!["a".into(), "b".into()],
            rows: vec![
                vec![Value::Integer(1), Value::Text("x".into())],
                vec![Value::Null, Value::Float(1.5)],
            ],
            more: false,
        }),
        // Column count, names; each row: 4-bit types low nibble first, then values; done.
        "0a000000 07000000  0200000000000000 6100000000000000 6200000000000000
         3100000000000000 0100000000000000 7800000000000000
         2500000000000000 0000000000000000 000000000000f83f
         ffffffffffffffff",
    );
    check_response(
        Response::Rows(RowsBatch {
            columns: vec!["t".into(), "i".into(), "b".into()],
            rows: vec![vec![
                Value::UnixTime(60),
                Value::Iso8601("2024".into()),
                Value::Boolean(false),
            ]],
            more: true,
        }),
        // Three types in two bytes (9 | 10 << 4, then 11), then "more rows follow".
        "09000000 07000000  0300000000000000 7400000000000000 6900000000000000
         6200000000000000 a90b000000000000 3c00000000000000 3230323400000000
         0000000000000000 eeeeeeeeeeeeeeee",
    );
    check_response(
        Response::Rows(RowsBatch {
            columns: vec![],
            rows: vec![],
            more: false,
        }),
        "02000000 07000000  0000000000000000 ffffffffffffffff",
    );
    check_response(Response::Empty, "01000000 08000000  0000000000000000");
    check_response(
        Response::Files(vec![File {
            name: "db".into(),
            data: vec![1, 2, 3, 4, 5, 6, 7, 8],
        }]),
        "04000000 09000000  0100000000000000 6462000000000000 0800000000000000
         0102030405060708",
    );
    check_response(
        Response::Metadata {
            failure_domain: 0,
            weight: 42,
        },
        "02000000 0a000000  0000000000000000 2a00000000000000",
    );
}

fn check_bad_response(fixture: &str, expected: DecodeError) {
    assert_eq!(
        Response::decode_frame(&hex(fixture)),
        Err(expected),
        "decoding of {fixture}"
    );
}

#[test]
fn bad_responses_give_typed_errors() {
    check_bad_response(
        "0100",
        DecodeError::Truncated {
            what: "message header",
            needed: 8,
            remaining: 2,
        },
    );
    check_bad_response(
        "02000000 08000000  0000000000000000",
        DecodeError::Truncated {
            what: "message body",
            needed: 16,
            remaining: 8,
        },
    );
    check_bad_response(
        "ffffffff 07000000  0000000000000000",
        DecodeError::Truncated {
            what: "message body",
            needed: 0xffff_ffff * 8,
            remaining: 8,
        },
    );
    check_bad_response("00000000 08000000", DecodeError::EmptyBody);
    check_bad_response(
        "01000000 2a000000  0000000000000000",
        DecodeError::UnknownMessageType { kind: 42 },
    );
    check_bad_response(
        "02000000 00000000  0100000000000000 6100000000000001",
        DecodeError::BadPadding {
            what: "failure message",
        },
    );
    check_bad_response(
        "02000000 00000000  0100000000000000 6162636465666768",
        DecodeError::MissingNul {
            what: "failure message",
        },
    );
    check_bad_response(
        "02000000 00000000  0100000000000000 fffe000000000000",
        DecodeError::InvalidUtf8 {
            what: "failure message",
        },
    );
    check_bad_response(
        "02000000 03000000  ffffffffffffffff 0000000000000000",
        DecodeError::CountTooLarge {
            what: "node",
            count: u64::MAX,
            remaining: 8,
        },
    );
    check_bad_response(
        // A row count of columns far beyond the body.
        "02000000 07000000  0000000001000000 ffffffffffffffff",
        DecodeError::CountTooLarge {
            what: "column",
            count: 1 << 32,
            remaining: 8,
        },
    );
    check_bad_response(
        // One column, a row whose type code is 6 (no such type).
        "04000000 07000000  0100000000000000 6100000000000000 0600000000000000
         0000000000000000",
        DecodeError::UnknownValueType { code: 6 },
    );
    check_bad_response(
        // One blob column whose length claims 2^40 bytes.
        "05000000 07000000  0100000000000000 6100000000000000 0400000000000000
         0000000000010000 ffffffffffffffff",
        DecodeError::Truncated {
            what: "blob value",
            needed: 1 << 40,
            remaining: 8,
        },
    );
    check_bad_response(
        // Rows that never reach an end-of-rows marker.
        "04000000 07000000  0100000000000000 6100000000000000 0100000000000000
         0700000000000000",
        DecodeError::Truncated {
            what: "end-of-rows marker",
            needed: 8,
            remaining: 0,
        },
    );
    check_bad_response(
        // One column of type 1, but the high nibble of the header's only byte is set.
        "05000000 07000000  0100000000000000 6100000000000000 2100000000000000
         0700000000000000 ffffffffffffffff",
        DecodeError::BadPadding { what: "row header" },
    );
    check_bad_response(
        "02000000 07000000  0000000000000000 0100000000000000",
        DecodeError::BadMarker { word: 1 },
    );
    check_bad_response(
        "04000000 03000000  0100000000000000 0100000000000000 613a310000000000
         0700000000000000",
        DecodeError::UnknownRole { code: 7 },
    );
    check_bad_response(
        "02000000 08000000  0000000000000000 0000000000000000",
        DecodeError::TrailingBytes { kind: 8, count: 8 },
    );
}

#[test]
fn bad_requests_give_typed_errors() {
    let check = |fixture: &str, expected: DecodeError| {
        assert_eq!(
            Request::decode_frame(&hex(fixture)),
            Err(expected),
            "decoding of {fixture}"
        );
    };
    check(
        "01000000 10000000  0000000000000000",
        DecodeError::UnsupportedFormat {
            what: "cluster",
            format: 0,
        },
    );
    check(
        "01000000 0a000000  0000000001000000",
        DecodeError::OutOfRange {
            what: "database id",
            value: 1 << 32,
        },
    );
    check(
        // 255 parameters announced in a body with room for none of them.
        "03000000 08000000  0000000000000000 7800000000000000 ff01010101010101",
        DecodeError::CountTooLarge {
            what: "parameter",
            count: 255,
            remaining: 7,
        },
    );
}

#[test]
fn text_with_nul_does_not_encode() {
    let mut buf = Vec::new();
    let request = Request::Dump {
        name: "a\0b".into(),
    };
    assert_eq!(request.encode(&mut buf), Err(EncodeError::NulInText));
}

#[test]
fn rows_must_match_their_columns() {
    let mut buf = Vec::new();
    let ragged = Response::Rows(RowsBatch {
        columns: vec!["a".into()],
        rows: vec![vec![]],
        more: false,
    });
    assert_eq!(
        ragged.encode(&mut buf),
        Err(EncodeError::RowWidth {
            columns: 1,
            values: 0
        })
    );
    let columnless = Response::Rows(RowsBatch {
        columns: vec![],
        rows: vec![vec![]],
        more: false,
    });
    assert_eq!(
        columnless.encode(&mut Vec::new()),
        Err(EncodeError::RowsWithoutColumns)
    );
}

#[test]
fn header_round_trips() {
    let header = Header {
        words: 0x0102_0304,
        kind: 9,
        revision: 1,
    };
    assert_eq!(header.encode(), [4, 3, 2, 1, 9, 1, 0, 0]);
    assert_eq!(Header::decode(header.encode()), header);
    assert_eq!(header.body_len(), 0x0102_0304 * 8);
}

fn text() -> impl Strategy<Value = String> {
    any::<String>().prop_map(|s| s.replace('\0', ""))
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::Integer),
        // NaN is never equal to itself, so it is covered by a fixture-free byte check below.
        any::<f64>()
            .prop_filter("NaN", |v| !v.is_nan())
            .prop_map(Value::Float),
        text().prop_map(Value::Text),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Blob),
        Just(Value::Null),
        any::<i64>().prop_map(Value::UnixTime),
        text().prop_map(Value::Iso8601),
        any::<bool>().prop_map(Value::Boolean),
    ]
}

fn role() -> impl Strategy<Value = NodeRole> {
    prop_oneof![
        Just(NodeRole::Voter),
        Just(NodeRole::StandBy),
        Just(NodeRole::Spare)
    ]
}

fn params() -> impl Strategy<Value = Vec<Value>> {
    prop_oneof![
        proptest::collection::vec(value(), 0..8),
        // Past 255 parameters the request switches to revision 1.
        proptest::collection::vec(value(), 250..300),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Leader),
        any::<u64>().prop_map(|id| Request::Client { id }),
        (text(), any::<u64>(), text()).prop_map(|(name, flags, vfs)| Request::Open {
            name,
            flags,
            vfs
        }),
        (any::<u32>(), text(), params()).prop_map(|(db, sql, params)| Request::ExecSql {
            db,
            sql,
            params
        }),
        (any::<u32>(), text(), params()).prop_map(|(db, sql, params)| Request::QuerySql {
            db,
            sql,
            params
        }),
        any::<u32>().prop_map(|db| Request::Interrupt { db }),
        (any::<u64>(), text()).prop_map(|(id, address)| Request::Add { id, address }),
        (any::<u64>(), role()).prop_map(|(id, role)| Request::Assign { id, role }),
        any::<u64>().prop_map(|id| Request::Remove { id }),
        text().prop_map(|name| Request::Dump { name }),
        Just(Request::Cluster),
        any::<u64>().prop_map(|id| Request::Transfer { id }),
        Just(Request::Describe),
        any::<u64>().prop_map(|weight| Request::Weight { weight }),
    ]
}

fn rows_batch() -> impl Strategy<Value = RowsBatch> {
    (0usize..6, any::<bool>())
        .prop_flat_map(|(width, more)| {
            let columns = proptest::collection::vec(text(), width);
            let rows = if width == 0 {
                Just(Vec::new()).boxed()
            } else {
                proptest::collection::vec(proptest::collection::vec(value(), width), 0..5).boxed()
            };
            (columns, rows, Just(more))
        })
        .prop_map(|(columns, rows, more)| RowsBatch {
            columns,
            rows,
            more,
        })
}

fn response() -> impl Strategy<Value = Response> {
    let node = (any::<u64>(), text(), role()).prop_map(|(id, address, role)| NodeInfo {
        id,
        address,
        role,
    });
    let file = (text(), proptest::collection::vec(any::<u8>(), 0..40))
        .prop_map(|(name, data)| File { name, data });
    prop_oneof![
        (any::<u64>(), text()).prop_map(|(code, message)| Response::Failure { code, message }),
        (any::<u64>(), text()).prop_map(|(id, address)| Response::Server { id, address }),
        any::<u64>().prop_map(|heartbeat_timeout| Response::Welcome { heartbeat_timeout }),
        proptest::collection::vec(node, 0..5).prop_map(Response::Servers),
        any::<u32>().prop_map(|id| Response::Db { id }),
        (any::<u64>(), any::<u64>()).prop_map(|(last_insert_id, rows_affected)| {
            Response::Result {
                last_insert_id,
                rows_affected,
            }
        }),
        rows_batch().prop_map(Response::Rows),
        Just(Response::Empty),
        proptest::collection::vec(file, 0..4).prop_map(Response::Files),
        (any::<u64>(), any::<u64>()).prop_map(|(failure_domain, weight)| Response::Metadata {
            failure_domain,
            weight
        }),
    ]
}

/// A frame with a plausible header (a known type, the right length) and an arbitrary body, so
/// that the fuzz reaches the body decoders instead of stopping at the length check.
fn framed_garbage() -> impl Strategy<Value = Vec<u8>> {
    (0u8..20, any::<u8>(), 1usize..12).prop_flat_map(|(kind, revision, words)| {
        proptest::collection::vec(any::<u8>(), words * WORD).prop_map(move |body| {
            let header = Header {
                words: words as u32,
                kind,
                revision,
            };
            let mut frame = header.encode().to_vec();
            frame.extend_from_slice(&body);
            frame
        })
    })
}

proptest! {
    #[test]
    fn requests_round_trip(request in request()) {
        let mut buf = Vec::new();
        request.encode(&mut buf).expect("generated requests encode");
        prop_assert_eq!(buf.len() % WORD, 0);
        prop_assert_eq!(Request::decode_frame(&buf), Ok((request, buf.len())));
    }

    #[test]
    fn responses_round_trip(response in response()) {
        let mut buf = Vec::new();
        response.encode(&mut buf).expect("generated responses encode");
        prop_assert_eq!(buf.len() % WORD, 0);
        prop_assert_eq!(Response::decode_frame(&buf), Ok((response, buf.len())));
    }

    #[test]
    fn float_bits_round_trip(bits in any::<u64>()) {
        // Covers NaN payloads too: compare bits, not floats.
        let rows = Response::Rows(RowsBatch {
            columns: vec!["f".into()],
            rows: vec![vec![Value::Float(f64::from_bits(bits))]],
            more: false,
        });
        let mut buf = Vec::new();
        rows.encode(&mut buf).expect("encodes");
        let (decoded, _) = Response::decode_frame(&buf).expect("decodes");
        let Response::Rows(batch) = decoded else { panic!("not rows: {decoded:?}") };
        let Value::Float(value) = batch.rows[0][0] else { panic!("not a float") };
        prop_assert_eq!(value.to_bits(), bits);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Request::decode_frame(&bytes);
        let _ = Response::decode_frame(&bytes);
    }

    #[test]
    fn framed_garbage_never_panics(frame in framed_garbage()) {
        let _ = Request::decode_frame(&frame);
        let _ = Response::decode_frame(&frame);
    }

    #[test]
    fn corrupted_messages_never_panic(
        response in response(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut buf = Vec::new();
        response.encode(&mut buf).expect("generated responses encode");
        for (index, byte) in flips {
            let at = index.index(buf.len());
            buf[at] ^= byte;
        }
        let _ = Response::decode_frame(&buf);
    }
}
