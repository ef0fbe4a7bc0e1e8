//! [`CooperativeJoins`]: joins yield to the runtime between the batches they emit, so
//! that a cancelled query stops.
//!
//! A query is cancelled by dropping it (timeout, hang-up, shutdown), which takes effect
//! the next time its task yields. DataFusion's operators yield through tokio's
//! cooperative budget, spent as data sources emit batches. A join can emit without
//! polling its inputs: a cross join of a large left side with one right batch emits a
//! batch per left row and reads nothing, so the aggregate above it never yields, and
//! a cancelled cartesian product would burn its core forever. Wrapping each join in
//! DataFusion's [`CooperativeExec`] spends budget per batch it emits; the cost is one
//! budget check per batch.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;

use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::ExecutionPlan;

/// Wraps every join (and unnest, which multiplies rows the same way) in
/// [`CooperativeExec`]. Runs after DataFusion's own rules.
#[derive(Debug)]
pub struct CooperativeJoins;

fn emits_without_reading(plan: &dyn ExecutionPlan) -> bool {
    let name = plan.name();
    name.ends_with("JoinExec") || name == "UnnestExec"
}

impl PhysicalOptimizerRule for CooperativeJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        crate::replace_nodes(plan, |node| {
            emits_without_reading(node.as_ref())
                .then(|| Arc::new(CooperativeExec::new(Arc::clone(node))) as Arc<dyn ExecutionPlan>)
        })
    }

    fn name(&self) -> &str {
        "cooperative_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
