//! Round trips OTLP → Arrow → OTLP, and the validation of invalid records.

use arrow::array::{Array, AsArray, RecordBatch};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    summary_data_point::ValueAtQuantile, Exemplar, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use proptest::prelude::*;
use prost::Message;

use super::to_otlp::{logs_to_otlp, metrics_to_otlp, spans_to_otlp};
use super::*;
use crate::anyvalue;

// ---- generators ----

fn any_value() -> impl Strategy<Value = AnyValue> {
    let scalar = prop_oneof![
        "[a-z ]{0,8}".prop_map(Value::StringValue),
        any::<bool>().prop_map(Value::BoolValue),
        any::<i64>().prop_map(Value::IntValue),
        (-1e6f64..1e6).prop_map(Value::DoubleValue),
        proptest::collection::vec(any::<u8>(), 0..6).prop_map(Value::BytesValue),
    ];
    prop_oneof![
        4 => scalar.clone().prop_map(|v| AnyValue { value: Some(v) }),
        1 => proptest::collection::vec(scalar, 0..3).prop_map(|vs| AnyValue {
            value: Some(Value::ArrayValue(ArrayValue {
                values: vs.into_iter().map(|v| AnyValue { value: Some(v) }).collect(),
            })),
        }),
    ]
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    proptest::collection::btree_map("[a-z.]{1,10}", any_value(), 0..4).prop_map(|m| {
        m.into_iter()
            .map(|(key, value)| KeyValue {
                key,
                value: Some(value),
                ..Default::default()
            })
            .collect()
    })
}

fn id(len: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), len).prop_map(move |mut v| {
        v[0] |= 1; // never all zeros
        v
    })
}

fn time() -> impl Strategy<Value = u64> {
    1u64..(i64::MAX as u64)
}

fn resource() -> impl Strategy<Value = Option<Resource>> {
    proptest::option::of(
        (attributes(), any::<u32>()).prop_map(|(attributes, d)| Resource {
            attributes,
            dropped_attributes_count: d,
            ..Default::default()
        }),
    )
}

fn scope() -> impl Strategy<Value = Option<InstrumentationScope>> {
    proptest::option::of(
        ("[a-z]{0,6}", "[0-9.]{0,4}", attributes(), any::<u32>()).prop_map(
            |(name, version, attributes, d)| InstrumentationScope {
                name,
                version,
                attributes,
                dropped_attributes_count: d,
            },
        ),
    )
}

fn span_strategy() -> impl Strategy<Value = Span> {
    let event = (time(), "[a-z]{0,6}", attributes(), any::<u32>()).prop_map(|(t, name, a, d)| {
        span::Event {
            time_unix_nano: t,
            name,
            attributes: a,
            dropped_attributes_count: d,
        }
    });
    let link = (
        id(16),
        id(8),
        "[a-z=]{0,6}",
        attributes(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(t, s, ts, a, d, f)| span::Link {
            trace_id: t,
            span_id: s,
            trace_state: ts,
            attributes: a,
            dropped_attributes_count: d,
            flags: f,
        });
    (
        (
            id(16),
            id(8),
            proptest::option::of(id(8)),
            "[a-z=,]{0,8}",
            any::<u32>(),
        ),
        (
            "[a-z ]{0,10}",
            0i32..6,
            time(),
            time(),
            attributes(),
            any::<u32>(),
        ),
        (
            proptest::collection::vec(event, 0..3),
            any::<u32>(),
            proptest::collection::vec(link, 0..2),
            any::<u32>(),
            proptest::option::of((0i32..3, "[a-z]{0,5}")),
        ),
    )
        .prop_map(
            |(
                (trace_id, span_id, parent, trace_state, flags),
                (name, kind, s, e, a, da),
                (events, de, links, dl, status),
            )| Span {
                trace_id,
                span_id,
                trace_state,
                parent_span_id: parent.unwrap_or_default(),
                flags,
                name,
                kind,
                start_time_unix_nano: s,
                end_time_unix_nano: e,
                attributes: a,
                dropped_attributes_count: da,
                events,
                dropped_events_count: de,
                links,
                dropped_links_count: dl,
                status: status.map(|(code, message)| Status { message, code }),
            },
        )
}

fn traces_request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    let scope_spans = (
        scope(),
        proptest::collection::vec(span_strategy(), 0..4),
        "[a-z:/]{0,6}",
    )
        .prop_map(|(scope, spans, schema_url)| ScopeSpans {
            scope,
            spans,
            schema_url,
        });
    let resource_spans = (
        resource(),
        proptest::collection::vec(scope_spans, 0..3),
        "[a-z:/]{0,6}",
    )
        .prop_map(|(resource, scope_spans, schema_url)| ResourceSpans {
            resource,
            scope_spans,
            schema_url,
        });
    proptest::collection::vec(resource_spans, 0..3)
        .prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}

