//! Fault injection for tests of runners: "the next N requests to this route answer 500",
//! "hold the next N job requests for 2 s". Rules are armed through [`Faults`] (the test
//! harness, `runway::testing`, does it); the middleware [`InjectFaults`] applies them.
//!
//! With no rule armed a request costs one atomic load: the middleware passes it on
//! untouched. Nothing arms a rule in a server started by `runway serve`.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpMessage, HttpResponse};
use futures_util::future::{ready, Either, LocalBoxFuture, MapOk, Ready, TryFutureExt};
use futures_util::StreamExt;

/// What an armed rule does to a request it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// Answer with this status (and a GitLab-shaped JSON body) instead of the route.
    Respond(StatusCode),
    /// Hold the request this long, then pass it on to the route.
    Delay(Duration),
    /// Panic, as a bug in a handler would: the request is answered 500 and the server
    /// goes on (see [`crate::api::hardening::catch_panics`]).
    Panic,
}

/// One armed rule: `method` and `pattern` select requests, the first `times` of them get
/// `action`.
struct Rule {
    /// `None`: any method.
    method: Option<Method>,
    pattern: Vec<Segment>,
    remaining: usize,
    action: FaultAction,
    hits: Arc<AtomicUsize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*` or `{name}`: exactly one segment.
    One,
    /// `**`, last: any rest, empty included.
    Rest,
}

/// Parses `/api/v4/jobs/{id}/trace`, `/api/v4/jobs/*`, `/api/v4/**` into segments.
fn parse_pattern(pattern: &str) -> Result<Vec<Segment>, String> {
    if !pattern.starts_with('/') {
        return Err(format!("path pattern {pattern:?} must start with '/'"));
    }
    let parts: Vec<&str> = pattern.trim_matches('/').split('/').collect();
    let last = parts.len() - 1;
    parts
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.is_empty())
        .map(|(i, part)| match *part {
            "**" if i == last => Ok(Segment::Rest),
            "**" => Err(format!("'**' must be last in {pattern:?}")),
            "*" => Ok(Segment::One),
            p if p.starts_with('{') && p.ends_with('}') => Ok(Segment::One),
            p => Ok(Segment::Literal(p.to_string())),
        })
        .collect()
}

fn path_matches(pattern: &[Segment], path: &str) -> bool {
    let mut parts = path.split('/').filter(|p| !p.is_empty());
    for segment in pattern {
        match segment {
            Segment::Rest => return true,
            Segment::One => {
                if parts.next().is_none() {
                    return false;
                }
            }
            Segment::Literal(text) => {
                if parts.next() != Some(text.as_str()) {
                    return false;
                }
            }
        }
    }
    parts.next().is_none()
}

/// The armed rules of one server.
#[derive(Default)]
pub struct Faults {
    /// Whether any rule has requests left: the only thing a request reads when none has.
    armed: AtomicBool,
    rules: Mutex<Vec<Rule>>,
}

/// How often an armed rule fired; shared with the rule.
#[derive(Debug, Clone)]
pub struct FaultHits(Arc<AtomicUsize>);

impl FaultHits {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Faults {
    fn rules(&self) -> MutexGuard<'_, Vec<Rule>> {
        // A panic while holding the lock leaves the list consistent (every change is one
        // push, decrement or retain), so a poisoned lock is still usable.
        self.rules.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Arms a rule: the next `times` requests with `method` (`None`: any) whose path
    /// matches `pattern` get `action`. Rules are tried in the order they were armed.
    /// `pattern` is a path with `*` or `{name}` for one segment and a final `**` for any
    /// rest, e.g. `/api/v4/jobs/*/trace`.
    pub fn arm(
        &self,
        method: Option<Method>,
        pattern: &str,
        times: usize,
        action: FaultAction,
    ) -> Result<FaultHits, String> {
        let pattern = parse_pattern(pattern)?;
        let hits = Arc::new(AtomicUsize::new(0));
        if times > 0 {
            let mut rules = self.rules();
            rules.push(Rule {
                method,
                pattern,
                remaining: times,
                action,
                hits: hits.clone(),
            });
            self.armed.store(true, Ordering::SeqCst);
        }
        Ok(FaultHits(hits))
    }

    /// Disarms every rule.
    pub fn clear(&self) {
        let mut rules = self.rules();
        rules.clear();
        self.armed.store(false, Ordering::SeqCst);
    }

    /// The action for this request, counting it against the first matching rule.
    fn take(&self, method: &Method, path: &str) -> Option<FaultAction> {
        let mut rules = self.rules();
        let rule = rules.iter_mut().find(|r| {
            r.remaining > 0
                && r.method.as_ref().is_none_or(|m| m == method)
                && path_matches(&r.pattern, path)
        })?;
        rule.remaining -= 1;
        rule.hits.fetch_add(1, Ordering::SeqCst);
        let action = rule.action;
        rules.retain(|r| r.remaining > 0);
        if rules.is_empty() {
            self.armed.store(false, Ordering::SeqCst);
        }
        Some(action)
    }
}

/// The middleware: applies [`Faults`] to every request.
pub struct InjectFaults(pub Arc<Faults>);

impl<S, B> Transform<S, ServiceRequest> for InjectFaults
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = InjectFaultsService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(InjectFaultsService {
            service: Rc::new(service),
            faults: self.0.clone(),
        }))
    }
}

pub struct InjectFaultsService<S> {
    service: Rc<S>,
    faults: Arc<Faults>,
}

type Passed<B> = fn(ServiceResponse<B>) -> ServiceResponse<EitherBody<B>>;

impl<S, B> Service<ServiceRequest> for InjectFaultsService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    #[allow(clippy::type_complexity)]
    type Future = Either<
        MapOk<S::Future, Passed<B>>,
        LocalBoxFuture<'static, Result<Self::Response, Self::Error>>,
    >;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let passed: Passed<B> = ServiceResponse::map_into_left_body;
        if !self.faults.armed.load(Ordering::Relaxed) {
            return Either::Left(self.service.call(req).map_ok(passed));
        }
        let Some(action) = self.faults.take(req.method(), req.path()) else {
            return Either::Left(self.service.call(req).map_ok(passed));
        };
        let service = self.service.clone();
        let mut req = req;
        Either::Right(Box::pin(async move {
            match action {
                FaultAction::Delay(hold) => {
                    tokio::time::sleep(hold).await;
                    service.call(req).await.map(passed)
                }
                FaultAction::Panic => panic!("injected fault: {} {}", req.method(), req.path()),
                FaultAction::Respond(status) => {
                    // Read the body first, so that the connection stays usable for the
                    // client's next request (an unread body costs the keep-alive).
                    let mut payload = req.take_payload();
                    while let Some(chunk) = payload.next().await {
                        if chunk.is_err() {
                            break;
                        }
                    }
                    let response = HttpResponse::build(status)
                        .insert_header(("X-Runway-Fault", "injected"))
                        .json(serde_json::json!({ "message": status.to_string() }));
                    Ok(req.into_response(response).map_into_right_body())
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_paths_segment_by_segment() {
        let p = parse_pattern("/api/v4/jobs/{id}").unwrap();
        assert!(path_matches(&p, "/api/v4/jobs/12"));
        assert!(path_matches(&p, "/api/v4/jobs/request"));
        assert!(!path_matches(&p, "/api/v4/jobs/12/trace"));
        assert!(!path_matches(&p, "/api/v4/jobs"));
        let p = parse_pattern("/api/v4/jobs/*/trace").unwrap();
        assert!(path_matches(&p, "/api/v4/jobs/12/trace"));
        assert!(!path_matches(&p, "/api/v4/jobs/12/artifacts"));
        let p = parse_pattern("/api/v4/**").unwrap();
        assert!(path_matches(&p, "/api/v4"));
        assert!(path_matches(&p, "/api/v4/runners/verify"));
        assert!(!path_matches(&p, "/metrics"));
        assert!(path_matches(&parse_pattern("/").unwrap(), "/"));
        assert!(parse_pattern("api/v4").is_err());
        assert!(parse_pattern("/api/**/jobs").is_err());
    }

    #[test]
    fn a_rule_fires_its_count_then_disarms() {
        let faults = Faults::default();
        let hits = faults
            .arm(
                Some(Method::PUT),
                "/api/v4/jobs/*",
                2,
                FaultAction::Respond(StatusCode::INTERNAL_SERVER_ERROR),
            )
            .unwrap();
        assert_eq!(faults.take(&Method::GET, "/api/v4/jobs/1"), None);
        assert!(faults.take(&Method::PUT, "/api/v4/jobs/1").is_some());
        assert!(faults.armed.load(Ordering::SeqCst));
        assert!(faults.take(&Method::PUT, "/api/v4/jobs/2").is_some());
        assert_eq!(faults.take(&Method::PUT, "/api/v4/jobs/3"), None);
        assert_eq!(hits.get(), 2);
        assert!(!faults.armed.load(Ordering::SeqCst), "disarmed once spent");
    }
}
