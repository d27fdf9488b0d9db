//! Request paths made canonical before routing: repeated slashes merged, a trailing slash
//! dropped (`/api/v4//runners/verify/` is `/api/v4/runners/verify`), the query kept.
//!
//! actix-web's `NormalizePath::trim()` does the same, but runs its slash-merging regex over
//! every path, needed or not: 7% of the server's CPU on the empty poll (perf), for paths
//! that are nearly always canonical already. Here a path is only rewritten when a byte
//! check finds something to change.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::uri::{PathAndQuery, Uri};
use actix_web::middleware::Next;

/// The canonical form of `path`, or `None` when it is canonical already.
pub fn canonical(path: &str) -> Option<String> {
    let trailing = path.len() > 1 && path.ends_with('/');
    if !trailing && !path.contains("//") {
        return None;
    }
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    if out.len() > 1 && out.ends_with('/') {
        out.pop();
    }
    Some(out)
}

/// Middleware: rewrites the request's path to its [`canonical`] form when it is not.
pub async fn normalize(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    if let Some(path) = canonical(req.path()) {
        let head = req.head_mut();
        let mut parts = head.uri.clone().into_parts();
        let with_query = match parts.path_and_query.as_ref().and_then(|pq| pq.query()) {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        // The path came from a parsed URI, with only slashes removed: it parses again.
        if let Ok(pq) = PathAndQuery::try_from(with_query) {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = Uri::from_parts(parts) {
                req.match_info_mut().get_mut().update(&uri);
                req.head_mut().uri = uri;
            }
        }
    }
    next.call(req).await
}

#[cfg(test)]
mod tests {
    use super::canonical;

    #[test]
    fn only_paths_that_need_it_are_rewritten() {
        assert_eq!(canonical("/api/v4/jobs/request"), None);
        assert_eq!(canonical("/"), None);
        assert_eq!(canonical(""), None);
        assert_eq!(
            canonical("/api/v4//runners/verify/").as_deref(),
            Some("/api/v4/runners/verify")
        );
        assert_eq!(canonical("//").as_deref(), Some("/"));
        assert_eq!(canonical("/a///b//").as_deref(), Some("/a/b"));
        assert_eq!(canonical("/a/").as_deref(), Some("/a"));
    }
}