fn log_strategy() -> impl Strategy<Value = LogRecord> {
    (
        (
            prop_oneof![Just(0u64), time()],
            prop_oneof![Just(0u64), time()],
            0i32..25,
            "[A-Z]{0,5}",
        ),
        (
            proptest::option::of(any_value()),
            attributes(),
            any::<u32>(),
            any::<u32>(),
        ),
        (
            proptest::option::of(id(16)),
            proptest::option::of(id(8)),
            "[a-z.]{0,8}",
        ),
    )
        .prop_map(
            |((t, ot, sn, st), (body, attributes, d, flags), (tid, sid, event_name))| LogRecord {
                time_unix_nano: t,
                observed_time_unix_nano: ot,
                severity_number: sn,
                severity_text: st,
                body,
                attributes,
                dropped_attributes_count: d,
                flags,
                trace_id: tid.unwrap_or_default(),
                span_id: sid.unwrap_or_default(),
                event_name,
            },
        )
}

fn logs_request() -> impl Strategy<Value = ExportLogsServiceRequest> {
    let scope_logs = (
        scope(),
        proptest::collection::vec(log_strategy(), 0..4),
        "[a-z]{0,4}",
    )
        .prop_map(|(scope, log_records, schema_url)| ScopeLogs {
            scope,
            log_records,
            schema_url,
        });
    proptest::collection::vec(
        (
            resource(),
            proptest::collection::vec(scope_logs, 0..3),
            "[a-z]{0,4}",
        )
            .prop_map(|(resource, scope_logs, schema_url)| ResourceLogs {
                resource,
                scope_logs,
                schema_url,
            }),
        0..3,
    )
    .prop_map(|resource_logs| ExportLogsServiceRequest { resource_logs })
}

fn exemplars() -> impl Strategy<Value = Vec<Exemplar>> {
    proptest::collection::vec(
        (
            attributes(),
            time(),
            proptest::option::of(id(8)),
            proptest::option::of(id(16)),
            proptest::option::of(prop_oneof![
                any::<i64>().prop_map(exemplar::Value::AsInt),
                (-1e9f64..1e9).prop_map(exemplar::Value::AsDouble)
            ]),
        )
            .prop_map(|(a, t, s, tr, value)| Exemplar {
                filtered_attributes: a,
                time_unix_nano: t,
                span_id: s.unwrap_or_default(),
                trace_id: tr.unwrap_or_default(),
                value,
            }),
        0..2,
    )
}

fn point_common() -> impl Strategy<Value = (Vec<KeyValue>, u64, u64, u32)> {
    (
        attributes(),
        prop_oneof![Just(0u64), time()],
        time(),
        any::<u32>(),
    )
}

