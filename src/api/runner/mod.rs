//! The runner-facing API (`/api/v4/runners…`, later `/api/v4/jobs…`).

pub mod runners;
