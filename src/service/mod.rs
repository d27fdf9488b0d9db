//! Services: what handlers call. They own transactions and caches; models own SQL.

pub mod artifacts;
pub mod backoff;
pub mod deployments;
pub mod id_tokens;
pub mod junit;
pub mod limits;
pub mod pipelines;
pub mod pushes;
pub mod remote;
pub mod repos;
pub mod resource_groups;
pub mod retention;
pub mod runners;
pub mod schedules;
pub mod traces;

/// Runs file work on tokio's blocking pool; its I/O error is the server's, with `context`.
pub(crate) async fn blocking_io<T: Send + 'static>(
    context: &'static str,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> crate::error::ApiResult<T> {
    use crate::error::ApiError;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context(context)))
}
