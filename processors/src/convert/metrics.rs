//! `ExportMetricsServiceRequest` → the `metrics` table, one row per data point.
//!
//! All five metric kinds share the table; the columns a kind does not use are null
//! (`value` for histograms, `bucket_counts` for gauges, ...).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, ListArray, ListBuilder,
    StringBuilder, StructArray, UInt32Builder, UInt64Builder,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field};
use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    summary_data_point::ValueAtQuantile, Exemplar, Metric,
};

use super::traces::list_array;
use super::{
    append_attributes, attribute_builder, check_repeated, nanos, optional_hex_id, origin_bytes,
    tight_batch, timestamp_builder, AttributeBuilder, Converted, Origin, OriginColumns, Rejections,
};
use crate::schema::{exemplar_fields, quantile_fields, Table};
use crate::Result;

/// The SQL spelling of an aggregation temporality.
pub fn temporality_name(t: i32) -> String {
    match t {
        0 => "UNSPECIFIED".into(),
        1 => "DELTA".into(),
        2 => "CUMULATIVE".into(),
        other => other.to_string(),
    }
}

/// Fields every data point kind has.
struct PointCommon<'a> {
    attributes: &'a [KeyValue],
    start: u64,
    time: u64,
    exemplars: &'a [Exemplar],
    flags: u32,
}

/// The kind-specific fields; what a kind lacks stays `None` and is stored as null.
#[derive(Default)]
struct PointValues<'a> {
    value: Option<f64>,
    value_int: Option<i64>,
    is_monotonic: Option<bool>,
    temporality: Option<i32>,
    count: Option<u64>,
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    bucket_counts: Option<&'a [u64]>,
    explicit_bounds: Option<&'a [f64]>,
    quantiles: Option<&'a [ValueAtQuantile]>,
    scale: Option<i32>,
    zero_count: Option<u64>,
    zero_threshold: Option<f64>,
    positive: Option<&'a Buckets>,
    negative: Option<&'a Buckets>,
}

fn number_values(value: Option<&number_data_point::Value>) -> PointValues<'static> {
    match value {
        Some(number_data_point::Value::AsDouble(d)) => PointValues {
            value: Some(*d),
            ..Default::default()
        },
        Some(number_data_point::Value::AsInt(i)) => PointValues {
            value: Some(*i as f64),
            value_int: Some(*i),
            ..Default::default()
        },
        None => PointValues::default(),
    }
}

/// Builds the `metrics` batch of one export request.
pub fn metrics_from_otlp(request: &ExportMetricsServiceRequest) -> Result<Converted> {
    check_repeated(request.resource_metrics.iter().flat_map(|rm| {
        rm.scope_metrics.iter().map(|sm| {
            let repeated = origin_bytes(rm.resource.as_ref(), sm.scope.as_ref());
            (sm.metrics.iter().map(data_points).sum(), repeated)
        })
    }))?;
    let mut columns = MetricColumns::new();
    let mut rejections = Rejections::default();
    for (ri, resource_metrics) in request.resource_metrics.iter().enumerate() {
        for (si, scope_metrics) in resource_metrics.scope_metrics.iter().enumerate() {
            let origin = Origin {
                resource: resource_metrics.resource.as_ref(),
                resource_schema_url: &resource_metrics.schema_url,
                scope: scope_metrics.scope.as_ref(),
                scope_schema_url: &scope_metrics.schema_url,
            };
            for (mi, metric) in scope_metrics.metrics.iter().enumerate() {
                let at = || format!("resource_metrics[{ri}].scope_metrics[{si}].metrics[{mi}]");
                let Some(data) = &metric.data else {
                    rejections.reject(1, || format!("{}: metric has no data", at()));
                    continue;
                };
                each_point(data, |kind, common, values| {
                    match check_point(metric, &common, &values) {
                        Ok(()) => columns.append(metric, kind, &common, &values, &origin),
                        Err(why) => {
                            rejections.reject(1, || format!("{} ({}): {why}", at(), metric.name));
                            Ok(())
                        }
                    }
                })?;
            }
        }
    }
    Ok(rejections.finish(columns.finish()?, "data points"))
}

