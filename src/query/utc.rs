//! `date_trunc` and `date_part` on UTC timestamps without a time zone conversion per row.
//!
//! Every point in time lake writes is `Timestamp(Microsecond, "UTC")`. DataFusion 55 truncates
//! and splits a zoned timestamp by converting each value to local time through chrono-tz, which
//! made `date_trunc('month', ended_at)` cost four times the rest of a GROUP BY over 1 M plays
//! (`bench/run`). In UTC the local time is the stored value, so the function over the value
//! without its zone gives the same answer: these wrappers hand the inner function the values
//! relabelled as zoneless (no copy) and label a timestamp result with the zone again. Any other
//! zone goes to DataFusion's function as it is.

use std::sync::Arc;

use arrow::array::{ArrayRef, make_array};
use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::Result;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::preimage::PreimageResult;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

/// Replaces `date_trunc` and `date_part` in `ctx` with their UTC fast paths.
pub fn register(ctx: &SessionContext) {
    for name in ["date_trunc", "date_part"] {
        if let Ok(inner) = ctx.udf(name) {
            ctx.register_udf(ScalarUDF::new_from_impl(Utc { inner }));
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Utc {
    inner: Arc<ScalarUDF>,
}

fn is_utc(tz: &str) -> bool {
    matches!(tz, "UTC" | "Etc/UTC" | "Z" | "+00:00" | "+0000" | "+00")
}

/// The zoneless type of a UTC timestamp type.
fn zoneless(t: &DataType) -> Option<DataType> {
    match t {
        DataType::Timestamp(unit, Some(tz)) if is_utc(tz) => Some(DataType::Timestamp(*unit, None)),
        _ => None,
    }
}

/// The same values under another timestamp type, without copying them.
fn relabel(value: ColumnarValue, to: &DataType) -> Result<ColumnarValue> {
    Ok(match value {
        ColumnarValue::Array(array) => {
            let data = array
                .to_data()
                .into_builder()
                .data_type(to.clone())
                .build()?;
            ColumnarValue::Array(make_array(data) as ArrayRef)
        }
        // One value: a cast between zones of the same instant is cheap enough.
        scalar => scalar.cast_to(to, None)?,
    })
}

impl ScalarUDFImpl for Utc {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn is_strict(&self) -> bool {
        self.inner.is_strict()
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn preimage(
        &self,
        args: &[Expr],
        lit_expr: &Expr,
        info: &SimplifyContext,
    ) -> Result<PreimageResult> {
        self.inner.preimage(args, lit_expr, info)
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        self.inner.evaluate_bounds(input)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }

    fn strictly_order_preserving(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.strictly_order_preserving(inputs)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if !args
            .arg_fields
            .iter()
            .any(|f| zoneless(f.data_type()).is_some())
        {
            return self.inner.invoke_with_args(args);
        }
        for (value, field) in args.args.iter_mut().zip(args.arg_fields.iter_mut()) {
            if let Some(t) = zoneless(field.data_type()) {
                *value = relabel(value.clone(), &t)?;
                *field = Arc::new(field.as_ref().clone().with_data_type(t));
            }
        }
        let wanted = args.return_field.data_type().clone();
        if let Some(t) = zoneless(&wanted) {
            args.return_field = Arc::new(args.return_field.as_ref().clone().with_data_type(t));
        }
        let out = self.inner.invoke_with_args(args)?;
        if zoneless(&wanted).is_some() {
            relabel(out, &wanted)
        } else {
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every unit and part over UTC values, a zoned column and a constant: the same types and
    /// values as DataFusion's own functions.
    #[tokio::test]
    async fn answers_as_datafusion_does() {
        let values = "(VALUES ('2024-02-29T23:59:59.999999Z'), ('2023-12-31T00:00:00Z'), \
                      ('2024-03-31T01:30:00Z'), ('1969-12-31T23:59:59.5Z'), (NULL))";
        let mut exprs = Vec::new();
        for unit in [
            "year", "quarter", "month", "week", "day", "hour", "minute", "second",
        ] {
            exprs.push(format!("date_trunc('{unit}', t)"));
            exprs.push(format!("date_trunc('{unit}', b)"));
        }
        for part in [
            "epoch",
            "year",
            "month",
            "doy",
            "dow",
            "hour",
            "minute",
            "microsecond",
        ] {
            exprs.push(format!("date_part('{part}', t)"));
            exprs.push(format!("date_part('{part}', b)"));
        }
        exprs.push(
            "date_trunc('month', arrow_cast('2024-05-17T10:00:00Z', 'Timestamp(Microsecond, Some(\"UTC\"))'))"
                .into(),
        );
        let sql = format!(
            "SELECT {} FROM (SELECT arrow_cast(column1, 'Timestamp(Microsecond, Some(\"UTC\"))') AS t, \
             arrow_cast(column1, 'Timestamp(Microsecond, Some(\"Europe/Berlin\"))') AS b FROM {values})",
            exprs.join(", ")
        );
        let run = |ctx: SessionContext| {
            let sql = sql.clone();
            async move {
                let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
                let types: Vec<DataType> = batches[0]
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.data_type().clone())
                    .collect();
                let text = arrow::util::pretty::pretty_format_batches(&batches)
                    .unwrap()
                    .to_string();
                (types, text)
            }
        };
        let fast = SessionContext::new();
        register(&fast);
        assert_eq!(run(fast).await, run(SessionContext::new()).await);
    }
}