fn metric_strategy() -> impl Strategy<Value = Metric> {
    let number = (
        point_common(),
        exemplars(),
        proptest::option::of(prop_oneof![
            any::<i64>().prop_map(number_data_point::Value::AsInt),
            (-1e9f64..1e9).prop_map(number_data_point::Value::AsDouble)
        ]),
    )
        .prop_map(|((a, s, t, f), exemplars, value)| NumberDataPoint {
            attributes: a,
            start_time_unix_nano: s,
            time_unix_nano: t,
            exemplars,
            flags: f,
            value,
        })
        .boxed();
    let opt_f = || proptest::option::of(-1e9f64..1e9);
    let histogram = (
        point_common(),
        exemplars(),
        (any::<u64>(), opt_f(), opt_f(), opt_f()),
        proptest::collection::vec(-1e3f64..1e3, 0..4),
    )
        .prop_map(
            |((a, s, t, f), exemplars, (count, sum, min, max), bounds)| HistogramDataPoint {
                attributes: a,
                start_time_unix_nano: s,
                time_unix_nano: t,
                count,
                sum,
                bucket_counts: (0..=bounds.len() as u64).collect(),
                explicit_bounds: bounds,
                exemplars,
                flags: f,
                min,
                max,
            },
        );
    let buckets = proptest::option::of(
        (any::<i32>(), proptest::collection::vec(any::<u64>(), 0..4)).prop_map(
            |(offset, bucket_counts)| Buckets {
                offset,
                bucket_counts,
            },
        ),
    );
    let exp = (
        point_common(),
        exemplars(),
        (any::<u64>(), opt_f(), opt_f(), opt_f()),
        (
            -10i32..20,
            any::<u64>(),
            buckets.clone(),
            buckets,
            0f64..1.0,
        ),
    )
        .prop_map(
            |((a, s, t, f), exemplars, (count, sum, min, max), (scale, zc, pos, neg, zt))| {
                ExponentialHistogramDataPoint {
                    attributes: a,
                    start_time_unix_nano: s,
                    time_unix_nano: t,
                    count,
                    sum,
                    scale,
                    zero_count: zc,
                    positive: pos,
                    negative: neg,
                    flags: f,
                    exemplars,
                    min,
                    max,
                    zero_threshold: zt,
                }
            },
        );
    let summary = (
        point_common(),
        any::<u64>(),
        -1e9f64..1e9,
        proptest::collection::vec((0f64..1.0, -1e6f64..1e6), 0..3),
    )
        .prop_map(|((a, s, t, f), count, sum, qs)| SummaryDataPoint {
            attributes: a,
            start_time_unix_nano: s,
            time_unix_nano: t,
            count,
            sum,
            quantile_values: qs
                .into_iter()
                .map(|(quantile, value)| ValueAtQuantile { quantile, value })
                .collect(),
            flags: f,
        });
    let temporality = 0i32..3;
    let data = prop_oneof![
        proptest::collection::vec(number.clone(), 1..3)
            .prop_map(|data_points| Data::Gauge(Gauge { data_points })),
        (
            proptest::collection::vec(number, 1..3),
            temporality.clone(),
            any::<bool>()
        )
            .prop_map(|(data_points, t, m)| Data::Sum(Sum {
                data_points,
                aggregation_temporality: t,
                is_monotonic: m
            })),
        (
            proptest::collection::vec(histogram, 1..3),
            temporality.clone()
        )
            .prop_map(|(data_points, t)| Data::Histogram(Histogram {
                data_points,
                aggregation_temporality: t
            })),
        (proptest::collection::vec(exp, 1..3), temporality).prop_map(|(data_points, t)| {
            Data::ExponentialHistogram(ExponentialHistogram {
                data_points,
                aggregation_temporality: t,
            })
        }),
        proptest::collection::vec(summary, 1..3)
            .prop_map(|data_points| Data::Summary(Summary { data_points })),
    ];
    (
        "[a-z._]{1,10}",
        "[a-z ]{0,6}",
        "[a-zA-Z{}]{0,3}",
        attributes(),
        data,
    )
        .prop_map(|(name, description, unit, metadata, data)| Metric {
            name,
            description,
            unit,
            metadata,
            data: Some(data),
        })
}

fn metrics_request() -> impl Strategy<Value = ExportMetricsServiceRequest> {
    let scope_metrics = (
        scope(),
        proptest::collection::vec(metric_strategy(), 0..3),
        "[a-z]{0,4}",
    )
        .prop_map(|(scope, metrics, schema_url)| ScopeMetrics {
            scope,
            metrics,
            schema_url,
        });
    proptest::collection::vec(
        (
            resource(),
            proptest::collection::vec(scope_metrics, 0..3),
            "[a-z]{0,4}",
        )
            .prop_map(|(resource, scope_metrics, schema_url)| ResourceMetrics {
                resource,
                scope_metrics,
                schema_url,
            }),
        0..3,
    )
    .prop_map(|resource_metrics| ExportMetricsServiceRequest { resource_metrics })
}

// ---- normalisation: what a stored row is expected to give back ----

fn norm_value(v: &AnyValue) -> AnyValue {
    AnyValue {
        value: anyvalue::render(v).map(Value::StringValue),
    }
}

fn norm_attrs(attrs: &[KeyValue]) -> Vec<KeyValue> {
    attrs
        .iter()
        .map(|kv| KeyValue {
            key: kv.key.clone(),
            value: kv.value.as_ref().map(norm_value),
            ..Default::default()
        })
        .collect()
}

fn norm_resource(r: &Option<Resource>) -> Resource {
    let r = r.clone().unwrap_or_default();
    Resource {
        attributes: norm_attrs(&r.attributes),
        ..r
    }
}

