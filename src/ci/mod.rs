//! `.gitlab-ci.yml` → pipeline plan, and pipeline progression.

pub mod auto_cancel;
pub mod config;
pub mod coverage;
pub mod duration;
pub mod environment;
mod evaluate;
pub mod expr;
pub mod include;
pub mod inputs;
mod keywords;
pub mod load;
mod normalise;
mod plan;
pub mod policy;
pub mod progress;
pub mod reference;

pub use keywords::release_command;
