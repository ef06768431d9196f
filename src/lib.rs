//! lake turns Spotify data into an analytics lake (Delta tables on S3 or a local folder) and a
//! BI-ready warehouse. The modules follow the data: [`extract`] reads sources into Arrow
//! batches, [`lake`] lands them in Delta tables, [`transform`] orders the analysts' SQL models,
//! [`query`] runs SQL over the lake, and
//! [`output`] prints results; [`schedule`] plans `lake schedule`'s refreshes. [`config`]
//! resolves settings once and [`paths`] local paths. [`app::App`], built once per process,
//! holds the settings, the lake, the project and the warehouse and runs each stage;
//! [`refresh`] chains the stages. [`commands`] wires the CLI to them.
#![warn(missing_docs)]

pub mod app;
pub mod cli;
pub mod commands;
pub mod config;
pub mod db;
pub mod export;
pub mod extract;
pub mod lake;
pub mod output;
pub mod paths;
pub mod progress;
pub mod query;
pub mod refresh;
pub mod schedule;
pub mod transform;