/// What every kind of data point has, read from a point `$p` with exemplars.
macro_rules! common {
    ($p:expr, $exemplars:expr) => {
        PointCommon {
            attributes: &$p.attributes,
            start: $p.start_time_unix_nano,
            time: $p.time_unix_nano,
            exemplars: $exemplars,
            flags: $p.flags,
        }
    };
}

/// The rows `metric` stores: one a data point.
fn data_points(metric: &Metric) -> usize {
    match &metric.data {
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

/// Calls `row(kind, common, values)` for each data point of `data`.
fn each_point<'m>(
    data: &'m Data,
    mut row: impl FnMut(&'static str, PointCommon<'m>, PointValues<'m>) -> Result<()>,
) -> Result<()> {
    match data {
        Data::Gauge(g) => g.data_points.iter().try_for_each(|p| {
            row(
                "gauge",
                common!(p, &p.exemplars),
                number_values(p.value.as_ref()),
            )
        }),
        Data::Sum(s) => s.data_points.iter().try_for_each(|p| {
            let values = PointValues {
                is_monotonic: Some(s.is_monotonic),
                temporality: Some(s.aggregation_temporality),
                ..number_values(p.value.as_ref())
            };
            row("sum", common!(p, &p.exemplars), values)
        }),
        Data::Histogram(h) => h.data_points.iter().try_for_each(|p| {
            let values = PointValues {
                temporality: Some(h.aggregation_temporality),
                count: Some(p.count),
                sum: p.sum,
                min: p.min,
                max: p.max,
                bucket_counts: Some(&p.bucket_counts),
                explicit_bounds: Some(&p.explicit_bounds),
                ..Default::default()
            };
            row("histogram", common!(p, &p.exemplars), values)
        }),
        Data::ExponentialHistogram(h) => h.data_points.iter().try_for_each(|p| {
            let values = PointValues {
                temporality: Some(h.aggregation_temporality),
                count: Some(p.count),
                sum: p.sum,
                min: p.min,
                max: p.max,
                scale: Some(p.scale),
                zero_count: Some(p.zero_count),
                zero_threshold: Some(p.zero_threshold),
                positive: p.positive.as_ref(),
                negative: p.negative.as_ref(),
                ..Default::default()
            };
            row("exponential_histogram", common!(p, &p.exemplars), values)
        }),
        Data::Summary(s) => s.data_points.iter().try_for_each(|p| {
            let values = PointValues {
                count: Some(p.count),
                sum: Some(p.sum),
                quantiles: Some(&p.quantile_values),
                ..Default::default()
            };
            row("summary", common!(p, &[]), values)
        }),
    }
}

fn check_point(
    metric: &Metric,
    common: &PointCommon<'_>,
    values: &PointValues<'_>,
) -> std::result::Result<(), String> {
    if metric.name.is_empty() {
        return Err("metric name is empty".into());
    }
    nanos(common.time).ok_or("time_unix_nano is past the year 2262")?;
    nanos(common.start).ok_or("start_time_unix_nano is past the year 2262")?;
    for e in common.exemplars {
        nanos(e.time_unix_nano).ok_or("an exemplar's time_unix_nano is past 2262")?;
        optional_hex_id(&e.trace_id, 16, "exemplar trace_id")?;
        optional_hex_id(&e.span_id, 8, "exemplar span_id")?;
    }
    if let (Some(counts), Some(bounds)) = (values.bucket_counts, values.explicit_bounds) {
        if !counts.is_empty() && counts.len() != bounds.len() + 1 {
            return Err(format!(
                "histogram has {} bucket counts for {} explicit bounds (expected {})",
                counts.len(),
                bounds.len(),
                bounds.len() + 1
            ));
        }
    }
    Ok(())
}

struct MetricColumns {
    time: arrow::array::TimestampNanosecondBuilder,
    start_time: arrow::array::TimestampNanosecondBuilder,
    metric_name: StringBuilder,
    metric_type: StringBuilder,
    unit: StringBuilder,
    description: StringBuilder,
    metadata: AttributeBuilder,
    attributes: AttributeBuilder,
    value: Float64Builder,
    value_int: Int64Builder,
    is_monotonic: BooleanBuilder,
    temporality: StringBuilder,
    count: UInt64Builder,
    sum: Float64Builder,
    min: Float64Builder,
    max: Float64Builder,
    bucket_counts: ListBuilder<UInt64Builder>,
    explicit_bounds: ListBuilder<Float64Builder>,
    quantiles: QuantileColumns,
    scale: Int32Builder,
    zero_count: UInt64Builder,
    zero_threshold: Float64Builder,
    positive_offset: Int32Builder,
    positive_counts: ListBuilder<UInt64Builder>,
    negative_offset: Int32Builder,
    negative_counts: ListBuilder<UInt64Builder>,
    exemplars: ExemplarColumns,
    flags: UInt32Builder,
    origin: OriginColumns,
}

fn append_list<T, B>(list: &mut ListBuilder<B>, values: Option<&[T]>)
where
    T: Copy,
    B: arrow::array::ArrayBuilder + Extend<Option<T>>,
{
    match values {
        Some(values) => {
            list.values().extend(values.iter().map(|v| Some(*v)));
            list.append(true);
        }
        None => list.append(false),
    }
}

impl MetricColumns {
    fn new() -> Self {
        MetricColumns {
            time: timestamp_builder(),
            start_time: timestamp_builder(),
            metric_name: StringBuilder::new(),
            metric_type: StringBuilder::new(),
            unit: StringBuilder::new(),
            description: StringBuilder::new(),
            metadata: attribute_builder(),
            attributes: attribute_builder(),
            value: Float64Builder::new(),
            value_int: Int64Builder::new(),
            is_monotonic: BooleanBuilder::new(),
            temporality: StringBuilder::new(),
            count: UInt64Builder::new(),
            sum: Float64Builder::new(),
            min: Float64Builder::new(),
            max: Float64Builder::new(),
            bucket_counts: ListBuilder::new(UInt64Builder::new()),
            explicit_bounds: ListBuilder::new(Float64Builder::new()),
            quantiles: QuantileColumns::default(),
            scale: Int32Builder::new(),
            zero_count: UInt64Builder::new(),
            zero_threshold: Float64Builder::new(),
            positive_offset: Int32Builder::new(),
            positive_counts: ListBuilder::new(UInt64Builder::new()),
            negative_offset: Int32Builder::new(),
            negative_counts: ListBuilder::new(UInt64Builder::new()),
            exemplars: ExemplarColumns::new(),
            flags: UInt32Builder::new(),
            origin: OriginColumns::new(),
        }
    }

    fn append(
        &mut self,
        metric: &Metric,
        kind: &str,
        common: &PointCommon<'_>,
        v: &PointValues<'_>,
        origin: &Origin<'_>,
    ) -> Result<()> {
        // Checked by `check_point`.
        self.time
            .append_value(nanos(common.time).unwrap_or(i64::MAX));
        self.start_time
            .append_option(nanos(common.start).filter(|t| *t != 0));
        self.metric_name.append_value(&metric.name);
        self.metric_type.append_value(kind);
        self.unit.append_value(&metric.unit);
        self.description.append_value(&metric.description);
        append_attributes(&mut self.metadata, &metric.metadata)?;
        append_attributes(&mut self.attributes, common.attributes)?;
        self.value.append_option(v.value);
        self.value_int.append_option(v.value_int);
        self.is_monotonic.append_option(v.is_monotonic);
        self.temporality
            .append_option(v.temporality.map(temporality_name));
        self.count.append_option(v.count);
        self.sum.append_option(v.sum);
        self.min.append_option(v.min);
        self.max.append_option(v.max);
        append_list(&mut self.bucket_counts, v.bucket_counts);
        append_list(&mut self.explicit_bounds, v.explicit_bounds);
        self.quantiles.append(v.quantiles);
        self.scale.append_option(v.scale);
        self.zero_count.append_option(v.zero_count);
        self.zero_threshold.append_option(v.zero_threshold);
        self.positive_offset
            .append_option(v.positive.map(|b| b.offset));
        append_list(
            &mut self.positive_counts,
            v.positive.map(|b| &b.bucket_counts[..]),
        );
        self.negative_offset
            .append_option(v.negative.map(|b| b.offset));
        append_list(
            &mut self.negative_counts,
            v.negative.map(|b| &b.bucket_counts[..]),
        );
        self.exemplars.append(common.exemplars)?;
        self.flags.append_value(common.flags);
        self.origin.append(origin)
    }

    fn finish(mut self) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.start_time.finish()),
            Arc::new(self.metric_name.finish()),
            Arc::new(self.metric_type.finish()),
            Arc::new(self.unit.finish()),
            Arc::new(self.description.finish()),
            Arc::new(self.metadata.finish()),
            Arc::new(self.attributes.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.value_int.finish()),
            Arc::new(self.is_monotonic.finish()),
            Arc::new(self.temporality.finish()),
            Arc::new(self.count.finish()),
            Arc::new(self.sum.finish()),
            Arc::new(self.min.finish()),
            Arc::new(self.max.finish()),
            Arc::new(self.bucket_counts.finish()),
            Arc::new(self.explicit_bounds.finish()),
            self.quantiles.finish(),
            Arc::new(self.scale.finish()),
            Arc::new(self.zero_count.finish()),
            Arc::new(self.zero_threshold.finish()),
            Arc::new(self.positive_offset.finish()),
            Arc::new(self.positive_counts.finish()),
            Arc::new(self.negative_offset.finish()),
            Arc::new(self.negative_counts.finish()),
            self.exemplars.finish(),
            Arc::new(self.flags.finish()),
        ];
        columns.extend(self.origin.finish());
        tight_batch(Table::METRICS.schema(), columns)
    }
}

