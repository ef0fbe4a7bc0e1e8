use arrow::array::{Array, AsArray};
use opentelemetry_proto::tonic::trace::v1::span::Event;

use super::*;
use crate::analytics::testing::{batch, kv, kv_int, span};

const MINUTE: u64 = 60_000;

fn work(
    n: u64,
    at_ms: u64,
    agent: &str,
    item: &str,
    event: &str,
) -> opentelemetry_proto::tonic::trace::v1::Span {
    span(
        n,
        at_ms,
        10,
        vec![
            kv("gen_ai.agent.id", agent),
            kv(WORK_ID, item),
            kv(WORK_EVENT, event),
        ],
    )
}

fn with(
    mut s: opentelemetry_proto::tonic::trace::v1::Span,
    more: Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
) -> opentelemetry_proto::tonic::trace::v1::Span {
    s.attributes.extend(more);
    s
}

fn derive(
    p: &CoordinationEvents,
    spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>,
) -> RecordBatch {
    let out = p
        .derive(&TableBatch::new(Table::SPANS, batch("agents", spans)))
        .unwrap();
    assert!(out.len() <= 1);
    out.into_iter()
        .next()
        .map(|b| {
            assert_eq!(b.table, COORDINATION_EVENTS);
            b.batch
        })
        .unwrap_or_else(|| RecordBatch::new_empty(COORDINATION_EVENTS.schema()))
}

/// Each row as `work event agent conflict=… held_by=… cycle_ms=… points=… team=…`,
/// `-` for null.
fn rows(b: &RecordBatch) -> Vec<String> {
    let text = |name: &str, i: usize| {
        string_at(strings(b, name).unwrap(), i)
            .unwrap_or("-")
            .to_owned()
    };
    let conflict = b.column_by_name("conflict").unwrap().as_boolean();
    let cycle = b
        .column_by_name("cycle_time_ms")
        .unwrap()
        .as_primitive::<arrow::datatypes::Int64Type>();
    let points = b
        .column_by_name("story_points")
        .unwrap()
        .as_primitive::<arrow::datatypes::Float64Type>();
    (0..b.num_rows())
        .map(|i| {
            let cycle = if cycle.is_null(i) {
                "-".into()
            } else {
                cycle.value(i).to_string()
            };
            let points = float_at(points, i).map_or("-".into(), |p| p.to_string());
            format!(
                "{} {} {} conflict={} held_by={} cycle_ms={cycle} points={points} team={}",
                text("work_id", i),
                text("event", i),
                text("agent_id", i),
                conflict.value(i),
                text("held_by", i),
                text("team", i),
            )
        })
        .collect()
}

#[test]
fn a_claim_on_a_held_item_is_a_conflict_and_completion_measures_the_cycle() {
    let p = CoordinationEvents::new(&CoordinationConfig::default());
    let claim = with(
        work(1, 1_000, "a", "W1", "claim"),
        vec![kv("coordination.team", "red"), kv_int(STORY_POINTS, 5)],
    );
    // Sent out of order: the claim by b happened after a's, and is judged so; the rows
    // keep the order sent.
    let out = derive(
        &p,
        vec![
            work(2, 2_000, "b", "W1", "claim"),
            claim,
            work(3, 2_500, "a", "W1", "claim"),
        ],
    );
    assert_eq!(
        rows(&out),
        vec![
            "W1 claim b conflict=true held_by=a cycle_ms=- points=5 team=red",
            "W1 claim a conflict=false held_by=- cycle_ms=- points=5 team=red",
            "W1 claim a conflict=false held_by=- cycle_ms=- points=5 team=red",
        ]
    );
    let out = derive(
        &p,
        vec![
            work(4, 61_000, "a", "W1", "complete"),
            work(5, 62_000, "b", "W1", "claim"),
        ],
    );
    assert_eq!(
        rows(&out),
        vec![
            "W1 complete a conflict=false held_by=- cycle_ms=60000 points=5 team=red",
            "W1 claim b conflict=false held_by=- cycle_ms=- points=- team=-",
        ]
    );
    assert_eq!(p.held(), 1);
}

