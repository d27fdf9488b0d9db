//! Tokens and the guards that authenticate requests.

pub mod guards;
pub mod tokens;

pub use guards::{
    AdminAuth, AdminOrJobAuth, DependentJobAuth, Heartbeat, JobAuth, LogAppend, NoHeartbeat,
    Polling, RunnerAuth, RunnerHeaderAuth,
};
