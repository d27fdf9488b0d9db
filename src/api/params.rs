//! GitLab's params: query string, JSON body and form body merged into one map (Grape does
//! the same), validated with Grape's messages (`token is missing`, `tag_list is invalid`).
//!
//! [`parse_params`] runs as middleware before any handler: it reads a JSON or form body
//! (bounded by `max_body_bytes`, 413 beyond), merges it over the query string and keeps
//! the result in the request extensions. Guards and [`Validated`] read it from there, in
//! the order of the handler's arguments. Bodies of other types (trace text, multipart
//! uploads) are left untouched for their handlers to stream.

use std::future::{ready, Ready};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use futures_util::StreamExt;
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};

/// The merged parameters of one request.
#[derive(Debug, Clone, Default)]
pub struct Params(pub Map<String, Value>);

impl Params {
    /// A parameter that is present and not null.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    /// A parameter as text, if it is a string or a number.
    pub fn text(&self, key: &str) -> Option<String> {
        match self.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// Params from a query string (or a form body: the same encoding, Rack's nesting).
    pub fn from_query(query: &str) -> ApiResult<Params> {
        let mut map = Map::new();
        merge_form(&mut map, query.as_bytes()).map_err(FormError::into_api)?;
        Ok(Params(map))
    }
}

/// The deepest `a[b][c]…` nesting a query string or form body may have: the
/// `param_depth_limit` of the Rack GitLab runs (2.2: 100; `Rack::QueryParser`, whose
/// `ParamsTooDeepError` Rails answers with 400). Deeper input is refused before anything
/// is built from it, so that neither the merge nor dropping the result recurses without
/// bound.
pub const MAX_PARAM_DEPTH: usize = 100;

/// The most params one query string or form body may hold (Rack's `params_limit`).
pub const MAX_PARAMS: usize = 4096;

/// The message of a too-deep query string or body.
pub const TOO_DEEP: &str = "Invalid request parameters: nested deeper than 100 levels";

/// The message of a query string or body with too many params.
pub const TOO_MANY: &str = "Invalid request parameters: more than 4096 parameters";

/// The message of params holding a NUL byte (GitLab's `Gitlab::Middleware::HandleNullBytes`
/// refuses them with 400 before Rails sees them; PostgreSQL cannot store them in text).
pub const NULL_BYTE: &str = "params contain a null byte";

/// Why a query string or form body was not read.
#[derive(Debug, PartialEq, Eq)]
enum FormError {
    /// Not `application/x-www-form-urlencoded` text.
    Unreadable,
    /// Nested deeper than [`MAX_PARAM_DEPTH`].
    TooDeep,
    /// More than [`MAX_PARAMS`] params.
    TooMany,
}

impl FormError {
    fn into_api(self) -> ApiError {
        match self {
            FormError::Unreadable => ApiError::InvalidParams(UNREADABLE.into()),
            FormError::TooDeep => ApiError::InvalidParams(TOO_DEEP.into()),
            FormError::TooMany => ApiError::InvalidParams(TOO_MANY.into()),
        }
    }
}

/// Whether a key or string anywhere in `value` holds a NUL byte. `value` was built by
/// this module (form nesting at most [`MAX_PARAM_DEPTH`], JSON at most serde_json's 128
/// levels), so the recursion is bounded.
fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// The request's params: those the middleware stored, or the query string alone.
pub fn params_of(req: &HttpRequest) -> ApiResult<Params> {
    if let Some(Unreadable(message)) = req.extensions().get::<Unreadable>() {
        return Err(ApiError::InvalidParams(message.clone()));
    }
    if let Some(params) = req.extensions().get::<Params>() {
        return Ok(params.clone());
    }
    Params::from_query(req.query_string())
}

/// Params that could not be read (a body that is not the JSON or form its type says): the
/// error is kept for the route that asks for params, so that a request no route takes
/// still gets the router's 404 or 405.
struct Unreadable(String);

const UNREADABLE: &str = "message body does not match declared format";

/// Middleware: parse and store [`Params`] (see the module doc).
pub async fn parse_params<B: MessageBody + 'static>(
    mut req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    use actix_web::http::Method;
    // Methods no route takes go straight to the router's 405/404, their input unread.
    if !matches!(
        *req.method(),
        Method::GET | Method::POST | Method::PUT | Method::PATCH | Method::DELETE | Method::HEAD
    ) {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let max = req
        .app_data::<web::Data<crate::AppState>>()
        .map_or(1024 * 1024, |s| s.settings.max_body_bytes);
    let mut unreadable = false;
    // Hostile input is answered at once, whatever the route: a nesting too deep (Rack's
    // limit) or a NUL byte in the path or params (GitLab's `HandleNullBytes`).
    let refuse = |req: ServiceRequest, message: &'static str| {
        let response =
            actix_web::ResponseError::error_response(&ApiError::InvalidParams(message.into()));
        Ok(req.into_response(response).map_into_right_body())
    };
    if req.path().contains('\0') || contains_encoded_nul(req.uri().path()) {
        return refuse(req, NULL_BYTE);
    }
    let mut params = Params(Map::new());
    match merge_form(&mut params.0, req.query_string().as_bytes()) {
        Ok(()) => {}
        Err(FormError::TooDeep) => return refuse(req, TOO_DEEP),
        Err(FormError::TooMany) => return refuse(req, TOO_MANY),
        Err(FormError::Unreadable) => unreadable = true,
    }
    let kind = body_kind(&req);
    if kind != BodyKind::Other {
        let body = read_limited(req.take_payload(), max).await?;
        match kind {
            BodyKind::Json if !body.iter().all(u8::is_ascii_whitespace) => {
                // serde_json refuses nesting past 128 levels itself.
                match serde_json::from_slice::<Value>(&body) {
                    Ok(Value::Object(map)) => params.0.extend(map),
                    Ok(_) | Err(_) => unreadable = true,
                }
            }
            BodyKind::Form => match merge_form(&mut params.0, &body) {
                Ok(()) => {}
                Err(FormError::TooDeep) => return refuse(req, TOO_DEEP),
                Err(FormError::TooMany) => return refuse(req, TOO_MANY),
                Err(FormError::Unreadable) => unreadable = true,
            },
            _ => {}
        }
    }
    if params.0.iter().any(|(k, v)| k.contains('\0') || has_nul(v)) {
        return refuse(req, NULL_BYTE);
    }
    if unreadable {
        req.extensions_mut().insert(Unreadable(UNREADABLE.into()));
    }
    req.extensions_mut().insert(params);
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

/// Whether a raw (still percent-encoded) path holds `%00`.
fn contains_encoded_nul(path: &str) -> bool {
    path.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1] == b'0' && w[2] == b'0')
}

