//! Services: what handlers call. They own transactions and caches; models own SQL.

pub mod artifacts;
pub mod backoff;
pub mod limits;
pub mod pipelines;
pub mod repos;
pub mod runners;
pub mod traces;
