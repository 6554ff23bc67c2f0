//! Property tests of the on-disk codec and framing: round trips, and arbitrary bytes never
//! panic any decoder.

use action_ledger::event::codec::{decode_entry, encode_entry, ENTRY_SCHEMA_V1, KIND_ENTRY};
use action_ledger::event::*;
use action_ledger::log::format::*;
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;

fn s() -> impl Strategy<Value = String> {
    "[a-z0-9_é-]{0,12}"
}

fn resource() -> impl Strategy<Value = ResourceRef> {
    (s(), s()).prop_map(|(resource_type, id)| ResourceRef { resource_type, id })
}

fn pending_op() -> impl Strategy<Value = PendingOp> {
    (
        option::of(s()),
        option::of(0.0..=100.0f64),
        option::of(s()),
        option::of(s()),
        option::of(any::<i64>()),
        option::of(any::<i64>()),
        option::of(s()),
    )
        .prop_map(
            |(
                op_name,
                progress,
                status_code,
                status_description,
                heartbeat,
                last_sample_time,
                snapshot,
            )| PendingOp {
                op_name,
                progress,
                status_code,
                status_description,
                heartbeat,
                last_sample_time,
                snapshot,
            },
        )
}

fn body() -> impl Strategy<Value = EventBody> {
    prop_oneof![
        Just(EventBody::Started),
        (
            option::of(0.0..=100.0f64),
            option::of(s()),
            option::of(s()),
            btree_map(s(), option::of(pending_op()), 0..3)
        )
            .prop_map(
                |(progress, state, message, pending_ops)| EventBody::Progress(ProgressUpdate {
                    progress,
                    state,
                    message,
                    pending_ops
                })
            ),
        (s(), option::of(s())).prop_map(|(name, host)| EventBody::EventStarted { name, host }),
        (s(), any::<bool>(), option::of(s()), option::of(s())).prop_map(
            |(name, ok, traceback, details)| {
                EventBody::EventFinished {
                    name,
                    result: if ok {
                        SubResult::Success
                    } else {
                        SubResult::Error
                    },
                    traceback,
                    details,
                }
            }
        ),
        Just(EventBody::Heartbeat),
        option::of(s()).prop_map(|message| EventBody::Completed { message }),
        (s(), s()).prop_map(|(code, message)| EventBody::Failed {
            error: ErrorInfo { code, message }
        }),
        Just(EventBody::CancelRequested),
        option::of(s()).prop_map(|message| EventBody::Cancelled { message }),
    ]
}

fn new_action() -> impl Strategy<Value = NewAction> {
    (
        (any::<u64>(), s(), s(), option::of(s()), s()),
        (
            0..3u8,
            resource(),
            vec(resource(), 0..3),
            option::of(s()),
            option::of(s()),
        ),
        (
            option::of(s()),
            btree_map(s(), s(), 0..3),
            any::<bool>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (id, uid, tenant, user, action_type),
                (kind, resource, related, node, region),
                (description, labels, running, exclusive),
            )| {
                NewAction {
                    id,
                    uid,
                    tenant,
                    user,
                    action_type,
                    kind: [Kind::Task, Kind::StateMachine, Kind::Other][kind as usize],
                    resource,
                    related,
                    node,
                    region,
                    description,
                    labels,
                    status: if running {
                        InitialStatus::Running
                    } else {
                        InitialStatus::Queued
                    },
                    exclusive,
                }
            },
        )
}

fn entry() -> impl Strategy<Value = Entry> {
    let op = prop_oneof![
        new_action().prop_map(Op::Create),
        (any::<u64>(), body()).prop_map(|(action, body)| Op::Event { action, body }),
    ];
    (
        any::<i64>(),
        s(),
        option::of((s(), s(), any::<[u8; 32]>())),
        vec(op, 0..5),
    )
        .prop_map(|(recorded_at, principal, idem, ops)| Entry {
            recorded_at,
            principal,
            idempotency: idem.map(|(tenant, key, request_digest)| IdempotencyStamp {
                tenant,
                key,
                request_digest,
            }),
            ops,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn entry_round_trips(e in entry()) {
        let bytes = encode_entry(&e).unwrap();
        prop_assert_eq!(decode_entry(KIND_ENTRY, ENTRY_SCHEMA_V1, &bytes).unwrap(), e);
    }

    #[test]
    fn record_frame_round_trips(payload in vec(any::<u8>(), 0..600), position in 1..u64::MAX, batch_offset in any::<u32>()) {
        let mut out = Vec::new();
        let meta = RecordMeta { position, batch_offset, kind: 1, schema: 1 };
        let digest = encode_record(&mut out, meta, &GENESIS_DIGEST, &payload);
        prop_assert_eq!(out.len() % 8, 0);
        let frame = decode_frame(&out, 1 << 20).unwrap();
        prop_assert_eq!(frame.meta, meta);
        prop_assert_eq!(frame.digest, digest);
        prop_assert_eq!(frame.payload, &payload[..]);
        prop_assert_eq!(frame.total_len, out.len());
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..2048)) {
        let _ = decode_entry(KIND_ENTRY, ENTRY_SCHEMA_V1, &bytes);
        let _ = decode_entry(9, 9, &bytes);
        let _ = decode_frame(&bytes, 1 << 20);
        let _ = SegmentHeader::decode(&bytes);
    }

    #[test]
    fn decoding_a_damaged_entry_never_panics(e in entry(), flips in vec((any::<prop::sample::Index>(), 1..=255u8), 1..4)) {
        let mut bytes = encode_entry(&e).unwrap();
        if !bytes.is_empty() {
            for (i, mask) in flips {
                let at = i.index(bytes.len());
                bytes[at] ^= mask;
            }
        }
        let _ = decode_entry(KIND_ENTRY, ENTRY_SCHEMA_V1, &bytes);
    }

    #[test]
    fn scanning_a_garbage_segment_never_panics(tail in vec(any::<u8>(), 0..4096), valid_header in any::<bool>()) {
        let sim = action_ledger::log::SimStorage::new();
        let path = std::path::Path::new("/g/log/00000000000000000001.seg");
        let mut bytes = if valid_header {
            SegmentHeader { sequence: 1, first_position: 1, prev_digest: GENESIS_DIGEST }.encode().to_vec()
        } else {
            Vec::new()
        };
        bytes.extend_from_slice(&tail);
        use action_ledger::log::Storage;
        let mut f = sim.create(path).unwrap();
        f.append(&bytes).unwrap();
        let _ = action_ledger::log::verify(&sim, std::path::Path::new("/g/log"), &mut |_| Ok(()));
    }
}

#[test]
fn oversized_payload_is_a_named_limit() {
    let e = Entry {
        recorded_at: 0,
        principal: "x".repeat(action_ledger::limits::RECORD_PAYLOAD_BYTES_MAX + 1),
        idempotency: None,
        ops: vec![],
    };
    let err = encode_entry(&e).unwrap_err().to_string();
    assert!(err.contains("RECORD_PAYLOAD_BYTES_MAX"), "{err}");
}
