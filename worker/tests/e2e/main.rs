//! End-to-end tests: the built `lakeload` binary against local folders and a real S3-compatible
//! server (moto, started by the test harness on 127.0.0.1).

mod bad_input;
mod cli;
mod common;
mod delta;
mod fencing;
mod full;
mod image;
mod incremental;
mod ownership;
mod property;
mod retry;
mod storage;
