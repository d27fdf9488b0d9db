//! Integration tests over real HTTP on 127.0.0.1. Every case runs on SQLite and on
//! PostgreSQL (`RUNWAY_TEST_DATABASE_URL`, which `scripts/test.sh` provides).

mod helpers;
#[path = "../common/shell_runner.rs"]
mod shell_runner;

mod abuse;
mod admin_runners;
mod artifacts;
mod auto_cancel;
mod backoff;
mod bad_input;
mod child_pipelines;
mod clock;
mod corpus;
mod crate_runner;
mod deploy_e2e;
mod environments;
mod faults;
mod features;
mod git_http;
mod id_tokens;
mod job_keywords;
mod jobs;
mod limits;
mod long_lists;
mod meta;
mod metrics;
mod minutes;
mod pipelines;
mod plans;
mod pool;
mod python_gitlab;
mod python_runner;
mod real_runner;
mod releases;
mod repositories;
mod resource_groups;
mod restart;
mod retention;
mod runners;
mod s3;
mod schedules;
mod schema;
mod schemathesis;
mod swagger_ui;
mod traces;
mod triggers;
mod ui;
mod ui_browser;
mod variables;