#[derive(Debug, PartialEq, Eq)]
enum BodyKind {
    Json,
    Form,
    Other,
}

fn body_kind(req: &ServiceRequest) -> BodyKind {
    let Some(content_type) = req.headers().get(header::CONTENT_TYPE) else {
        // No type: the body is not params (a trace PATCH may come without one, and its
        // bytes belong to the handler); the query string still is.
        return BodyKind::Other;
    };
    let media = content_type
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media == "application/json" || media.ends_with("+json") {
        BodyKind::Json
    } else if media == "application/x-www-form-urlencoded" {
        BodyKind::Form
    } else {
        BodyKind::Other
    }
}

pub(crate) async fn read_limited(mut payload: Payload, max: usize) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| ApiError::bad_request("request body could not be read"))?;
        if body.len() + chunk.len() > max {
            return Err(ApiError::PayloadTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Merges `a=1&tags[]=x&info[name]=n` into `map` as Rack does: `[]` appends to an array,
/// `[key]` nests an object; at most [`MAX_PARAM_DEPTH`] levels, checked for every key
/// before anything is merged.
fn merge_form(map: &mut Map<String, Value>, body: &[u8]) -> Result<(), FormError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_bytes(body).map_err(|_| FormError::Unreadable)?;
    if pairs.len() > MAX_PARAMS {
        return Err(FormError::TooMany);
    }
    if pairs
        .iter()
        .any(|(key, _)| key.matches('[').count() > MAX_PARAM_DEPTH)
    {
        return Err(FormError::TooDeep);
    }
    for (key, value) in pairs {
        let (head, rest) = match key.find('[') {
            Some(i) if key.ends_with(']') => (&key[..i], &key[i..]),
            _ => (key.as_str(), ""),
        };
        let segments: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest[1..rest.len() - 1].split("][").collect()
        };
        insert_path(map, head, &segments, Value::String(value));
    }
    Ok(())
}

