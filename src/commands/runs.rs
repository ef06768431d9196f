//! `lake runs [RUN]`: recent runs, or one run's models, from `_lake.runs`.

use anyhow::Result;

use super::Context;
use crate::cli::RunsArgs;
use crate::output;
use crate::transform::runs;

pub async fn run(ctx: &Context, args: RunsArgs) -> Result<()> {
    let session = ctx.app().await?.session().await?;
    if !session.tables().contains(&runs::table()) {
        if !ctx.quiet() {
            eprintln!("no runs yet: `lake run` records each run in _lake.runs");
        }
        return Ok(());
    }
    let sql = match &args.run {
        Some(id) => runs::run_sql(id),
        None => format!("{} LIMIT {}", runs::RECENT_SQL, args.limit),
    };
    let df = session.sql(&sql).await?;
    let schema = df.schema().as_arrow().clone().into();
    let batches = df.collect().await?;
    output::print(output::format_table(&schema, &batches)?)?;
    Ok(())
}
