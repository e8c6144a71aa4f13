//! Tests of the wire format: every kind round-trips, malformed messages
//! (cut, or with bytes past what their counts say) decode to nothing, and a
//! history head completed as the Redis script does decodes to the publish.

use super::*;

#[test]
fn round_trips() {
    let all = vec![
        Wire::Publish {
            origin: 3,
            req: 9,
            deadline: 1_700_000_000_123,
            ftype: FrameType::Binary,
            data: Bytes::from_static(b"\0\xffdata"),
            event: None,
            position: None,
        },
        Wire::Publish {
            origin: 3,
            req: 10,
            deadline: 7,
            ftype: FrameType::Text,
            data: Bytes::from_static(b"{\"a\":1}"),
            event: Some("chat message".into()),
            position: Some(Position {
                offset: 42,
                epoch: "e-1".into(),
            }),
        },
        Wire::Publish {
            origin: 3,
            req: 11,
            deadline: 7,
            ftype: FrameType::Text,
            data: Bytes::new(),
            event: None,
            position: Some(Position {
                offset: 1,
                epoch: "".into(),
            }),
        },
        Wire::Report {
            from: 2,
            req: 9,
            s: 10,
            f: 1,
        },
        Wire::Reports {
            from: 2,
            reports: vec![(9, 10, 1), (12, 0, 0), (u64::MAX, 3, 2)],
        },
        Wire::Send {
            origin: 1,
            req: 4,
            deadline: 0,
            client: 7 << 32 | 5,
            ftype: FrameType::Text,
            data: Bytes::from_static(b"hi"),
        },
        Wire::Call {
            origin: 1,
            req: 5,
            deadline: 42,
            client: 8,
            call: Bytes::from_static(br#"{"f":"subscribe","a":["x"]}"#),
        },
        Wire::Ack {
            from: 2,
            req: 5,
            status: AckStatus::UnknownClient,
            message: "client 8 not found".into(),
        },
        Wire::Ack {
            from: 2,
            req: 6,
            status: AckStatus::Expired,
            message: String::new(),
        },
        Wire::Who {
            origin: 4,
            req: 12,
            ids: true,
        },
        Wire::Present {
            from: 2,
            req: 12,
            presence: Presence {
                count: 3,
                clients: vec![2 << 32 | 1, 2 << 32 | 9, 2 << 32 | 10],
                users: vec!["1001".into(), "".into()],
                ..Default::default()
            },
        },
        Wire::Present {
            from: 2,
            req: 13,
            presence: Presence {
                count: 5,
                ..Default::default()
            },
        },
    ];
    for w in all {
        let bytes = w.encode();
        // A publish with an event or a position is the extended kind;
        // a plain one keeps the bytes earlier versions read.
        if let Wire::Publish {
            event, position, ..
        } = &w
        {
            let extended = event.is_some() || position.is_some();
            assert_eq!(bytes[0], if extended { b'q' } else { b'p' });
            if extended {
                // Cut inside the event or position: malformed, not misread.
                assert_eq!(Wire::decode(bytes.slice(..32)), None);
            }
        }
        assert_eq!(Wire::decode(bytes), Some(w));
    }
    assert_eq!(Wire::decode(Bytes::from_static(b"Px")), None);
    assert_eq!(
        Wire::decode(Bytes::from_static(b"p\x01\0\0\0\0\0\0\0\0\0\0\0\0")),
        None
    );
    // The kinds without a deadline (nodes of earlier versions).
    let mut old = vec![b'P'];
    old.extend_from_slice(&3u32.to_le_bytes());
    old.extend_from_slice(&9u64.to_le_bytes());
    old.extend_from_slice(b"\x00hi");
    assert_eq!(
        Wire::decode(Bytes::from(old)),
        Some(Wire::Publish {
            origin: 3,
            req: 9,
            deadline: 0,
            ftype: FrameType::Text,
            data: Bytes::from_static(b"hi"),
            event: None,
            position: None,
        })
    );
    assert_eq!(Wire::decode(Bytes::new()), None);
    // A presence answer cut inside its client ids is malformed.
    let cut = Wire::Present {
        from: 1,
        req: 1,
        presence: Presence {
            count: 1,
            clients: vec![7],
            ..Default::default()
        },
    }
    .encode();
    assert_eq!(Wire::decode(cut.slice(..cut.len() - 1)), None);
    // So are reports whose count does not match the bytes that follow.
    let reports = Wire::Reports {
        from: 1,
        reports: vec![(1, 1, 0), (2, 1, 0)],
    }
    .encode();
    assert_eq!(Wire::decode(reports.slice(..reports.len() - 1)), None);
    let mut longer = BytesMut::from(&reports[..]);
    longer.put_u8(0);
    assert_eq!(Wire::decode(longer.freeze()), None);
}

#[test]
fn a_history_head_completed_as_the_script_does_decodes_to_the_publish() {
    for event in [None, Some("chat")] {
        let mut b = BytesMut::new();
        b.put_slice(&history_publish_head(2, 5, 9, FrameType::Text, event));
        b.put_u64_le(300);
        b.put_u16_le(4);
        b.put_slice(b"ep01");
        b.put_slice(b"data");
        assert_eq!(
            Wire::decode(b.freeze()),
            Some(Wire::Publish {
                origin: 2,
                req: 5,
                deadline: 9,
                ftype: FrameType::Text,
                data: Bytes::from_static(b"data"),
                event: event.map(Arc::from),
                position: Some(Position {
                    offset: 300,
                    epoch: "ep01".into(),
                }),
            })
        );
    }
}