fn insert_path(map: &mut Map<String, Value>, key: &str, rest: &[&str], value: Value) {
    match rest.split_first() {
        None => {
            map.insert(key.to_string(), value);
        }
        Some((&"", _)) => {
            let entry = map
                .entry(key.to_string())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(items) = entry {
                items.push(value);
            } else {
                *entry = Value::Array(vec![value]);
            }
        }
        Some((next, tail)) => {
            let entry = map
                .entry(key.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Value::Object(inner) = entry {
                insert_path(inner, next, tail, value);
            }
        }
    }
}

/// Typed parameters of one route, parsed with Grape's checks and messages.
pub trait FromParams: Sized {
    fn from_params(params: &Params) -> ApiResult<Self>;
}

/// Extractor: the route's [`FromParams`] type, or 400 in Grape's shape. Put it before the
/// guard in a handler's arguments: GitLab validates params before it authenticates.
pub struct Validated<T>(pub T);

impl<T: FromParams> FromRequest for Validated<T> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            params_of(req)
                .and_then(|p| T::from_params(&p))
                .map(Validated),
        )
    }
}

/// Collects Grape's validation messages for one request; [`Check::finish`] answers 400
/// with all of them joined, as Grape does.
pub struct Check<'a> {
    params: &'a Params,
    errors: Vec<String>,
}

impl<'a> Check<'a> {
    pub fn new(params: &'a Params) -> Check<'a> {
        Check {
            params,
            errors: Vec::new(),
        }
    }

    /// Records `message` as it is.
    pub fn error(&mut self, message: impl Into<String>) {
        self.errors.push(message.into());
    }

    /// Records `<key> is invalid` (a value of the wrong type or shape).
    pub fn invalid(&mut self, key: &str) {
        self.errors.push(format!("{key} is invalid"));
    }

    /// A required string (`requires :key, type: String`); numbers are coerced.
    pub fn required_str(&mut self, key: &str) -> String {
        match self.params.get(key) {
            None => {
                self.errors.push(format!("{key} is missing"));
                String::new()
            }
            Some(_) => self.str(key).unwrap_or_default(),
        }
    }

    pub fn str(&mut self, key: &str) -> Option<String> {
        let value = self.params.get(key)?;
        let text = self.params.text(key);
        if text.is_none() {
            let _ = value;
            self.invalid(key);
        }
        text
    }

    /// A string of at most `max` characters (GitLab's column limits).
    pub fn str_max(&mut self, key: &str, max: usize) -> Option<String> {
        let text = self.str(key)?;
        if text.chars().count() > max {
            self.errors
                .push(format!("{key} is too long (maximum is {max} characters)"));
            return None;
        }
        Some(text)
    }

    pub fn bool(&mut self, key: &str) -> Option<bool> {
        let parsed = match self.params.get(key)? {
            Value::Bool(b) => Some(*b),
            Value::Number(n) => match n.as_i64() {
                Some(1) => Some(true),
                Some(0) => Some(false),
                _ => None,
            },
            Value::String(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "t" | "1" | "yes" | "on" => Some(true),
                "false" | "f" | "0" | "no" | "off" => Some(false),
                _ => None,
            },
            _ => None,
        };
        if parsed.is_none() {
            self.invalid(key);
        }
        parsed
    }

    /// An integer that `null` (or an empty string) clears: `Some(None)`.
    pub fn clearable_int(&mut self, key: &str) -> Option<Option<i64>> {
        if self.params.0.get(key).is_some_and(Value::is_null) {
            return Some(None);
        }
        self.int(key)
    }

    /// An integer; `Some(None)` for an empty string (GitLab turns `""` into null).
    pub fn int(&mut self, key: &str) -> Option<Option<i64>> {
        let parsed = match self.params.get(key)? {
            Value::Number(n) => n.as_i64().map(Some),
            Value::String(s) if s.trim().is_empty() => Some(None),
            Value::String(s) => s.trim().parse::<i64>().ok().map(Some),
            _ => None,
        };
        if parsed.is_none() {
            self.invalid(key);
        }
        parsed
    }

    /// A tag list: an array of strings, or one comma-separated string.
    pub fn tags(&mut self, key: &str) -> Option<Vec<String>> {
        let tags = match self.params.get(key)? {
            Value::String(s) => Some(split_tags(s.split(','))),
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_str())
                .collect::<Option<Vec<&str>>>()
                .map(|items| split_tags(items.into_iter())),
            _ => None,
        };
        if tags.is_none() {
            self.invalid(key);
        }
        tags
    }

