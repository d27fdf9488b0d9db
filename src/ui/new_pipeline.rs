//! The new-pipeline form: a project, a ref, an optional commit, variables, and the
//! `.gitlab-ci.yml` pasted or uploaded. It checks its fields as the admin API's
//! `POST /projects/:id/pipeline` does (the same [`CreatePipelineParams`]) and starts the
//! pipeline through the same service call, with GitLab's `web` source.

use actix_web::http::header::CONTENT_TYPE;
use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::html::{self, escape, page, page_response};
use super::pages::{ok, project_by_id, see_other, Page};
use super::{UiError, UiSession, FORM_LIMIT};
use crate::api::admin::audit::record_admin_action;
use crate::api::admin::projects::{pipeline_request, CreatePipelineParams};
use crate::api::params::{FromParams, Params};
use crate::db::models::Project;
use crate::error::ApiError;
use crate::AppState;

/// Empty variable rows the form offers (the script adds more).
const EMPTY_VARIABLE_ROWS: usize = 3;

/// What the form holds: shown again, with the reason, when the pipeline is refused.
#[derive(Debug, Default, PartialEq, Eq)]
struct Filled {
    csrf: String,
    project: Option<i64>,
    ref_: String,
    sha: String,
    ci_config: String,
    /// The uploaded file's text, when one was chosen.
    ci_file: Option<String>,
    variables: Vec<(String, String)>,
}

impl Filled {
    /// The form's fields in order (`var_key`/`var_value` pair up by position).
    fn from_fields(fields: Vec<(String, String)>) -> Result<Filled, ApiError> {
        let mut filled = Filled::default();
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        // Refused before the database, as the API refuses it (PostgreSQL stores no NUL).
        if fields
            .iter()
            .any(|(n, v)| n.contains('\0') || v.contains('\0'))
        {
            return Err(ApiError::BadRequest(crate::api::params::NULL_BYTE.into()));
        }
        for (name, value) in fields {
            match name.as_str() {
                "csrf" => filled.csrf = value,
                "project" => {
                    filled.project =
                        Some(value.trim().parse().map_err(|_| {
                            ApiError::BadRequest("project is not a project id".into())
                        })?)
                }
                "ref" => filled.ref_ = value,
                "sha" => filled.sha = value,
                "ci_config" => filled.ci_config = value.replace("\r\n", "\n"),
                "ci_file" if !value.is_empty() => {
                    filled.ci_file = Some(value.replace("\r\n", "\n"))
                }
                "var_key" => keys.push(value),
                "var_value" => values.push(value),
                _ => {}
            }
        }
        values.resize(keys.len().max(values.len()), String::new());
        keys.resize(values.len(), String::new());
        filled.variables = keys
            .into_iter()
            .zip(values)
            .filter(|(k, v)| !(k.trim().is_empty() && v.is_empty()))
            .collect();
        Ok(filled)
    }

    /// The admin API's parameters for this form: the same checks, the same meaning.
    fn params(&self) -> Result<CreatePipelineParams, ApiError> {
        let ci_config = match (&self.ci_file, self.ci_config.trim().is_empty()) {
            (Some(_), false) => {
                return Err(ApiError::BadRequest(
                    "Paste the .gitlab-ci.yml or upload it, not both.".into(),
                ))
            }
            (Some(file), true) => Some(file.clone()),
            (None, false) => Some(self.ci_config.clone()),
            (None, true) => None,
        };
        let mut map = Map::new();
        map.insert("ref".into(), json!(self.ref_.trim()));
        if !self.sha.trim().is_empty() {
            map.insert("sha".into(), json!(self.sha.trim()));
        }
        if let Some(ci_config) = ci_config {
            map.insert("ci_config".into(), json!(ci_config));
        }
        let variables: Vec<Value> = self
            .variables
            .iter()
            .map(|(key, value)| json!({ "key": key.trim(), "value": value }))
            .collect();
        map.insert("variables".into(), Value::Array(variables));
        CreatePipelineParams::from_params(&Params(map))
    }
}

