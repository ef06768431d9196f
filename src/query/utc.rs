//! `date_trunc` and `date_part` on UTC timestamps without a time zone conversion per row.
//!
//! Every point in time lake writes is `Timestamp(Microsecond, "UTC")`. DataFusion 55 truncates
//! and splits a zoned timestamp by converting each value to local time through chrono-tz, which
//! made `date_trunc('month', ended_at)` cost four times the rest of a GROUP BY over 1 M plays
//! (`bench/run`). In UTC the local time is the stored value, so the function over the value
//! without its zone gives the same answer: these wrappers hand the inner function the values
//! relabelled as zoneless (no copy) and label a timestamp result with the zone again. Any other
//! zone goes to DataFusion's function as it is.
//!
//! Two more steps of the same kind: `date_trunc` to a week, month, quarter or year of
//! microsecond values works on day numbers (DataFusion builds a chrono date per value), and
//! the rule [`UtcDates`] plans `CAST(t AS DATE)` of a UTC timestamp as a division by the
//! length of a day, where arrow's cast converts each value through chrono-tz. Both keep the
//! input's order, which the streaming aggregates over lake's sorted tables rely on.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Date32Array, make_array};
use arrow::datatypes::{
    DataType, FieldRef, TimeUnit, TimestampMicrosecondType, TimestampNanosecondType,
};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::expr::{Cast, ScalarFunction};
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::preimage::PreimageResult;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature,
};
use datafusion::logical_expr::{ExprSchemable, LogicalPlan};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::prelude::SessionContext;

/// Replaces `date_trunc` and `date_part` in `ctx` with their UTC fast paths, and registers
/// the date of a UTC timestamp that [`UtcDates`] plans casts with.
pub fn register(ctx: &SessionContext) {
    for name in ["date_trunc", "date_part"] {
        if let Ok(inner) = ctx.udf(name) {
            ctx.register_udf(ScalarUDF::new_from_impl(Utc { inner }));
        }
    }
    ctx.register_udf(utc_date());
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The year and month (1 to 12) of a day since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let m = (5 * day_of_year + 2) / 153;
    let month = if m < 10 { m + 3 } else { m - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month)
}

/// The spans of `date_trunc` that are whole days long or more, but not all alike.
#[derive(Clone, Copy)]
enum Span {
    Week,
    Month,
    Quarter,
    Year,
}

impl Span {
    /// The span a `date_trunc` unit names, in lower case.
    fn of(unit: &str) -> Option<Self> {
        Some(match unit {
            "week" => Span::Week,
            "month" => Span::Month,
            "quarter" => Span::Quarter,
            "year" => Span::Year,
            _ => return None,
        })
    }

    /// The first day of the span (weeks from Monday) holding `days` since 1970-01-01.
    fn start(self, days: i64) -> i64 {
        let (year, month) = match self {
            // 1970-01-01 was a Thursday.
            Span::Week => return days - (days + 3).rem_euclid(7),
            _ => civil_from_days(days),
        };
        match self {
            Span::Quarter => days_from_civil(year, month - (month - 1) % 3, 1),
            Span::Year => days_from_civil(year, 1, 1),
            Span::Week | Span::Month => days_from_civil(year, month, 1),
        }
    }
}

/// `date_trunc` to `span` of microsecond values. Values in order repeat a day from one to
/// the next, so the last day's answer is kept.
fn truncate_micros(span: Span, values: &arrow::array::TimestampMicrosecondArray) -> ArrayRef {
    let last = std::cell::Cell::new(None::<(i64, i64)>);
    let out: arrow::array::TimestampMicrosecondArray = values.unary(|v| {
        let day = v.div_euclid(MICROS_PER_DAY);
        match last.get() {
            Some((d, start)) if d == day => start,
            _ => {
                let start = span.start(day) * MICROS_PER_DAY;
                last.set(Some((day, start)));
                start
            }
        }
    });
    Arc::new(out.with_timezone_opt(values.timezone()))
}

