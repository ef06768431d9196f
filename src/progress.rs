//! Progress on a terminal, silence everywhere else; and the lines the CLI prints as a stage's
//! items end ([`Lines`]).

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::app::{Event, Observer, Stage};
use crate::export::ExportOutcome;
use crate::lake::TableName;
use crate::output;
use crate::transform::Severity;
use crate::transform::run::{ModelOutcome, RunSummary, Status};

/// A byte-counting bar on stderr, hidden when `quiet` or when stderr is not a terminal.
pub fn bytes_bar(quiet: bool, total: u64, message: String) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{bar:25}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A spinner on stderr with the same rules.
pub fn spinner(quiet: bool, message: String) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A counting bar on stderr, with the same rules.
pub fn bar(quiet: bool, total: u64, unit: &str) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(&format!("{{spinner}} [{{bar:25}}] {{pos}}/{{len}} {unit}"))
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// The CLI's [`Observer`]: a spinner while an item runs, and a line on stdout as each item
/// ends, the same for a single-stage command and for `lake refresh`.
pub struct Lines {
    quiet: bool,
    /// `lake test`: a model's line counts its tests instead of its rows.
    build: bool,
    state: Mutex<LinesState>,
}

#[derive(Default)]
struct LinesState {
    spinner: Option<ProgressBar>,
    width: usize,
    total: usize,
    done: usize,
    running: Vec<String>,
}

impl Lines {
    /// An observer; `build` is false for `lake test`.
    pub fn new(quiet: bool, build: bool) -> Arc<dyn Observer> {
        Arc::new(Self {
            quiet,
            build,
            state: Mutex::default(),
        })
    }
}

impl Observer for Lines {
    fn event(&self, event: Event<'_>) {
        let mut state = self.state.lock().expect("not poisoned");
        let print = |state: &LinesState, text: String| match &state.spinner {
            Some(s) => s.suspend(|| output::print(text)),
            None => output::print(text),
        };
        // A closed stdout (`| head`) stops nothing: the stage's work still commits.
        let _ = match event {
            Event::Begin {
                stage,
                items,
                width,
            } => {
                state.width = width;
                state.total = items;
                state.done = 0;
                state.running.clear();
                if stage == Stage::Run {
                    let what = if self.build {
                        "running models"
                    } else {
                        "running tests"
                    };
                    state.spinner = Some(spinner(self.quiet, what.into()));
                }
                Ok(())
            }
            Event::Started { stage, item } => {
                let message = match stage {
                    Stage::Extract => format!("{item}: connecting"),
                    Stage::Export => format!("exporting {item}"),
                    Stage::Maintain => format!("maintaining {item}"),
                    Stage::Run => {
                        state.running.push(item.to_string());
                        state.running_message()
                    }
                };
                match (&state.spinner, stage) {
                    (Some(s), Stage::Run) => s.set_message(message),
                    _ => state.spinner = Some(spinner(self.quiet, message)),
                }
                Ok(())
            }
            Event::Rows { stage, item, rows } => {
                if let Some(s) = &state.spinner {
                    s.set_message(match stage {
                        Stage::Export => format!("exporting {item}: {rows} rows"),
                        _ => format!("{item}: {rows} rows"),
                    });
                }
                Ok(())
            }
            Event::Extracted { source, result } => {
                state.clear();
                output::print(match result {
                    Ok(r) => r.to_string(),
                    Err(e) => format!("{source}: failed: {e}"),
                })
            }
            Event::Model(outcome) => {
                let name = outcome.model.to_string();
                state.running.retain(|n| *n != name);
                state.done += 1;
                let text = model_line(outcome, state.width, self.build);
                let printed = print(&state, text);
                if let Some(s) = &state.spinner {
                    s.set_message(state.running_message());
                }
                printed
            }
            Event::Ran(summary) => {
                state.clear();
                if !self.quiet {
                    eprintln!("{}", run_totals(summary));
                }
                Ok(())
            }
            Event::Exported { table, outcome } => {
                state.clear();
                output::print(export_line(table, outcome))
            }
            Event::Maintained {
                table,
                result,
                dry_run,
            } => {
                state.clear();
                output::print(match result {
                    Ok(r) => format!("{table}: {}", r.summary(dry_run)),
                    Err(e) => format!("{table}: failed: {e}"),
                })
            }
            Event::End(_) => {
                state.clear();
                Ok(())
            }
        };
    }
}

impl LinesState {
    fn clear(&mut self) {
        if let Some(s) = self.spinner.take() {
            s.finish_and_clear();
        }
    }