    /// A hash (`type: Hash`).
    pub fn object(&mut self, key: &str) -> Option<Map<String, Value>> {
        match self.params.get(key)? {
            Value::Object(map) => Some(map.clone()),
            _ => {
                self.invalid(key);
                None
            }
        }
    }

    /// A string limited to the values `parse` accepts (`values: […]`).
    pub fn one_of<T>(&mut self, key: &str, parse: impl Fn(&str) -> Option<T>) -> Option<T> {
        let text = self.str(key)?;
        let parsed = parse(&text);
        if parsed.is_none() {
            self.errors
                .push(format!("{key} does not have a valid value"));
        }
        parsed
    }

    /// `mutually_exclusive :a, :b`.
    pub fn exclusive(&mut self, a: &str, b: &str) {
        if self.params.get(a).is_some() && self.params.get(b).is_some() {
            self.errors.push(format!("{a}, {b} are mutually exclusive"));
        }
    }

    pub fn finish(self) -> ApiResult<()> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::InvalidParams(self.errors.join(", ")))
        }
    }
}

/// Grape's `requires` checked after parsing: `<name> is missing` for each absent one
/// (`(name, absent)` pairs), joined as Grape joins them.
pub fn require(fields: &[(&str, bool)]) -> ApiResult<()> {
    let missing: Vec<String> = fields
        .iter()
        .filter(|(_, absent)| *absent)
        .map(|(name, _)| format!("{name} is missing"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ApiError::InvalidParams(missing.join(", ")))
    }
}

/// Trims, drops empties and duplicates, keeps order (`"a, b,,a"` → `["a","b"]`).
fn split_tags<'s>(items: impl Iterator<Item = &'s str>) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for tag in items.map(str::trim).filter(|t| !t.is_empty()) {
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_string());
        }
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn form(body: &str) -> Value {
        let mut map = Map::new();
        merge_form(&mut map, body.as_bytes()).unwrap();
        Value::Object(map)
    }

    #[test]
    fn form_bodies_nest_like_rack() {
        assert_eq!(
            form("token=t&tag_list[]=a&tag_list[]=b&info[name]=n&info[config][gpus]=all"),
            json!({"token":"t","tag_list":["a","b"],"info":{"name":"n","config":{"gpus":"all"}}})
        );
    }

    #[test]
    fn checks_use_grapes_messages() {
        let params = Params(
            json!({"a": [1], "b": "x", "t": "a, b ,a", "n": "", "m": "12", "e": "bad"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        let mut check = Check::new(&params);
        assert_eq!(check.required_str("token"), "");
        assert_eq!(check.str("a"), None);
        assert_eq!(check.bool("b"), None);
        assert_eq!(
            check.tags("t"),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(check.int("n"), Some(None));
        assert_eq!(check.int("m"), Some(Some(12)));
        assert_eq!(check.one_of("e", |s| (s == "ok").then_some(())), None);
        check.exclusive("a", "b");
        let err = check.finish().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid parameters: token is missing, a is invalid, b is invalid, e does not have a valid value, a, b are mutually exclusive"
        );
    }
}