/// The fields of a urlencoded or a multipart form (a file's content as text), at most
/// [`FORM_LIMIT`] bytes in all.
async fn read_fields(
    req: &HttpRequest,
    body: web::Payload,
) -> Result<Vec<(String, String)>, UiError> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("multipart/form-data") {
        let bytes = body
            .to_bytes_limited(FORM_LIMIT)
            .await
            .map_err(|_| ApiError::PayloadTooLarge)?
            .map_err(|e| ApiError::BadRequest(e.to_string().into()))?;
        return Ok(serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| ApiError::BadRequest(e.to_string().into()))?);
    }
    let mut form = actix_multipart::Multipart::new(req.headers(), body);
    let (mut fields, mut total) = (Vec::new(), 0usize);
    while let Some(field) = form.next().await {
        let mut field =
            field.map_err(|e| ApiError::BadRequest(format!("invalid form: {e}").into()))?;
        let name = field.name().unwrap_or_default().to_string();
        let mut data = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|_| ApiError::BadRequest("the form was cut off".into()))?;
            total += chunk.len();
            if total > FORM_LIMIT {
                return Err(ApiError::PayloadTooLarge.into());
            }
            data.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(data)
            .map_err(|_| ApiError::BadRequest(format!("{name} is not UTF-8 text").into()))?;
        fields.push((name, text));
    }
    Ok(fields)
}

fn variable_row(key: &str, value: &str) -> String {
    format!(
        "<div class=\"var\"><input name=\"var_key\" value=\"{}\" aria-label=\"Variable key\" placeholder=\"KEY\" \
         autocomplete=\"off\" spellcheck=\"false\"><input name=\"var_value\" value=\"{}\" aria-label=\"Variable value\" \
         placeholder=\"value\" autocomplete=\"off\" spellcheck=\"false\"></div>",
        escape(key),
        escape(value)
    )
}

fn form_html(
    session: &UiSession,
    projects: &[Project],
    filled: &Filled,
    error: Option<&str>,
) -> String {
    let options: String = projects
        .iter()
        .map(|p| {
            let selected = if Some(p.id) == filled.project {
                " selected"
            } else {
                ""
            };
            format!(
                "<option value=\"{}\"{selected}>{}</option>",
                p.id,
                escape(&p.path_with_namespace())
            )
        })
        .collect();
    let alert = error.map_or(String::new(), |e| {
        format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e))
    });
    let mut rows: String = filled
        .variables
        .iter()
        .map(|(k, v)| variable_row(k, v))
        .collect();
    for _ in 0..EMPTY_VARIABLE_ROWS
        .saturating_sub(filled.variables.len())
        .max(1)
    {
        rows.push_str(&variable_row("", ""));
    }
    format!(
        "<h1>New pipeline</h1>{alert}<form method=\"post\" action=\"/-/ui/pipelines\" enctype=\"multipart/form-data\" class=\"card\">{csrf}\
         <label for=\"project\">Project</label><select id=\"project\" name=\"project\" required>{options}</select>\
         <label for=\"ref\">Ref (branch or tag)</label><input id=\"ref\" name=\"ref\" value=\"{ref_}\" required>\
         <label for=\"sha\">Commit SHA (optional)</label>\
         <input id=\"sha\" name=\"sha\" value=\"{sha}\" maxlength=\"64\" spellcheck=\"false\" autocomplete=\"off\" \
         aria-describedby=\"sha-hint\"><span id=\"sha-hint\" class=\"hint\">Empty: the ref's head (or, for pasted text, an id made from it).</span>\
         <fieldset id=\"variables\"><legend>Variables</legend>{rows}\
         <button type=\"button\" id=\"add-variable\" class=\"secondary\" hidden>Add a variable</button></fieldset>\
         <label for=\"ci_config\">.gitlab-ci.yml</label>\
         <textarea id=\"ci_config\" name=\"ci_config\" rows=\"16\" spellcheck=\"false\" \
         placeholder=\"Leave empty to read .gitlab-ci.yml from the repository at the ref\">{ci}</textarea>\
         <label for=\"ci_file\">…or upload it</label>\
         <input id=\"ci_file\" name=\"ci_file\" type=\"file\" accept=\".yml,.yaml,text/yaml,text/plain\">\
         <button type=\"submit\">Run pipeline</button></form>",
        csrf = html::csrf_field(&session.csrf),
        ref_ = escape(&filled.ref_),
        sha = escape(&filled.sha),
        ci = escape(&filled.ci_config),
    )
}