fn norm_scope(s: &Option<InstrumentationScope>) -> InstrumentationScope {
    let s = s.clone().unwrap_or_default();
    InstrumentationScope {
        attributes: norm_attrs(&s.attributes),
        ..s
    }
}

type Flat<T> = Vec<(Resource, String, InstrumentationScope, String, T)>;

fn flat_spans(r: &ExportTraceServiceRequest, normalise: bool) -> Flat<Span> {
    let mut out = Vec::new();
    for rs in &r.resource_spans {
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                let mut s = s.clone();
                if normalise {
                    s.attributes = norm_attrs(&s.attributes);
                    for e in &mut s.events {
                        e.attributes = norm_attrs(&e.attributes);
                    }
                    for l in &mut s.links {
                        l.attributes = norm_attrs(&l.attributes);
                    }
                    s.status = Some(s.status.unwrap_or_default());
                }
                out.push((
                    norm_resource(&rs.resource),
                    rs.schema_url.clone(),
                    norm_scope(&ss.scope),
                    ss.schema_url.clone(),
                    s,
                ));
            }
        }
    }
    out
}

fn flat_logs(r: &ExportLogsServiceRequest, normalise: bool) -> Flat<LogRecord> {
    let mut out = Vec::new();
    for rl in &r.resource_logs {
        for sl in &rl.scope_logs {
            for l in &sl.log_records {
                let mut l = l.clone();
                if normalise {
                    l.attributes = norm_attrs(&l.attributes);
                    l.body = l
                        .body
                        .as_ref()
                        .map(norm_value)
                        .filter(|b| b.value.is_some());
                }
                out.push((
                    norm_resource(&rl.resource),
                    rl.schema_url.clone(),
                    norm_scope(&sl.scope),
                    sl.schema_url.clone(),
                    l,
                ));
            }
        }
    }
    out
}

/// Every data point as a metric of its own, attributes normalised.
fn flat_metrics(r: &ExportMetricsServiceRequest) -> Flat<Metric> {
    let mut out = Vec::new();
    for rm in &r.resource_metrics {
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                let one = |data| Metric {
                    metadata: norm_attrs(&m.metadata),
                    data: Some(data),
                    ..m.clone()
                };
                let mut push = |metric| {
                    out.push((
                        norm_resource(&rm.resource),
                        rm.schema_url.clone(),
                        norm_scope(&sm.scope),
                        sm.schema_url.clone(),
                        metric,
                    ))
                };
                let ex = |e: &[Exemplar]| -> Vec<Exemplar> {
                    e.iter()
                        .map(|e| Exemplar {
                            filtered_attributes: norm_attrs(&e.filtered_attributes),
                            ..e.clone()
                        })
                        .collect()
                };
                match m.data.as_ref().expect("generated with data") {
                    Data::Gauge(g) => g.data_points.iter().for_each(|p| {
                        let p = NumberDataPoint {
                            attributes: norm_attrs(&p.attributes),
                            exemplars: ex(&p.exemplars),
                            ..p.clone()
                        };
                        push(one(Data::Gauge(Gauge {
                            data_points: vec![p],
                        })))
                    }),
                    Data::Sum(s) => s.data_points.iter().for_each(|p| {
                        let p = NumberDataPoint {
                            attributes: norm_attrs(&p.attributes),
                            exemplars: ex(&p.exemplars),
                            ..p.clone()
                        };
                        push(one(Data::Sum(Sum {
                            data_points: vec![p],
                            ..s.clone()
                        })))
                    }),
                    Data::Histogram(h) => h.data_points.iter().for_each(|p| {
                        let p = HistogramDataPoint {
                            attributes: norm_attrs(&p.attributes),
                            exemplars: ex(&p.exemplars),
                            ..p.clone()
                        };
                        push(one(Data::Histogram(Histogram {
                            data_points: vec![p],
                            ..h.clone()
                        })))
                    }),
                    Data::ExponentialHistogram(h) => h.data_points.iter().for_each(|p| {
                        let p = ExponentialHistogramDataPoint {
                            attributes: norm_attrs(&p.attributes),
                            exemplars: ex(&p.exemplars),
                            ..p.clone()
                        };
                        push(one(Data::ExponentialHistogram(ExponentialHistogram {
                            data_points: vec![p],
                            ..h.clone()
                        })))
                    }),
                    Data::Summary(s) => s.data_points.iter().for_each(|p| {
                        let p = SummaryDataPoint {
                            attributes: norm_attrs(&p.attributes),
                            ..p.clone()
                        };
                        push(one(Data::Summary(Summary {
                            data_points: vec![p],
                        })))
                    }),
                }
            }
        }
    }
    out
}

