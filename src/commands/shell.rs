//! `lake shell`: a REPL over one session. Statements end with `;` and may span lines.
//! Dot commands: `.tables`, `.schema T`, `.timing on|off`, `.help`, `.quit`.

use std::time::Instant;

use anyhow::Result;
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use super::Context;
use crate::lake::quote_ident;
use crate::output::{OutputFormat, print};

const HELP: &str = "\
Statements end with `;` and may span lines.
  .tables          list the tables
  .schema TABLE    show a table's columns
  .timing on|off   show how long each statement took (on by default)
  .help            this text
  .quit            leave (or Ctrl-D)";

pub async fn run(ctx: &Context) -> Result<()> {
    let session = ctx.app().await?.session().await?;
    let mut editor = DefaultEditor::new()?;
    let history =
        std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".lake_history"));
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    if !ctx.quiet() {
        eprintln!(
            "lake shell over {} tables. `.help` for help, Ctrl-D to leave.",
            session.tables().len()
        );
    }
    let mut timing = true;
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "lake> "
        } else {
            "  ... "
        };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let trimmed = line.trim();
        if buffer.is_empty() && trimmed.starts_with('.') {
            let _ = editor.add_history_entry(trimmed);
            let mut words = trimmed.split_whitespace();
            match (words.next().unwrap_or(""), words.next()) {
                (".quit" | ".exit", _) => break,
                (".help", _) => print(HELP)?,
                (".tables", _) => {
                    for t in session.tables() {
                        print(t)?;
                    }
                }
                (".schema", Some(table)) => {
                    // DESCRIBE opens only this table; information_schema would open them all.
                    let sql = match table.split_once('.') {
                        Some((s, n)) => format!("DESCRIBE {}.{}", quote_ident(s), quote_ident(n)),
                        None => format!("DESCRIBE {}", quote_ident(table)),
                    };
                    report(
                        crate::output::run_sql(&session, &sql, OutputFormat::Table, None).await,
                        None,
                    );
                }
                (".timing", Some("on")) => timing = true,
                (".timing", Some("off")) => timing = false,
                (other, _) => eprintln!("unknown command {other}; try .help"),
            }
            continue;
        }
        if trimmed.is_empty() && buffer.is_empty() {
            continue;
        }
        buffer.push_str(&line);
        buffer.push('\n');
        if !trimmed.ends_with(';') {
            continue;
        }
        let statement = std::mem::take(&mut buffer);
        let _ = editor.add_history_entry(statement.trim());
        let started = Instant::now();
        let result =
            crate::output::run_sql(&session, statement.trim(), OutputFormat::Table, None).await;
        report(result, timing.then(|| started.elapsed()));
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(())
}

fn report(result: Result<u64, crate::output::OutputError>, elapsed: Option<std::time::Duration>) {
    match result {
        Ok(rows) => {
            if let Some(t) = elapsed {
                let _ = print(format!("{rows} rows in {:.3}s", t.as_secs_f64()));
            }
        }
        Err(e) => eprintln!("error: {:#}", anyhow::Error::from(e)),
    }
}