async fn all_projects(state: &AppState) -> Result<Vec<Project>, UiError> {
    let mut db = state.db.read().await.map_err(ApiError::from)?;
    Ok(Project::all(&mut db.conn()).await.map_err(ApiError::from)?)
}

#[derive(Deserialize, Default)]
pub struct NewPipelineQuery {
    project: Option<i64>,
}

#[get("/pipelines/new")]
async fn new_pipeline(
    session: UiSession,
    query: web::Query<NewPipelineQuery>,
    state: web::Data<AppState>,
) -> Page {
    let projects = all_projects(&state).await?;
    if projects.is_empty() {
        return ok(
            "New pipeline",
            &session,
            "<h1>New pipeline</h1><p>Create a project first (<code>POST /api/v4/projects</code>).</p>",
        );
    }
    let ref_ = projects
        .iter()
        .find(|p| Some(p.id) == query.project)
        .map_or("main", |p| p.default_branch.as_str());
    let filled = Filled {
        project: query.project,
        ref_: ref_.to_string(),
        ..Filled::default()
    };
    ok(
        "New pipeline",
        &session,
        &form_html(&session, &projects, &filled, None),
    )
}

/// Starts a pipeline as the admin API does (`source` `web`, as GitLab's pages set it); a
/// refused form shows again with the reason and what was filled in.
#[post("/pipelines")]
async fn create_pipeline(
    session: UiSession,
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Page {
    let filled = Filled::from_fields(read_fields(&req, body).await?)?;
    session.check(&filled.csrf)?;
    let project_id = filled
        .project
        .ok_or_else(|| ApiError::BadRequest("pick a project".into()))?;
    let project = project_by_id(&state, project_id).await?;
    let created = match filled.params() {
        Ok(params) => match pipeline_request(&state, &project, params, "web").await {
            Ok(request) => state.pipelines.create(&project, request).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let pipeline = match created {
        Ok(pipeline) => pipeline,
        Err(e) if actix_web::ResponseError::status_code(&e).is_client_error() => {
            let projects = all_projects(&state).await?;
            let main = form_html(&session, &projects, &filled, Some(&super::message_of(&e)));
            return Ok(page_response(
                StatusCode::BAD_REQUEST,
                page("New pipeline", Some(&session.csrf), &main),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let details = json!({ "project_id": project.id, "ref": pipeline.ref_, "sha": pipeline.sha, "via": "web" });
    record_admin_action(&state, "pipeline_created", "pipeline", pipeline.id, details).await;
    see_other(&format!(
        "/-/ui/projects/{}/pipelines/{}",
        project.id, pipeline.id
    ))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(new_pipeline).service(create_pipeline);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn variable_rows_pair_up_and_empty_ones_are_dropped() {
        let filled = Filled::from_fields(fields(&[
            ("var_key", "A"),
            ("var_value", "1"),
            ("var_key", ""),
            ("var_value", ""),
            ("var_key", "B"),
            ("var_value", "x y"),
            ("var_key", ""),
            ("var_value", "orphan"),
        ]))
        .expect("fields");
        assert_eq!(
            filled.variables,
            [
                ("A".into(), "1".into()),
                ("B".into(), "x y".into()),
                ("".into(), "orphan".into())
            ]
        );
        assert!(Filled::from_fields(fields(&[("project", "x")])).is_err());
    }

    #[test]
    fn the_form_becomes_the_apis_params() {
        let filled = Filled {
            ref_: " main ".into(),
            sha: "abc".into(),
            ci_file: Some("a: { script: x }\n".into()),
            variables: vec![("K".into(), "v".into())],
            ..Filled::default()
        };
        let params = filled.params().expect("params");
        assert_eq!(
            (params.ref_.as_str(), params.sha.as_deref()),
            ("main", Some("abc"))
        );
        assert_eq!(params.ci_config.as_deref(), Some("a: { script: x }\n"));
        assert_eq!(
            (
                params.variables[0].key.as_str(),
                params.variables[0].value.as_str()
            ),
            ("K", "v")
        );
        let both = Filled {
            ci_config: "b: { script: y }".into(),
            ..filled
        };
        assert!(both.params().is_err(), "pasted and uploaded: which one?");
        let long_sha = Filled {
            ref_: "main".into(),
            sha: "f".repeat(65),
            ..Filled::default()
        };
        assert!(long_sha.params().is_err(), "the API's check on sha");
    }
}