fn check_batch_schema(batch: &RecordBatch, table: crate::schema::Table) {
    assert_eq!(batch.schema(), table.schema());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn spans_round_trip(request in traces_request()) {
        let converted = spans_from_otlp(&request).unwrap();
        prop_assert_eq!(converted.rejected, 0);
        check_batch_schema(&converted.batch, crate::schema::Table::SPANS);
        let back = spans_to_otlp(&converted.batch).unwrap();
        prop_assert_eq!(flat_spans(&back, false), flat_spans(&request, true));
    }

    #[test]
    fn logs_round_trip(request in logs_request()) {
        let converted = logs_from_otlp(&request).unwrap();
        prop_assert_eq!(converted.rejected, 0);
        check_batch_schema(&converted.batch, crate::schema::Table::LOGS);
        let back = logs_to_otlp(&converted.batch).unwrap();
        prop_assert_eq!(flat_logs(&back, false), flat_logs(&request, true));
    }

    #[test]
    fn metrics_round_trip(request in metrics_request()) {
        let converted = metrics_from_otlp(&request).unwrap();
        prop_assert_eq!(converted.rejected, 0);
        check_batch_schema(&converted.batch, crate::schema::Table::METRICS);
        let back = metrics_to_otlp(&converted.batch).unwrap();
        prop_assert_eq!(flat_metrics(&back), flat_metrics(&request));
    }
}

fn one_span(trace_id: Vec<u8>, span_id: Vec<u8>) -> Span {
    Span {
        trace_id,
        span_id,
        name: "op".into(),
        start_time_unix_nano: 10,
        end_time_unix_nano: 25,
        ..Default::default()
    }
}

#[test]
fn invalid_spans_are_counted_and_the_rest_kept() {
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    one_span(vec![1; 16], vec![2; 8]),
                    one_span(vec![1; 15], vec![2; 8]),
                    one_span(vec![0; 16], vec![2; 8]),
                    one_span(vec![1; 16], vec![3; 8]),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let converted = spans_from_otlp(&request).unwrap();
    assert_eq!(converted.batch.num_rows(), 2);
    assert_eq!(converted.rejected, 2);
    let msg = converted.error_message.unwrap();
    assert!(msg.contains("trace_id must be 16 bytes, got 15"), "{msg}");
    let durations = converted.batch.column_by_name("duration_ns").unwrap();
    assert_eq!(
        durations
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0),
        15
    );
}

#[test]
fn agent_id_prefers_gen_ai_then_coordination() {
    let attr = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    };
    let mut a = one_span(vec![1; 16], vec![1; 8]);
    a.attributes = vec![
        attr("coordination.agent.id", "c"),
        attr("gen_ai.agent.id", "g"),
    ];
    let mut b = one_span(vec![1; 16], vec![2; 8]);
    b.attributes = vec![attr("coordination.agent.id", "c")];
    let c = one_span(vec![1; 16], vec![3; 8]);
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![a, b, c],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let batch = spans_from_otlp(&request).unwrap().batch;
    let agents = batch.column_by_name("agent_id").unwrap().as_string::<i32>();
    assert_eq!(agents.value(0), "g");
    assert_eq!(agents.value(1), "c");
    assert!(agents.is_null(2));
}

#[test]
fn histogram_with_mismatched_buckets_is_rejected() {
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    Metric {
                        name: "h".into(),
                        data: Some(Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                time_unix_nano: 5,
                                bucket_counts: vec![1, 2],
                                explicit_bounds: vec![1.0, 2.0],
                                ..Default::default()
                            }],
                            aggregation_temporality: 2,
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "g".into(),
                        data: Some(Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint {
                                time_unix_nano: 5,
                                value: Some(number_data_point::Value::AsInt(3)),
                                ..Default::default()
                            }],
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "empty".into(),
                        data: None,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let converted = metrics_from_otlp(&request).unwrap();
    assert_eq!(converted.batch.num_rows(), 1);
    assert_eq!(converted.rejected, 2);
}

// ---- the wire path (`spans_from_protobuf`) against the prost path ----

