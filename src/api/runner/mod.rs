//! The runner-facing API (`/api/v4/runners…`, `/api/v4/jobs…`).

pub mod artifacts;
pub mod jobs;
pub mod payload;
pub mod runners;
