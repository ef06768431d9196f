//! Membership in a long list of key values, as one opaque function instead of an `IN` list.
//!
//! A group-scoped run filters its inputs, its stored rows and its tests to the touched keys.
//! As an `IN` list of thousands of literals that costs more than the rows it filters:
//! DataFusion 55 clones the list through each optimizer pass, and builds a pruning predicate
//! and literal guarantees from it for every file it opens (`perf record` of a day's refresh
//! over 10 M plays: 70% of a unique test's time went there, for 16,000 keys over 44 files).
//! Few values can rule files out by statistics and bloom filters, so short lists stay `IN`
//! lists; a long one becomes [`member`], which builds DataFusion's own hash-set filter
//! (`InListExpr`) once and is nothing file pruning looks into.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, lit,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{Column, InListExpr};

/// Lists up to this long stay `IN` lists, which file pruning can use.
pub const LISTED: usize = 1_000;

/// `e IN (values)` (null where `e` is null, as `IN` is), evaluated by one hash set built here;
/// a short list is a plain `IN` list.
pub fn member(e: Expr, values: &[ScalarValue]) -> Expr {
    // Values of no one type make no set: the plain list coerces them.
    if values.len() > LISTED
        && let Ok(set) = KeySet::new(values)
    {
        return ScalarUDF::new_from_impl(set).call(vec![e]);
    }
    e.in_list(values.iter().cloned().map(lit).collect(), false)
}

/// The function behind [`member`]: its values, and the filter over them.
#[derive(Debug)]
struct KeySet {
    signature: Signature,
    values: ArrayRef,
    schema: SchemaRef,
    filter: Arc<dyn PhysicalExpr>,
}

impl KeySet {
    fn new(values: &[ScalarValue]) -> Result<Self> {
        let array = ScalarValue::iter_to_array(values.iter().cloned())?;
        let schema = Arc::new(Schema::new(vec![Field::new(
            "key",
            array.data_type().clone(),
            true,
        )]));
        let column = Arc::new(Column::new("key", 0)) as Arc<dyn PhysicalExpr>;
        let filter = InListExpr::try_new_from_array(column, array.clone(), false, &schema)?;
        Ok(Self {
            signature: Signature::any(1, Volatility::Immutable),
            values: array,
            schema,
            filter: Arc::new(filter),
        })
    }
}

impl PartialEq for KeySet {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.values, &other.values)
    }
}

impl Eq for KeySet {}

impl Hash for KeySet {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.values.len().hash(state);
        self.values.data_type().hash(state);
    }
}

impl ScalarUDFImpl for KeySet {
    fn name(&self) -> &str {
        "lake_key_in"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return exec_err!("lake_key_in takes one argument");
        };
        let array = arg.to_array(args.number_rows)?;
        let wanted = self.values.data_type();
        let array = if array.data_type() == wanted {
            array
        } else {
            arrow::compute::cast(&array, wanted)?
        };
        let batch = RecordBatch::try_new(self.schema.clone(), vec![array])?;
        let result = self.filter.evaluate(&batch)?;
        Ok(match (arg, result) {
            (ColumnarValue::Scalar(_), ColumnarValue::Array(a)) => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&a, 0)?)
            }
            (_, r) => r,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{SessionContext, col};

    #[tokio::test]
    async fn a_long_list_answers_as_in_does() {
        let values: Vec<ScalarValue> = (0..2 * LISTED as i64)
            .map(|v| ScalarValue::Int64(Some(v * 2)))
            .collect();
        let ctx = SessionContext::new();
        let df = ctx
            .sql("SELECT * FROM (VALUES (0), (1), (2), (3998), (3999), (NULL)) AS t(k)")
            .await
            .unwrap();
        let set = member(col("k"), &values);
        assert!(set.to_string().contains("lake_key_in"), "{set}");
        let rows = df
            .select(vec![col("k"), set.alias("m")])
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&rows)
            .unwrap()
            .to_string();
        let m: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("| ") && !l.contains(" m "))
            .map(|l| l.split('|').nth(2).unwrap().trim())
            .collect();
        assert_eq!(m, ["true", "false", "true", "true", "false", ""]);
    }
}