/// Attributes whose keys the conversion looks up, repeated and of any type, so the
/// wire path's "first occurrence, only if a string" reading is exercised.
fn looked_up_attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    let key = prop_oneof![
        Just("gen_ai.agent.id"),
        Just("coordination.agent.id"),
        Just("service.name"),
        Just("other"),
    ];
    proptest::collection::vec((key, any_value()), 0..4).prop_map(|kvs| {
        kvs.into_iter()
            .map(|(key, value)| KeyValue {
                key: key.into(),
                value: Some(value),
                ..Default::default()
            })
            .collect()
    })
}

fn wire_request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    (
        traces_request(),
        looked_up_attributes(),
        looked_up_attributes(),
    )
        .prop_map(|(mut request, on_resources, on_spans)| {
            for rs in &mut request.resource_spans {
                let resource = rs.resource.get_or_insert_with(Default::default);
                resource.attributes.extend(on_resources.iter().cloned());
                for ss in &mut rs.scope_spans {
                    for span in &mut ss.spans {
                        span.attributes.splice(0..0, on_spans.iter().cloned());
                    }
                }
            }
            request
        })
}

/// What the receivers did before the wire path: prost, then conversion.
fn via_prost(bytes: &[u8]) -> Option<Converted> {
    let request = ExportTraceServiceRequest::decode(bytes).ok()?;
    Some(spans_from_otlp(&request).unwrap())
}

fn assert_same(wire: &Converted, prost: &Converted) {
    assert_eq!(wire.batch, prost.batch);
    assert_eq!(wire.rejected, prost.rejected);
    assert_eq!(wire.error_message, prost.error_message);
    assert_eq!(wire.ids, prost.ids);
    assert_ids_spell_the_text(wire);
}

/// The ids a span batch comes with are its rows' ids: the numbers its hex text spells,
/// row for row, a root's parent 0.
fn assert_ids_spell_the_text(converted: &Converted) {
    let ids = converted
        .ids
        .as_ref()
        .expect("a span batch comes with its ids");
    let batch = &converted.batch;
    assert_eq!(ids.len(), Some(batch.num_rows()));
    let text = |name: &str| {
        batch
            .column_by_name(name)
            .unwrap()
            .as_string::<i32>()
            .clone()
    };
    let (trace, span, parent) = (text("trace_id"), text("span_id"), text("parent_span_id"));
    for row in 0..batch.num_rows() {
        assert_eq!(format!("{:032x}", ids.trace[row]), trace.value(row));
        assert_eq!(format!("{:016x}", ids.span[row]), span.value(row));
        let stored = (!parent.is_null(row)).then(|| parent.value(row).to_owned());
        let number = (ids.parent[row] != 0).then(|| format!("{:016x}", ids.parent[row]));
        assert_eq!(number, stored);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every valid request takes the wire path and gives the prost path's batch.
    #[test]
    fn wire_path_equals_prost_path(request in wire_request()) {
        let bytes = request.encode_to_vec();
        let wire = spans_from_protobuf(&bytes);
        prop_assert!(wire.is_some(), "a valid request stepped aside");
        let wire = wire.unwrap().unwrap();
        assert_same(&wire, &via_prost(&bytes).unwrap());
        check_batch_schema(&wire.batch, crate::schema::Table::SPANS);
    }

    /// On damaged bytes the wire path either steps aside or agrees with prost; it
    /// never accepts what prost refuses, nor reads it differently.
    #[test]
    fn wire_path_on_damaged_bytes_agrees_or_steps_aside(
        request in wire_request(),
        damage in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut bytes = request.encode_to_vec();
        if bytes.is_empty() {
            return Ok(());
        }
        for (at, byte) in &damage {
            let i = at.index(bytes.len());
            bytes[i] = *byte;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        if let Some(wire) = spans_from_protobuf(&bytes) {
            let prost = via_prost(&bytes);
            prop_assert!(prost.is_some(), "the wire path accepted what prost refuses");
            assert_same(&wire.unwrap(), &prost.unwrap());
        }
    }
}

fn string_attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn one_span_request(span: Span) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string_attr("service.name", "svc")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "scope".into(),
                    ..Default::default()
                }),
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[test]
fn wire_path_steps_aside_for_what_needs_the_general_path() {
    use prost::encoding::{encode_key, encode_varint, WireType};
    // An invalid span: the general path rejects it with its message.
    let invalid = one_span_request(one_span(vec![0; 16], vec![2; 8])).encode_to_vec();
    assert!(spans_from_protobuf(&invalid).is_none());
    assert_eq!(via_prost(&invalid).unwrap().rejected, 1);

    // A span name that is not UTF-8: the general path repairs it.
    let mut span = one_span(vec![1; 16], vec![2; 8]);
    span.name = "\u{5}\u{6}".into();
    let mut bytes = one_span_request(span).encode_to_vec();
    let at = bytes.windows(2).position(|w| w == [5, 6]).unwrap();
    bytes[at] = 0xff;
    assert!(via_prost(&bytes).is_none(), "prost refuses it");
    assert!(spans_from_protobuf(&bytes).is_none());

    // `status` sent twice: prost merges the two messages.
    let mut span = one_span(vec![1; 16], vec![2; 8]);
    span.status = Some(Status {
        message: "first".into(),
        code: 2,
    });
    let mut span_bytes = span.encode_to_vec();
    encode_key(15, WireType::LengthDelimited, &mut span_bytes);
    let second = Status {
        message: "second".into(),
        code: 0,
    }
    .encode_to_vec();
    encode_varint(second.len() as u64, &mut span_bytes);
    span_bytes.extend_from_slice(&second);
    let request = wrap_span_bytes(&span_bytes);
    assert!(spans_from_protobuf(&request).is_none());
    let merged = via_prost(&request).unwrap().batch;
    let messages = merged
        .column_by_name("status_message")
        .unwrap()
        .as_string::<i32>();
    assert_eq!(messages.value(0), "second");
}

