//! The one integration test binary. Each module is an area; each test owns a temp dir and runs
//! the real `lake` binary. Storage tests run twice: on a local folder and on a real S3 endpoint.

mod common;
mod s3_server;
mod spotify_server;
mod tds_mock;

mod cli;
mod concurrency;
mod config;
mod errors;
mod export;
mod groups;
mod ingest;
mod layout;
mod lease;
mod library;
mod maintain;
mod memory;
mod models;
mod query;
mod refresh;
mod scan;
mod spotify;
mod spotify_export;
mod spotify_fidelity;
mod sql_sources;