    fn running_message(&self) -> String {
        format!(
            "{} of {} done; running {}",
            self.done,
            self.total,
            self.running.join(", ")
        )
    }
}

/// One table's export: `exported      curated.a -> a  120 rows, version 3, 0.41s`.
pub fn export_line(table: &TableName, outcome: &ExportOutcome) -> String {
    match outcome {
        ExportOutcome::HeldBack { run_id } => {
            format!("not exported  {table}: its error-level tests failed in run {run_id}")
        }
        ExportOutcome::Done(e) if e.unchanged => format!(
            "unchanged     {table} -> {}  (version {} is there already)",
            e.target, e.version
        ),
        ExportOutcome::Done(e) => format!(
            "{:<13} {table} -> {}  {} rows{}, version {}, {:.2}s",
            if e.upsert { "upserted" } else { "exported" },
            e.target,
            e.rows.unwrap_or(0),
            e.deleted
                .map(|d| format!(", {d} deleted"))
                .unwrap_or_default(),
            e.version,
            e.duration.as_secs_f64()
        ),
        ExportOutcome::Failed(err) => format!("failed        {table}: {err}"),
    }
}

/// One model's line, with its failing tests below it.
pub fn model_line(o: &ModelOutcome, width: usize, build: bool) -> String {
    let secs = format!("{:.2}s", o.duration.as_secs_f64());
    let detail = match o.status {
        Status::Failed | Status::Skipped => o.error.clone().unwrap_or_default(),
        _ if !build => format!("{} tests", o.tests.len()),
        _ => {
            let rows = match (o.merged, o.rows, o.groups) {
                (Some((i, u)), _, _) => format!("{i} inserted, {u} updated"),
                (None, Some(r), Some(g)) if o.status != Status::Unchanged => {
                    format!(
                        "{r} rows, {g} group{} recomputed",
                        if g == 1 { "" } else { "s" }
                    )
                }
                (None, Some(r), _) => format!("{r} rows"),
                (None, None, _) => "defined".to_string(),
            };
            let rows = match o.rows_read {
                Some(read) => format!("{rows}, {read} read"),
                None => rows,
            };
            let tests = match o.tests.len() {
                0 => String::new(),
                n => {
                    let scoped = o.tests.iter().filter(|t| t.new_rows_only).count();
                    format!(
                        ", {} of {n} tests passed{}",
                        o.tests.iter().filter(|t| t.passed()).count(),
                        match scoped {
                            0 => String::new(),
                            s => format!(" ({s} on the new rows only)"),
                        }
                    )
                }
            };
            let note = o
                .note
                .as_ref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            format!("{rows}{tests}{note}")
        }
    };
    let mut text = format!(
        "{:<12} {:<width$}  {:<11}  {secs:>7}  {detail}",
        o.status.name(),
        o.model.to_string(),
        o.materialized.name(),
    );
    for t in o.tests.iter().filter(|t| !t.passed()) {
        let level = match t.severity {
            Severity::Error => "FAIL",
            Severity::Warn => "WARN",
        };
        match &t.error {
            Some(e) => text.push_str(&format!("\n  {level} {}: {e}", t.name)),
            None => {
                text.push_str(&format!(
                    "\n  {level} {}: {} failing row{}{}",
                    t.name,
                    t.failing,
                    if t.failing == 1 { "" } else { "s" },
                    t.audit
                        .as_ref()
                        .map(|a| format!(", all in {a}"))
                        .unwrap_or_default()
                ));
                if let Some(first) = t.sample.first()
                    && let Ok(table) = output::format_table(&first.schema(), &t.sample)
                {
                    for l in table.lines() {
                        text.push_str(&format!("\n    {l}"));
                    }
                }
            }
        }
    }
    text
}

/// A run's totals: `5 models in 1.20s: 4 ok, 0 warn, ... (run 20261202T...)`.
pub fn run_totals(s: &RunSummary) -> String {
    let count = |f: &dyn Fn(Status) -> bool| s.outcomes.iter().filter(|o| f(o.status)).count();
    format!(
        "{} models in {:.2}s: {} ok, {} warn, {} unchanged, {} failed, {} tests failed, {} skipped (run {})",
        s.outcomes.len(),
        s.duration.as_secs_f64(),
        count(&|x| x == Status::Ok),
        count(&|x| x == Status::Warn),
        count(&|x| x == Status::Unchanged),
        count(&|x| x == Status::Failed),
        count(&|x| x == Status::TestsFailed),
        count(&|x| x == Status::Skipped),
        s.run_id
    )
}