#[test]
fn a_release_by_the_holder_frees_the_item_and_one_by_another_does_not() {
    let p = CoordinationEvents::new(&CoordinationConfig::default());
    let out = derive(
        &p,
        vec![
            work(1, 1_000, "a", "W", "claim"),
            work(2, 2_000, "b", "W", "release"),
            work(3, 3_000, "b", "W", "claim"),
            work(4, 4_000, "a", "W", "release"),
            work(5, 5_000, "b", "W", "claim"),
        ],
    );
    let conflicts: Vec<bool> = rows(&out)
        .iter()
        .map(|r| r.contains("conflict=true"))
        .collect();
    assert_eq!(conflicts, [false, false, true, false, false]);
}

#[test]
fn a_holding_lapses_after_the_lease() {
    let config = CoordinationConfig {
        lease_timeout_ms: MINUTE,
        ..Default::default()
    };
    let p = CoordinationEvents::new(&config);
    let out = derive(
        &p,
        vec![
            work(1, 0, "a", "W", "claim"),
            // Progress renews a's lease...
            work(2, 50_000, "a", "W", "progress"),
            work(3, 100_000, "b", "W", "claim"),
            // ...but nothing from a for over a minute lets the item go.
            work(4, 200_000, "b", "W", "claim"),
        ],
    );
    let conflicts: Vec<bool> = rows(&out)
        .iter()
        .map(|r| r.contains("conflict=true"))
        .collect();
    assert_eq!(conflicts, [false, false, true, false]);
}

#[test]
fn span_events_are_events_too_with_the_span_for_defaults() {
    let p = CoordinationEvents::new(&CoordinationConfig::default());
    let mut s = span(
        1,
        5_000,
        4_000,
        vec![
            kv("coordination.agent.id", "a"),
            kv("coordination.team", "blue"),
        ],
    );
    s.events = vec![
        Event {
            time_unix_nano: 2_000_000_000,
            name: "claimed".into(),
            attributes: vec![kv(WORK_ID, "W9"), kv(WORK_EVENT, "claim")],
            ..Default::default()
        },
        Event {
            time_unix_nano: 3_000_000_000,
            name: "log".into(),
            ..Default::default()
        },
        Event {
            time_unix_nano: 4_000_000_000,
            name: "done".into(),
            attributes: vec![
                kv(WORK_ID, "W9"),
                kv(WORK_EVENT, "complete"),
                kv("gen_ai.agent.id", "z"),
            ],
            ..Default::default()
        },
    ];
    let out = derive(&p, vec![s, span(2, 9_000, 1, vec![kv("other", "x")])]);
    assert_eq!(
        rows(&out),
        vec![
            "W9 claim a conflict=false held_by=- cycle_ms=- points=- team=blue",
            "W9 complete z conflict=false held_by=- cycle_ms=2000 points=- team=blue",
        ]
    );
    assert_eq!(strings(&out, "span_name").unwrap().value(0), "op 1");
}

#[test]
fn spans_without_coordination_derive_nothing() {
    let p = CoordinationEvents::new(&CoordinationConfig::default());
    let out = p
        .derive(&TableBatch::new(
            Table::SPANS,
            batch("s", vec![span(1, 1_000, 1, vec![kv("a", "b")])]),
        ))
        .unwrap();
    assert!(out.is_empty());
    let other = p
        .derive(&TableBatch::new(
            Table::LOGS,
            RecordBatch::new_empty(Table::LOGS.schema()),
        ))
        .unwrap();
    assert!(other.is_empty());
}