/// `quantiles`: null for every kind but summaries.
#[derive(Default)]
struct QuantileColumns {
    quantile: Float64Builder,
    value: Float64Builder,
    lengths: Vec<usize>,
    valid: Vec<bool>,
}

impl QuantileColumns {
    fn append(&mut self, quantiles: Option<&[ValueAtQuantile]>) {
        self.valid.push(quantiles.is_some());
        let quantiles = quantiles.unwrap_or_default();
        for q in quantiles {
            self.quantile.append_value(q.quantile);
            self.value.append_value(q.value);
        }
        self.lengths.push(quantiles.len());
    }

    fn finish(mut self) -> ArrayRef {
        let children: Vec<ArrayRef> = vec![
            Arc::new(self.quantile.finish()),
            Arc::new(self.value.finish()),
        ];
        let values = StructArray::new(quantile_fields(), children, None);
        Arc::new(ListArray::new(
            Arc::new(Field::new(
                "item",
                DataType::Struct(quantile_fields()),
                true,
            )),
            OffsetBuffer::from_lengths(self.lengths),
            Arc::new(values),
            Some(NullBuffer::from(self.valid)),
        ))
    }
}

struct ExemplarColumns {
    time: arrow::array::TimestampNanosecondBuilder,
    value: Float64Builder,
    value_int: Int64Builder,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    attributes: AttributeBuilder,
    lengths: Vec<usize>,
}

