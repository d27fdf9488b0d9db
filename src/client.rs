//! A small client of Runway's admin API (`PRIVATE-TOKEN`), shared by the command line
//! (`runway pipeline run`, `runway runners …`) and the test harness (`runway::testing`).
//! Answers are GitLab's JSON as `serde_json::Value`, the shapes python-gitlab reads.

use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::{json, Value};

/// A failed call, worded for a person at a terminal.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach Runway at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("{method} {path} answered {status}: {message}")]
    Status {
        method: Method,
        path: String,
        status: u16,
        message: String,
    },
    #[error("{method} {path}: unexpected answer: {detail}")]
    Invalid {
        method: Method,
        path: String,
        detail: String,
    },
}

impl ClientError {
    /// The HTTP status of a refused call.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            ClientError::Unreachable { .. } | ClientError::Invalid { .. } => None,
        }
    }
}

pub type ClientResult<T> = Result<T, ClientError>;

/// The admin API of one server.
#[derive(Clone)]
pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// Everything after the status line: GitLab's `message` or `error`, or the body.
fn refusal_message(body: &str) -> String {
    let text = match serde_json::from_str::<Value>(body) {
        Ok(json) => match json.get("message").or_else(|| json.get("error")) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => body.to_string(),
        },
        Err(_) => body.to_string(),
    };
    text.chars().take(500).collect()
}

impl AdminClient {
    /// A client of the server at `base_url` (`http://127.0.0.1:8080`) with the admin token.
    /// An HTTPS server is trusted by the system's roots (`SSL_CERT_FILE` / `SSL_CERT_DIR`
    /// when set).
    pub fn new(base_url: &str, token: &str) -> ClientResult<AdminClient> {
        AdminClient::trusting(base_url, token, None)
    }

