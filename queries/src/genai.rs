//! The SQL functions the `genai_usage` view prices calls with, over the collector's
//! price table (`processors.genai`):
//!
//! - `genai_cost(model, input_tokens, output_tokens, cache_read_tokens,
//!   cache_write_tokens)`: US dollars, null for a model without a price;
//! - `genai_price_model(model)`: the price-table entry that priced it.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::logical_expr::{create_udf, ColumnarValue, ScalarUDF, Volatility};
use swarmscope_processors::analytics::genai::{PriceTable, Usage};

/// Both functions, priced by `prices`.
pub fn functions(prices: PriceTable) -> Vec<ScalarUDF> {
    let prices = Arc::new(prices);
    let for_cost = Arc::clone(&prices);
    let cost = create_udf(
        "genai_cost",
        vec![
            DataType::Utf8,
            DataType::Int64,
            DataType::Int64,
            DataType::Int64,
            DataType::Int64,
        ],
        DataType::Float64,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let model = arrays[0].as_string::<i32>();
            let ints: Vec<_> = arrays[1..]
                .iter()
                .map(|a| a.as_primitive::<Int64Type>())
                .collect();
            let value = |i: usize, row: usize| {
                let a = ints[i];
                if a.is_null(row) {
                    0
                } else {
                    a.value(row)
                }
            };
            let out: Float64Array = (0..model.len())
                .map(|row| {
                    let price =
                        (!model.is_null(row)).then(|| for_cost.find(model.value(row)))??;
                    let usage = Usage {
                        input: value(0, row),
                        output: value(1, row),
                        cache_read: value(2, row),
                        cache_write: value(3, row),
                    };
                    Some(PriceTable::cost(price, usage))
                })
                .collect();
            Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
        }),
    );
    let price_model = create_udf(
        "genai_price_model",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let model = arrays[0].as_string::<i32>();
            let out: StringArray = (0..model.len())
                .map(|row| {
                    (!model.is_null(row))
                        .then(|| prices.find(model.value(row)).map(|p| p.model.clone()))
                        .flatten()
                })
                .collect();
            Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
        }),
    );
    vec![cost, price_model]
}