/// `ExportTraceServiceRequest { resource_spans: [{ scope_spans: [{ spans: [span] }] }] }`
/// around a span given as raw bytes, with the scope written after the span and an
/// unknown field at each level.
fn wrap_span_bytes(span: &[u8]) -> Vec<u8> {
    use prost::encoding::{encode_key, encode_varint, WireType};
    fn field(number: u32, bytes: &[u8], out: &mut Vec<u8>) {
        encode_key(number, WireType::LengthDelimited, out);
        encode_varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }
    fn unknown(out: &mut Vec<u8>) {
        encode_key(99, WireType::Varint, out);
        encode_varint(7, out);
    }
    let mut scope_spans = Vec::new();
    field(2, span, &mut scope_spans);
    unknown(&mut scope_spans);
    let scope = InstrumentationScope {
        name: "late scope".into(),
        ..Default::default()
    };
    field(1, &scope.encode_to_vec(), &mut scope_spans);
    let mut resource_spans = Vec::new();
    field(2, &scope_spans, &mut resource_spans);
    let resource = Resource {
        attributes: vec![string_attr("service.name", "late service")],
        ..Default::default()
    };
    field(1, &resource.encode_to_vec(), &mut resource_spans);
    let mut request = Vec::new();
    unknown(&mut request);
    field(1, &resource_spans, &mut request);
    request
}

#[test]
fn wire_path_reads_fields_in_any_order_and_skips_unknown_ones() {
    use prost::encoding::{encode_key, encode_varint, WireType};
    let mut span = one_span(vec![1; 16], vec![2; 8]);
    span.attributes = vec![string_attr("gen_ai.agent.id", "agent-7")];
    // Fields in reverse order, an unknown field, and `name` twice (the last counts).
    let mut span_bytes = Vec::new();
    encode_key(42, WireType::LengthDelimited, &mut span_bytes);
    encode_varint(3, &mut span_bytes);
    span_bytes.extend_from_slice(b"abc");
    let mut fields = span.encode_to_vec();
    span_bytes.append(&mut fields);
    let mut renamed = Span {
        name: "renamed".into(),
        ..Default::default()
    }
    .encode_to_vec();
    span_bytes.append(&mut renamed);
    let request = wrap_span_bytes(&span_bytes);
    let wire = spans_from_protobuf(&request).unwrap().unwrap();
    assert_same(&wire, &via_prost(&request).unwrap());
    let batch = &wire.batch;
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .unwrap()
            .as_string::<i32>()
            .value(0)
            .to_owned()
    };
    assert_eq!(column("name"), "renamed");
    assert_eq!(column("service_name"), "late service");
    assert_eq!(column("scope_name"), "late scope");
    assert_eq!(column("agent_id"), "agent-7");
}