    /// As [`AdminClient::new`], also trusting the PEM certificates in `ca_file` (a
    /// self-signed server's own certificate, or a private CA's).
    pub fn trusting(
        base_url: &str,
        token: &str,
        ca_file: Option<&std::path::Path>,
    ) -> ClientResult<AdminClient> {
        let base = base_url.trim_end_matches('/').to_string();
        let unusable = |detail: String| ClientError::Unreachable {
            url: base.clone(),
            detail,
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Logs and archives come whole; a minute bounds a hung server, not a big log.
            .timeout(Duration::from_secs(60));
        if let Some(file) = ca_file {
            let named = |e: &dyn std::fmt::Display| format!("{}: {e}", file.display());
            let pem = std::fs::read(file).map_err(|e| unusable(named(&e)))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| unusable(named(&e)))?;
            if certs.is_empty() {
                return Err(unusable(named(&"no PEM certificate in it")));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| unusable(e.to_string()))?;
        Ok(AdminClient {
            base,
            token: token.to_string(),
            http,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Sends one call under `/api/v4`; a status outside 2xx is an error.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> ClientResult<Response> {
        let url = format!("{}/api/v4{path}", self.base);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .header("PRIVATE-TOKEN", &self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            detail: error_chain(&e),
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        Err(ClientError::Status {
            method,
            path: path.to_string(),
            status,
            message: refusal_message(&body),
        })
    }

    async fn json(&self, method: Method, path: &str, body: Option<&Value>) -> ClientResult<Value> {
        let response = self.send(method.clone(), path, body).await?;
        response.json().await.map_err(|e| ClientError::Invalid {
            method,
            path: path.to_string(),
            detail: error_chain(&e),
        })
    }

    async fn bytes(&self, path: &str) -> ClientResult<Vec<u8>> {
        let response = self.send(Method::GET, path, None).await?;
        let bytes = response.bytes().await.map_err(|e| ClientError::Invalid {
            method: Method::GET,
            path: path.to_string(),
            detail: error_chain(&e),
        })?;
        Ok(bytes.to_vec())
    }

    /// Every item of a paginated list (GitLab's `X-Next-Page`), at most 100 pages.
    async fn all(&self, path: &str) -> ClientResult<Vec<Value>> {
        let mut items = Vec::new();
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut page = 1;
        for _ in 0..100 {
            let paged = format!("{path}{separator}per_page=100&page={page}");
            let response = self.send(Method::GET, &paged, None).await?;
            let next = response
                .headers()
                .get("X-Next-Page")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u32>().ok());
            let invalid = |detail: String| ClientError::Invalid {
                method: Method::GET,
                path: paged.clone(),
                detail,
            };
            match response.json::<Value>().await {
                Ok(Value::Array(list)) => items.extend(list),
                Ok(other) => return Err(invalid(format!("not a list: {other}"))),
                Err(e) => return Err(invalid(error_chain(&e))),
            }
            match next {
                Some(n) => page = n,
                None => break,
            }
        }
        Ok(items)
    }

    /// `GET /version`: checks the URL and the token.
    pub async fn version(&self) -> ClientResult<Value> {
        self.json(Method::GET, "/version", None).await
    }

    /// The project `root/<path>`, if there is one.
    pub async fn find_project(&self, path: &str) -> ClientResult<Option<Value>> {
        match self
            .json(Method::GET, &format!("/projects/root%2F{path}"), None)
            .await
        {
            Ok(project) => Ok(Some(project)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The project `root/<path>`, created (named `path`) when there is none.
    pub async fn ensure_project(&self, path: &str) -> ClientResult<Value> {
        if let Some(project) = self.find_project(path).await? {
            return Ok(project);
        }
        let body = json!({ "name": path, "path": path });
        match self.json(Method::POST, "/projects", Some(&body)).await {
            // Created meanwhile by another caller: take theirs.
            Err(e) if e.status() == Some(400) => match self.find_project(path).await? {
                Some(project) => Ok(project),
                None => Err(e),
            },
            created => created,
        }
    }

    pub async fn projects(&self) -> ClientResult<Vec<Value>> {
        self.all("/projects").await
    }

    /// `POST /projects/:id/pipeline` with the `.gitlab-ci.yml` text (`ci_config`).
    pub async fn create_pipeline(
        &self,
        project: i64,
        git_ref: &str,
        ci_config: &str,
        variables: &[(String, String)],
    ) -> ClientResult<Value> {
        let variables: Vec<Value> = variables
            .iter()
            .map(|(key, value)| json!({ "key": key, "value": value }))
            .collect();
        let body = json!({ "ref": git_ref, "ci_config": ci_config, "variables": variables });
        self.json(
            Method::POST,
            &format!("/projects/{project}/pipeline"),
            Some(&body),
        )
        .await
    }

    pub async fn pipeline(&self, project: i64, pipeline: i64) -> ClientResult<Value> {
        self.json(
            Method::GET,
            &format!("/projects/{project}/pipelines/{pipeline}"),
            None,
        )
        .await
    }

    /// A project's pipelines, newest first.
    pub async fn pipelines(&self, project: i64) -> ClientResult<Vec<Value>> {
        self.all(&format!("/projects/{project}/pipelines")).await
    }

    /// The latest try of each job of a pipeline.
    pub async fn pipeline_jobs(&self, project: i64, pipeline: i64) -> ClientResult<Vec<Value>> {
        self.all(&format!("/projects/{project}/pipelines/{pipeline}/jobs"))
            .await
    }

    /// `cancel` or `retry` a pipeline.
    pub async fn pipeline_action(
        &self,
        project: i64,
        pipeline: i64,
        action: &str,
    ) -> ClientResult<Value> {
        self.json(
            Method::POST,
            &format!("/projects/{project}/pipelines/{pipeline}/{action}"),
            None,
        )
        .await
    }

    pub async fn job(&self, project: i64, job: i64) -> ClientResult<Value> {
        self.json(
            Method::GET,
            &format!("/projects/{project}/jobs/{job}"),
            None,
        )
        .await
    }

    /// A job's log so far.
    pub async fn job_trace(&self, project: i64, job: i64) -> ClientResult<Vec<u8>> {
        self.bytes(&format!("/projects/{project}/jobs/{job}/trace"))
            .await
    }

    /// A job's artifacts archive; `None` when it has none.
    pub async fn job_artifacts(&self, project: i64, job: i64) -> ClientResult<Option<Vec<u8>>> {
        match self
            .bytes(&format!("/projects/{project}/jobs/{job}/artifacts"))
            .await
        {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `cancel`, `retry`, `play` or `erase` a job.
    pub async fn job_action(&self, project: i64, job: i64, action: &str) -> ClientResult<Value> {
        self.json(
            Method::POST,
            &format!("/projects/{project}/jobs/{job}/{action}"),
            None,
        )
        .await
    }

    /// Runway's `POST /admin/ci/id_tokens/rotate_key`: `{kid}` of the new signing key.
    pub async fn rotate_id_token_key(&self) -> ClientResult<Value> {
        self.json(Method::POST, "/admin/ci/id_tokens/rotate_key", None)
            .await
    }

    /// `POST /user/runners` with GitLab's params; the answer holds the `glrt-` token.
    pub async fn create_runner(&self, params: &Value) -> ClientResult<Value> {
        self.json(Method::POST, "/user/runners", Some(params)).await
    }

    pub async fn runners(&self) -> ClientResult<Vec<Value>> {
        self.all("/runners/all").await
    }

    pub async fn runner(&self, id: i64) -> ClientResult<Value> {
        self.json(Method::GET, &format!("/runners/{id}"), None)
            .await
    }

    pub async fn delete_runner(&self, id: i64) -> ClientResult<()> {
        self.send(Method::DELETE, &format!("/runners/{id}"), None)
            .await
            .map(drop)
    }
}

/// An error with its causes, `a: b: c` (reqwest hides the useful part in the source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_show_gitlabs_message() {
        assert_eq!(
            refusal_message(r#"{"message":"404 Project Not Found"}"#),
            "404 Project Not Found"
        );
        assert_eq!(
            refusal_message(r#"{"error":"token is missing"}"#),
            "token is missing"
        );
        assert_eq!(
            refusal_message(
                r#"{"message":{"base":["jobs config should contain at least one visible job"]}}"#
            ),
            r#"{"base":["jobs config should contain at least one visible job"]}"#
        );
        assert_eq!(refusal_message("bad gateway"), "bad gateway");
    }
}