#[test]
fn spans_naming_an_item_without_an_event_are_not_stored_again_and_change_no_holding() {
    let p = CoordinationEvents::new(&CoordinationConfig::default());
    let mention = |n: u64, at_ms: u64, agent: &str| {
        span(
            n,
            at_ms,
            10,
            vec![kv("gen_ai.agent.id", agent), kv(WORK_ID, "W1")],
        )
    };
    // A batch of mentions alone (the common case) derives nothing at all.
    let only = p
        .derive(&TableBatch::new(
            Table::SPANS,
            batch("s", vec![mention(1, 1_000, "a"), mention(2, 2_000, "b")]),
        ))
        .unwrap();
    assert!(only.is_empty());
    // Mixed with events, and on span events too, only the events are rows; b's
    // mention of the item a holds neither conflicts nor takes it.
    let mut with_event = mention(5, 5_000, "b");
    with_event.events = vec![Event {
        time_unix_nano: 4_500_000_000,
        name: "looked".into(),
        attributes: vec![kv(WORK_ID, "W1")],
        ..Default::default()
    }];
    let out = derive(
        &p,
        vec![
            work(3, 3_000, "a", "W1", "claim"),
            mention(4, 4_000, "b"),
            with_event,
            work(6, 6_000, "b", "W1", "claim"),
        ],
    );
    assert_eq!(
        rows(&out),
        vec![
            "W1 claim a conflict=false held_by=- cycle_ms=- points=- team=-",
            "W1 claim b conflict=true held_by=a cycle_ms=- points=- team=-",
        ]
    );
}

#[test]
fn a_restored_book_remembers_who_holds_what() {
    let first = CoordinationEvents::new(&CoordinationConfig::default());
    let history = derive(
        &first,
        vec![
            with(
                work(1, 1_000, "a", "W1", "claim"),
                vec![kv_int(STORY_POINTS, 3)],
            ),
            work(2, 2_000, "a", "W2", "claim"),
            work(3, 3_000, "a", "W2", "complete"),
        ],
    );
    let second = CoordinationEvents::new(&CoordinationConfig::default());
    second.restore(&history).unwrap();
    assert_eq!(second.held(), 1);
    let out = derive(
        &second,
        vec![
            work(4, 4_000, "b", "W1", "claim"),
            work(5, 5_000, "b", "W2", "claim"),
            work(6, 9_000, "a", "W1", "complete"),
        ],
    );
    assert_eq!(
        rows(&out),
        vec![
            "W1 claim b conflict=true held_by=a cycle_ms=- points=3 team=-",
            "W2 claim b conflict=false held_by=- cycle_ms=- points=- team=-",
            "W1 complete a conflict=false held_by=- cycle_ms=8000 points=3 team=-",
        ]
    );
}

#[test]
fn the_book_is_bounded() {
    let config = CoordinationConfig {
        max_work_items: 10,
        ..Default::default()
    };
    let p = CoordinationEvents::new(&config);
    let spans = (0..25)
        .map(|i| work(i, 1_000 + i, "a", &format!("W{i}"), "claim"))
        .collect();
    assert_eq!(derive(&p, spans).num_rows(), 25);
    assert!(p.held() <= 10, "{} held", p.held());
    assert!(p.book().forgotten() > 0);
}

#[test]
fn a_claim_from_a_clock_a_day_ahead_is_stored_but_holds_nothing() {
    // The wall clock at 10 minutes past the epoch.
    let (clock, _) = LiveClock::manual(10 * MINUTE as i64 * 1_000_000, 600);
    let p = CoordinationEvents::with_clock(&CoordinationConfig::default(), clock.clone());
    let day = 24 * 60 * MINUTE;
    let ahead = derive(&p, vec![work(1, day, "a", "W1", "claim")]);
    assert_eq!(ahead.num_rows(), 1);
    assert_eq!(clock.skipped(NAME, Skip::Future), 1);
    assert_eq!(p.held(), 0);
    // The present goes on as if it had not come: b's claim is no conflict.
    let now = derive(&p, vec![work(2, 5 * MINUTE, "b", "W1", "claim")]);
    assert_eq!(
        rows(&now),
        ["W1 claim b conflict=false held_by=- cycle_ms=- points=- team=-"]
    );
    // Replayed from the history on a restart, it is skipped again.
    let restored = CoordinationEvents::with_clock(&CoordinationConfig::default(), clock);
    restored.restore(&ahead).unwrap();
    assert_eq!(restored.held(), 0);
}