#[test]
fn spans_of_one_resource_and_scope_go_back_in_one_group() {
    let resource = |name: &str| Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(name.into())),
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let group = |name: &str, scope: &str, spans: Vec<Span>| ResourceSpans {
        resource: Some(resource(name)),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: scope.into(),
                ..Default::default()
            }),
            spans,
            ..Default::default()
        }],
        ..Default::default()
    };
    let span = |n: u8| one_span(vec![1; 16], vec![n; 8]);
    let request = ExportTraceServiceRequest {
        resource_spans: vec![
            group("api", "http", vec![span(1), span(2), span(3)]),
            group("api", "db", vec![span(4)]),
            group("worker", "http", vec![span(5), span(6)]),
        ],
    };
    let back = spans_to_otlp(&spans_from_otlp(&request).unwrap().batch).unwrap();
    let shape: Vec<usize> = back
        .resource_spans
        .iter()
        .map(|r| r.scope_spans.iter().map(|s| s.spans.len()).sum())
        .collect();
    assert_eq!(shape, [3, 1, 2]);
    assert_eq!(back.resource_spans[2].resource, Some(resource("worker")));
    assert_eq!(flat_spans(&back, false), flat_spans(&request, true));
}

#[test]
fn records_that_would_repeat_too_much_of_their_origin_are_refused_in_every_signal() {
    // 64 KiB of scope attributes over 1,025 records: just past MAX_REPEATED_BYTES.
    let scope = || {
        Some(InstrumentationScope {
            name: "scope".into(),
            attributes: vec![string_attr("blob", &"s".repeat(64 * 1024))],
            ..Default::default()
        })
    };
    let records = MAX_REPEATED_BYTES / (64 * 1024) + 1;
    let too_large = |e: crate::Error| match e {
        crate::Error::TooLarge(m) => assert!(m.contains("a request may expand to"), "{m}"),
        e => panic!("not refused as too large: {e}"),
    };

    let log = LogRecord {
        time_unix_nano: 1,
        ..Default::default()
    };
    let logs = |n: usize| ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                scope: scope(),
                log_records: vec![log.clone(); n],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    too_large(logs_from_otlp(&logs(records)).expect_err("refused"));
    assert_eq!(logs_from_otlp(&logs(2)).expect("kept").batch.num_rows(), 2);

    let gauge = |n: usize| Metric {
        name: "m".into(),
        data: Some(Data::Gauge(Gauge {
            data_points: vec![
                NumberDataPoint {
                    time_unix_nano: 1,
                    value: Some(number_data_point::Value::AsInt(1)),
                    ..Default::default()
                };
                n
            ],
        })),
        ..Default::default()
    };
    let metrics = |n: usize| ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                scope: scope(),
                metrics: vec![gauge(n)],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    too_large(metrics_from_otlp(&metrics(records)).expect_err("refused"));
    assert_eq!(
        metrics_from_otlp(&metrics(2))
            .expect("kept")
            .batch
            .num_rows(),
        2
    );

    let mut traces = one_span_request(one_span(vec![1; 16], vec![2; 8]));
    traces.resource_spans[0].scope_spans[0].scope = scope();
    let one = traces.resource_spans[0].scope_spans[0].spans[0].clone();
    traces.resource_spans[0].scope_spans[0].spans = vec![one; records];
    too_large(spans_from_otlp(&traces).expect_err("refused"));
    // The wire path steps aside for the general path to refuse it.
    assert!(spans_from_protobuf(&traces.encode_to_vec()).is_none());
}

/// Each column's bytes held against what its values take, for the memory a buffered
/// batch charges to the store's budget.
fn slack(batch: &RecordBatch) -> Vec<(String, usize, usize)> {
    batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| {
            let used = column.to_data().get_slice_memory_size().unwrap();
            (field.name().clone(), column.get_buffer_memory_size(), used)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A converted batch holds no more memory than its values take, in every column,
    /// by either path, though its columns are allocated at an estimate of their size
    /// (the prost path at builders' defaults, far beyond a small request): a buffered
    /// batch is charged to the store's memory budget by the memory it holds.
    #[test]
    fn converted_columns_hold_what_their_values_take(request in wire_request()) {
        let bytes = request.encode_to_vec();
        for converted in [spans_from_protobuf(&bytes).unwrap().unwrap(), via_prost(&bytes).unwrap()] {
            for (name, held, used) in slack(&converted.batch) {
                prop_assert!(held <= used, "{name}: {held} bytes held for {used}");
            }
        }
    }
}
