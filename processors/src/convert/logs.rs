//! `ExportLogsServiceRequest` → the `logs` table.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Builder, StringBuilder, UInt32Builder};
use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::LogRecord;

use super::{
    append_attributes, attribute_builder, check_repeated, nanos, optional_hex_id, origin_bytes,
    tight_batch, timestamp_builder, AttributeBuilder, Converted, Origin, OriginColumns, Rejections,
};
use crate::anyvalue;
use crate::schema::Table;
use crate::Result;

/// Builds the `logs` batch of one export request.
pub fn logs_from_otlp(request: &ExportLogsServiceRequest) -> Result<Converted> {
    check_repeated(request.resource_logs.iter().flat_map(|rl| {
        rl.scope_logs.iter().map(|sl| {
            let repeated = origin_bytes(rl.resource.as_ref(), sl.scope.as_ref());
            (sl.log_records.len(), repeated)
        })
    }))?;
    let mut columns = LogColumns::new();
    let mut rejections = Rejections::default();
    for (ri, resource_logs) in request.resource_logs.iter().enumerate() {
        for (si, scope_logs) in resource_logs.scope_logs.iter().enumerate() {
            let origin = Origin {
                resource: resource_logs.resource.as_ref(),
                resource_schema_url: &resource_logs.schema_url,
                scope: scope_logs.scope.as_ref(),
                scope_schema_url: &scope_logs.schema_url,
            };
            for (i, record) in scope_logs.log_records.iter().enumerate() {
                match ValidLog::check(record) {
                    Ok(valid) => columns.append(record, &valid, &origin)?,
                    Err(why) => rejections.reject(1, || {
                        format!("resource_logs[{ri}].scope_logs[{si}].log_records[{i}]: {why}")
                    }),
                }
            }
        }
    }
    Ok(rejections.finish(columns.finish()?, "log records"))
}

struct ValidLog {
    time: Option<i64>,
    observed_time: Option<i64>,
    trace_id: Option<String>,
    span_id: Option<String>,
}

impl ValidLog {
    fn check(record: &LogRecord) -> std::result::Result<ValidLog, String> {
        let time = nanos(record.time_unix_nano).ok_or("time_unix_nano is past the year 2262")?;
        let observed = nanos(record.observed_time_unix_nano)
            .ok_or("observed_time_unix_nano is past the year 2262")?;
        Ok(ValidLog {
            time: (time != 0).then_some(time),
            observed_time: (observed != 0).then_some(observed),
            trace_id: optional_hex_id(&record.trace_id, 16, "trace_id")?,
            span_id: optional_hex_id(&record.span_id, 8, "span_id")?,
        })
    }
}

struct LogColumns {
    time: arrow::array::TimestampNanosecondBuilder,
    observed_time: arrow::array::TimestampNanosecondBuilder,
    severity_number: Int32Builder,
    severity_text: StringBuilder,
    body: StringBuilder,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    event_name: StringBuilder,
    attributes: AttributeBuilder,
    flags: UInt32Builder,
    dropped_attributes: UInt32Builder,
    origin: OriginColumns,
}

impl LogColumns {
    fn new() -> Self {
        LogColumns {
            time: timestamp_builder(),
            observed_time: timestamp_builder(),
            severity_number: Int32Builder::new(),
            severity_text: StringBuilder::new(),
            body: StringBuilder::new(),
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            event_name: StringBuilder::new(),
            attributes: attribute_builder(),
            flags: UInt32Builder::new(),
            dropped_attributes: UInt32Builder::new(),
            origin: OriginColumns::new(),
        }
    }

    fn append(&mut self, record: &LogRecord, valid: &ValidLog, origin: &Origin<'_>) -> Result<()> {
        self.time.append_option(valid.time);
        self.observed_time.append_option(valid.observed_time);
        self.severity_number.append_value(record.severity_number);
        self.severity_text.append_value(&record.severity_text);
        self.body
            .append_option(record.body.as_ref().and_then(anyvalue::render));
        self.trace_id.append_option(valid.trace_id.as_deref());
        self.span_id.append_option(valid.span_id.as_deref());
        self.event_name.append_value(&record.event_name);
        append_attributes(&mut self.attributes, &record.attributes)?;
        self.flags.append_value(record.flags);
        self.dropped_attributes
            .append_value(record.dropped_attributes_count);
        self.origin.append(origin)
    }

    fn finish(mut self) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.observed_time.finish()),
            Arc::new(self.severity_number.finish()),
            Arc::new(self.severity_text.finish()),
            Arc::new(self.body.finish()),
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.event_name.finish()),
            Arc::new(self.attributes.finish()),
            Arc::new(self.flags.finish()),
            Arc::new(self.dropped_attributes.finish()),
        ];
        columns.extend(self.origin.finish());
        tight_batch(Table::LOGS.schema(), columns)
    }
}
