//! Joins that fit the memory pool.
//!
//! DataFusion 55's hash join cannot spill: its build side must fit in memory, or the query
//! fails. Its sort-merge join sorts both sides, and sorts spill. This rule, run before
//! DataFusion picks join sides, turns a hash join into a sort-merge join when statistics say
//! that even the smaller side would take more than a quarter of `[query] memory_limit`.
//! Joins of a fact table to a dimension stay hash joins; a join of two large tables spills.

use std::sync::Arc;

use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, Schema};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{JoinType, Result};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::joins::{HashJoinExec, SortMergeJoinExec};
use datafusion::physical_plan::{ExecutionPlan, StatisticsArgs, StatisticsContext};

/// The rule; see the module's documentation.
#[derive(Debug)]
pub struct JoinsThatFit {
    /// Bytes above which a build side is too large.
    threshold: usize,
}

impl JoinsThatFit {
    /// For a pool of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            threshold: limit / 4,
        }
    }
}

/// What a plan's output would take in memory, from its statistics: the larger of its byte
/// size and its rows times a row's width. `None` when statistics say neither.
fn estimated_bytes(plan: &Arc<dyn ExecutionPlan>) -> Option<usize> {
    let stats = StatisticsContext::new()
        .compute(plan.as_ref(), &StatisticsArgs::new())
        .ok()?;
    let bytes = stats.total_byte_size.get_value().copied();
    let rows = stats
        .num_rows
        .get_value()
        .map(|rows| rows.saturating_mul(row_width(&plan.schema())));
    match (bytes, rows) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Bytes of one row in Arrow, with a guess for variable-width values.
fn row_width(schema: &Schema) -> usize {
    schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 | DataType::Binary | DataType::Utf8View | DataType::BinaryView => 32,
            DataType::LargeUtf8 | DataType::LargeBinary => 40,
            t => t.primitive_width().unwrap_or(64),
        })
        .sum::<usize>()
        .max(1)
}

impl PhysicalOptimizerRule for JoinsThatFit {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // A sort-merge join needs its inputs partitioned by the keys.
        if config.execution.target_partitions < 2 || !config.optimizer.repartition_joins {
            return Ok(plan);
        }
        plan.transform_up(|node| {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            let sortable = matches!(
                join.join_type(),
                JoinType::Inner
                    | JoinType::Left
                    | JoinType::Right
                    | JoinType::Full
                    | JoinType::LeftSemi
                    | JoinType::LeftAnti
                    | JoinType::RightSemi
                    | JoinType::RightAnti
            );
            // NOT IN needs the hash join's null-aware anti join; a join that already projects
            // was planned by a rule that knows better.
            if !sortable || join.null_aware || join.projection.is_some() {
                return Ok(Transformed::no(node));
            }
            let (Some(left), Some(right)) =
                (estimated_bytes(join.left()), estimated_bytes(join.right()))
            else {
                return Ok(Transformed::no(node));
            };
            let build = left.min(right);
            if build <= self.threshold {
                return Ok(Transformed::no(node));
            }
            let Ok(merge) = SortMergeJoinExec::try_new(
                join.left().clone(),
                join.right().clone(),
                join.on().to_vec(),
                join.filter().cloned(),
                *join.join_type(),
                vec![SortOptions::default(); join.on().len()],
                join.null_equality(),
            ) else {
                return Ok(Transformed::no(node));
            };
            tracing::debug!(
                "a join's smaller side is about {build} bytes, over a quarter of the memory \
                 limit: sort-merge join"
            );
            Ok(Transformed::yes(Arc::new(merge) as Arc<dyn ExecutionPlan>))
        })
        .data()
    }

    fn name(&self) -> &str {
        "lake_joins_that_fit"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