/// A date from a UTC timestamp of microseconds or nanoseconds, as `CAST(t AS DATE)` gives
/// it: the day the instant falls on.
fn utc_date() -> ScalarUDF {
    ScalarUDF::new_from_impl(UtcDate {
        signature: Signature::any(1, datafusion::logical_expr::Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct UtcDate {
    signature: Signature,
}

/// Per day, in a timestamp unit whose day count always fits a date: `CAST` of seconds and
/// milliseconds can overflow a 32-bit day, and stays arrow's.
fn units_per_day(t: &DataType) -> Option<i64> {
    match t {
        DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) if is_utc(tz) => Some(MICROS_PER_DAY),
        DataType::Timestamp(TimeUnit::Nanosecond, Some(tz)) if is_utc(tz) => {
            Some(MICROS_PER_DAY * 1000)
        }
        _ => None,
    }
}

impl ScalarUDFImpl for UtcDate {
    fn name(&self) -> &str {
        "lake_utc_date"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [t] if units_per_day(t).is_some() => Ok(DataType::Date32),
            _ => plan_err!("lake_utc_date takes one UTC timestamp of micro- or nanoseconds"),
        }
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        // The day of a later instant is never earlier.
        Ok(inputs[0].sort_properties)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(per_day) = units_per_day(args.arg_fields[0].data_type()) else {
            return exec_err!("lake_utc_date takes one UTC timestamp of micro- or nanoseconds");
        };
        let day = |v: i64| v.div_euclid(per_day) as i32;
        Ok(match &args.args[0] {
            ColumnarValue::Array(array) => {
                let days: Date32Array = match array.data_type() {
                    DataType::Timestamp(TimeUnit::Microsecond, _) => {
                        array.as_primitive::<TimestampMicrosecondType>().unary(day)
                    }
                    _ => array.as_primitive::<TimestampNanosecondType>().unary(day),
                };
                ColumnarValue::Array(Arc::new(days))
            }
            ColumnarValue::Scalar(
                ScalarValue::TimestampMicrosecond(v, _) | ScalarValue::TimestampNanosecond(v, _),
            ) => ColumnarValue::Scalar(ScalarValue::Date32(v.map(day))),
            other => return exec_err!("lake_utc_date of {}", other.data_type()),
        })
    }
}

/// Plans `CAST(t AS DATE)` of a UTC timestamp as [`UtcDate`], in projections, aggregates and
/// windows. Filters keep the cast, which DataFusion's file pruning understands; the rule
/// runs after the optimizer's pushdowns so that it finds them there.
#[derive(Debug, Default)]
pub struct UtcDates;

impl OptimizerRule for UtcDates {
    fn name(&self) -> &str {
        "lake_utc_dates"
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let udf = Arc::new(utc_date());
        plan.transform_up(|plan| {
            if !matches!(
                plan,
                LogicalPlan::Projection(_) | LogicalPlan::Aggregate(_) | LogicalPlan::Window(_)
            ) {
                return Ok(Transformed::no(plan));
            }
            let schema = Arc::clone(plan.inputs()[0].schema());
            let plan = super::rewrite_expressions(plan, |e| match e {
                Expr::Cast(Cast { expr, field })
                    if field.data_type() == &DataType::Date32
                        && expr
                            .get_type(schema.as_ref())
                            .is_ok_and(|t| units_per_day(&t).is_some()) =>
                {
                    Ok(Transformed::yes(Expr::ScalarFunction(
                        ScalarFunction::new_udf(Arc::clone(&udf), vec![*expr]),
                    )))
                }
                e => Ok(Transformed::no(e)),
            })?;
            if plan.transformed {
                plan.map_data(|p| p.recompute_schema())
            } else {
                Ok(plan)
            }
        })
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
        if let ("date_trunc", [ColumnarValue::Scalar(unit), ColumnarValue::Array(values)]) =
            (self.inner.name(), args.args.as_slice())
            && let (Some(Some(unit)), DataType::Timestamp(TimeUnit::Microsecond, Some(tz))) =
                (unit.try_as_str(), values.data_type())
            && is_utc(tz)
            && let Some(span) = Span::of(&unit.to_lowercase())
        {
            return Ok(ColumnarValue::Array(truncate_micros(
                span,
                values.as_primitive(),
            )));
        }
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

    /// Over five centuries of microseconds and of nanoseconds (DataFusion truncates through
    /// nanoseconds, so its own fails outside 1677 to 2262), every hour of a few days around
    /// 1970 and a null: the casts the rule plans and the truncations to days' multiples answer
    /// as DataFusion's do, under the same names, and the rule does not touch a filter's cast.
    #[tokio::test]
    async fn dates_and_truncations_over_five_centuries() {
        let ts = |unit: &str| format!("'Timestamp({unit}, Some(\"UTC\"))'");
        let values = [
            ("Microsecond", "1100000000007", "8500000000000000", 16000),
            (
                "Nanosecond",
                "570000000000007",
                "8000000000000000000",
                16000,
            ),
        ];
        for (unit, step, start, n) in values {
            let t = ts(unit);
            let sql = format!(
                "WITH t AS (\
                 SELECT arrow_cast(value * {step} - {start}, {t}) AS t FROM generate_series(0, {n}) \
                 UNION ALL SELECT arrow_cast(value * 3600000001 - 400000000000, {t}) \
                     FROM generate_series(0, 300) \
                 UNION ALL SELECT NULL) \
                 SELECT t AS ts, CAST(t AS DATE) AS d, CAST(date_trunc('month', t) AS DATE) AS m, \
                        date_trunc('WEEK', t) AS w, date_trunc('quarter', t) AS q, \
                        date_trunc('year', t) AS y, CAST(t AS DATE) \
                 FROM t WHERE CAST(t AS DATE) > DATE '0001-01-01' OR t IS NULL ORDER BY t"
            );
            let fast = SessionContext::new();
            register(&fast);
            fast.add_optimizer_rule(Arc::new(UtcDates));
            let answer = |ctx: SessionContext| {
                let sql = sql.clone();
                async move {
                    let frame = ctx.sql(&sql).await.unwrap();
                    let plan = frame.clone().into_optimized_plan().unwrap();
                    let plan = format!("{}", plan.display_indent());
                    let batches = frame.collect().await.unwrap();
                    let text = arrow::util::pretty::pretty_format_batches(&batches)
                        .unwrap()
                        .to_string();
                    (text, plan)
                }
            };
            let (ours, plan) = answer(fast).await;
            let (theirs, _) = answer(SessionContext::new()).await;
            assert_eq!(ours, theirs, "{unit}");
            assert!(plan.contains("lake_utc_date"), "{plan}");
            assert!(plan.contains("Filter: CAST("), "{plan}");
        }
    }
}