impl ExemplarColumns {
    fn new() -> Self {
        ExemplarColumns {
            time: timestamp_builder(),
            value: Float64Builder::new(),
            value_int: Int64Builder::new(),
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            attributes: attribute_builder(),
            lengths: Vec::new(),
        }
    }

    fn append(&mut self, exemplars: &[Exemplar]) -> Result<()> {
        for e in exemplars {
            self.time
                .append_value(nanos(e.time_unix_nano).unwrap_or(i64::MAX));
            match e.value {
                Some(exemplar::Value::AsDouble(d)) => {
                    self.value.append_value(d);
                    self.value_int.append_null();
                }
                Some(exemplar::Value::AsInt(i)) => {
                    self.value.append_value(i as f64);
                    self.value_int.append_value(i);
                }
                None => {
                    self.value.append_null();
                    self.value_int.append_null();
                }
            }
            let hex = |b: &[u8]| (!b.is_empty()).then(|| hex::encode(b));
            self.trace_id.append_option(hex(&e.trace_id));
            self.span_id.append_option(hex(&e.span_id));
            append_attributes(&mut self.attributes, &e.filtered_attributes)?;
        }
        self.lengths.push(exemplars.len());
        Ok(())
    }

    fn finish(mut self) -> ArrayRef {
        let children: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.value_int.finish()),
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.attributes.finish()),
        ];
        let values = StructArray::new(exemplar_fields(), children, None);
        list_array(
            DataType::Struct(exemplar_fields()),
            self.lengths,
            Arc::new(values),
        )
    }
}
