//! Query results as JSON, CSV, Arrow IPC or a text table.
//!
//! JSON is `{"columns":[{"name","type"}],"rows":[[...]]}` (docs/api.md): numbers and
//! booleans as JSON scalars, timestamps as RFC 3339 text, maps and structs as objects,
//! lists as arrays. CSV renders nested values as that same JSON text in one cell.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::error::ArrowError;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{json, Map, Number, Value};

use crate::QueryResult;

type Result<T> = std::result::Result<T, ArrowError>;

/// The JSON document of docs/api.md.
pub fn json(result: &QueryResult) -> Result<Value> {
    let columns: Vec<Value> = result
        .schema
        .fields()
        .iter()
        .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
        .collect();
    let mut rows = Vec::with_capacity(result.num_rows());
    for batch in &result.batches {
        for row in 0..batch.num_rows() {
            let cells = batch
                .columns()
                .iter()
                .map(|c| cell(c.as_ref(), row))
                .collect::<Result<Vec<_>>>()?;
            rows.push(Value::Array(cells));
        }
    }
    Ok(json!({"columns": columns, "rows": rows}))
}

fn display(array: &dyn Array, row: usize) -> Result<Value> {
    let options = FormatOptions::default();
    let formatter = ArrayFormatter::try_new(array, &options)?;
    Ok(Value::String(formatter.value(row).to_string()))
}

fn float(v: f64) -> Value {
    Number::from_f64(v).map_or_else(|| Value::String(v.to_string()), Value::Number)
}

/// One value of `array` as JSON.
fn cell(array: &dyn Array, row: usize) -> Result<Value> {
    use arrow::datatypes::*;
    if array.is_null(row) {
        return Ok(Value::Null);
    }
    Ok(match array.data_type() {
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int8 => array.as_primitive::<Int8Type>().value(row).into(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row).into(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).into(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).into(),
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(row).into(),
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(row).into(),
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(row).into(),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(row).into(),
        DataType::Float32 => float(array.as_primitive::<Float32Type>().value(row) as f64),
        DataType::Float64 => float(array.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => array.as_string::<i32>().value(row).into(),
        DataType::LargeUtf8 => array.as_string::<i64>().value(row).into(),
        DataType::Utf8View => array.as_string_view().value(row).into(),
        DataType::List(_) => list(&array.as_list::<i32>().value(row))?,
        DataType::LargeList(_) => list(&array.as_list::<i64>().value(row))?,
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let mut object = Map::new();
            for (field, column) in fields.iter().zip(s.columns()) {
                object.insert(field.name().clone(), cell(column.as_ref(), row)?);
            }
            Value::Object(object)
        }
        DataType::Map(..) => {
            let entries = array.as_map().value(row);
            let keys = entries.column(0);
            let values = entries.column(1);
            let mut object = Map::new();
            for i in 0..entries.len() {
                let key = match cell(keys.as_ref(), i)? {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                object.insert(key, cell(values.as_ref(), i)?);
            }
            Value::Object(object)
        }
        DataType::Dictionary(..) => {
            let dict = array.as_any_dictionary();
            let key = dict.normalized_keys()[row];
            cell(dict.values().as_ref(), key)?
        }
        _ => display(array, row)?,
    })
}

fn list(values: &ArrayRef) -> Result<Value> {
    (0..values.len())
        .map(|i| cell(values.as_ref(), i))
        .collect::<Result<Vec<_>>>()
        .map(Value::Array)
}

fn is_nested(t: &DataType) -> bool {
    matches!(
        t,
        DataType::List(_) | DataType::LargeList(_) | DataType::Struct(_) | DataType::Map(..)
    )
}

/// Nested columns replaced by their JSON text, for CSV which has no nesting.
fn flatten(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(fields.capacity());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if is_nested(field.data_type()) {
            let text = (0..column.len())
                .map(|i| cell(column.as_ref(), i).map(|v| (!v.is_null()).then(|| v.to_string())))
                .collect::<Result<StringArray>>()?;
            fields.push(Field::new(field.name(), DataType::Utf8, true));
            columns.push(Arc::new(text) as ArrayRef);
        } else {
            fields.push(field.as_ref().clone());
            columns.push(Arc::clone(column));
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// CSV with a header row.
pub fn csv(result: &QueryResult) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    if result.batches.is_empty() {
        let names: Vec<&str> = result
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        out.extend_from_slice(names.join(",").as_bytes());
        out.push(b'\n');
        return Ok(out);
    }
    {
        let mut writer = arrow::csv::WriterBuilder::new()
            .with_header(true)
            .build(&mut out);
        for batch in &result.batches {
            writer.write(&flatten(batch)?)?;
        }
    }
    Ok(out)
}

/// An Arrow IPC stream (`application/vnd.apache.arrow.stream`).
pub fn arrow_ipc(result: &QueryResult) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut out, &result.schema)?;
        for batch in &result.batches {
            writer.write(batch)?;
        }
        writer.finish()?;
    }
    Ok(out)
}

/// A text table for a terminal.
pub fn table(result: &QueryResult) -> Result<String> {
    if result.batches.is_empty() {
        let empty = RecordBatch::new_empty(Arc::clone(&result.schema));
        return Ok(arrow::util::pretty::pretty_format_batches(&[empty])?.to_string());
    }
    Ok(arrow::util::pretty::pretty_format_batches(&result.batches)?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, MapBuilder, StringBuilder};

    fn result() -> QueryResult {
        let mut m = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        m.keys().append_value("k");
        m.values().append_value("v");
        m.append(true).unwrap();
        m.append(true).unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("attrs", m.finish().data_type().clone(), true),
        ]));
        let mut m2 = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        m2.keys().append_value("k");
        m2.values().append_value("v");
        m2.append(true).unwrap();
        m2.append(true).unwrap();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None])),
                Arc::new(m2.finish()),
            ],
        )
        .unwrap();
        QueryResult {
            schema,
            batches: vec![batch],
        }
    }

    #[test]
    fn json_has_columns_and_row_arrays() {
        let v = json(&result()).unwrap();
        assert_eq!(v["columns"][0], json!({"name": "n", "type": "Int64"}));
        assert_eq!(v["rows"], json!([[1, {"k": "v"}], [null, {}]]));
    }

    #[test]
    fn csv_renders_nested_values_as_json_text() {
        let text = String::from_utf8(csv(&result()).unwrap()).unwrap();
        assert_eq!(text, "n,attrs\n1,\"{\"\"k\"\":\"\"v\"\"}\"\n,{}\n");
    }

    #[test]
    fn arrow_ipc_round_trips() {
        let bytes = arrow_ipc(&result()).unwrap();
        let reader = arrow::ipc::reader::StreamReader::try_new(&bytes[..], None).unwrap();
        let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 2);
    }
}
