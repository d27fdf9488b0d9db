//! Releases, as GitLab's `lib/api/releases.rb`: a project's releases by tag, made by the
//! admin or by a running job of the project with its token — what a `release:` job's
//! `release-cli create` (or `glab release create`) sends.

use actix_web::http::StatusCode;
use actix_web::{delete, get, post, put, web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use crate::api::admin::audit::record_admin_action;
use crate::api::admin::page_of;
use crate::api::admin::projects::find_project;
use crate::api::format_time;
use crate::api::params::{params_of, Check, FromParams, Params, Validated};
use crate::auth::AdminOrJobAuth;
use crate::db::models::release::{Release, ReleaseFields};
use crate::db::models::{now, Pipeline, Project};
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// `Entities::Release`, its assets' links with GitLab's `direct_asset_url`.
fn release_json(state: &AppState, project: &Project, r: &Release) -> Value {
    let base = state.settings.external_url.trim_end_matches('/');
    let path = project.path_with_namespace();
    let links: Vec<Value> = serde_json::from_str::<Vec<Value>>(&r.links)
        .unwrap_or_default()
        .into_iter()
        .map(|mut link| {
            let direct = match link["direct_asset_path"].as_str() {
                Some(p) => format!("{base}/{path}/-/releases/{}/downloads{p}", r.tag_name),
                None => link["url"].as_str().unwrap_or_default().to_string(),
            };
            link["direct_asset_url"] = json!(direct);
            link
        })
        .collect();
    json!({
        "name": r.name,
        "tag_name": r.tag_name,
        "description": r.description,
        "created_at": format_time(&r.created_at),
        "released_at": format_time(&r.released_at),
        "upcoming_release": r.released_at > now(),
        "author": { "id": 1, "username": "root", "name": "Administrator", "state": "active", "web_url": format!("{base}/root") },
        "commit": { "id": r.sha, "short_id": r.sha.chars().take(8).collect::<String>() },
        "commit_path": format!("/{path}/-/commit/{}", r.sha),
        "tag_path": format!("/{path}/-/tags/{}", r.tag_name),
        "assets": { "count": links.len(), "sources": [], "links": links },
        "evidences": [],
        "_links": { "self": format!("{base}/{path}/-/releases/{}", r.tag_name) },
    })
}

/// Params of a create or an update (`assets:links` as JSON or GitLab's form arrays).
#[derive(Debug, ToSchema)]
pub struct ReleaseParams {
    pub tag_name: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    /// The commit or branch a new tag is made from (a new tag only).
    #[schema(rename = "ref")]
    pub ref_: Option<String>,
    /// ISO 8601; now when absent.
    pub released_at: Option<String>,
    /// `{links: [{name, url, link_type, direct_asset_path}]}`.
    #[schema(value_type = Option<Object>)]
    pub assets: Option<Map<String, Value>>,
    /// Runway has no milestones: any given is refused, as GitLab refuses unknown ones.
    pub milestones: Option<Vec<String>>,
}

impl FromParams for ReleaseParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let mut c = Check::new(params);
        let p = ReleaseParams {
            tag_name: c.str_max("tag_name", 255),
            name: c.str_max("name", 255),
            description: c.str_max("description", 1_000_000),
            ref_: c.str_max("ref", 255),
            released_at: c.str("released_at"),
            assets: c.object("assets"),
            milestones: c.tags("milestones"),
        };
        c.finish()?;
        Ok(p)
    }
}

/// The links of `assets:links`, each with an id; GitLab's 400 when one lacks its name
/// or URL, or has an unknown `link_type`.
fn links_of(assets: Option<&Map<String, Value>>) -> ApiResult<Vec<Value>> {
    let Some(links) = assets.and_then(|a| a.get("links")) else {
        return Ok(Vec::new());
    };
    let items: Vec<Value> = match links {
        Value::Array(items) => items.clone(),
        // GitLab's form arrays (`assets[links][][name]`) come as a hash of indexes.
        Value::Object(map) => map.values().cloned().collect(),
        _ => return Err(ApiError::InvalidParams("assets[links] is invalid".into())),
    };
    if items.len() > 100 {
        return Err(ApiError::InvalidParams(
            "assets[links] is too long (maximum is 100)".into(),
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, link) in items.iter().enumerate() {
        let text = |key: &str| link.get(key).and_then(Value::as_str).map(str::to_string);
        let (Some(name), Some(url)) = (text("name"), text("url")) else {
            return Err(ApiError::InvalidParams(
                "assets[links][name], assets[links][url] are missing".into(),
            ));
        };
        if !(url.starts_with("http://") || url.starts_with("https://") || url.starts_with("ftp://"))
        {
            return Err(ApiError::Validation(
                json!({ "links.url": ["is blocked: Only allowed schemes are http, https, ftp"] }),
            ));
        }
        let link_type = text("link_type").unwrap_or_else(|| "other".into());
        if !["other", "runbook", "image", "package"].contains(&link_type.as_str()) {
            return Err(ApiError::InvalidParams(
                "assets[links][link_type] does not have a valid value".into(),
            ));
        }
        let path = text("direct_asset_path").or_else(|| text("filepath"));
        out.push(json!({
            "id": i + 1,
            "name": name,
            "url": url,
            "link_type": link_type,
            "direct_asset_path": path,
        }));
    }
    Ok(out)
}

fn released_at(given: Option<&str>) -> ApiResult<chrono::NaiveDateTime> {
    match given {
        None => Ok(now()),
        Some(text) => chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.naive_utc())
            .map_err(|_| ApiError::InvalidParams("released_at is invalid".into())),
    }
}

/// A project's releases, the latest first.
#[utoipa::path(tag = "releases", operation_id = "list_releases", params(("id" = String, Path)),
    security(("private_token" = []), ("job_token" = [])),
    responses((status = 200, description = "releases"), (status = 404, description = "no such project")))]
#[get("/projects/{id}/releases")]
pub async fn list_releases(
    auth: AdminOrJobAuth,
    id: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let project = find_project(&state, &id).await?;
    auth.may_act_on(project.id)?;
    let page = page_of(&params_of(&req)?)?;
    let releases = {
        let mut db = state.db.read().await?;
        Release::for_project(&mut db.conn(), project.id).await?
    };
    let shown = releases
        .iter()
        .map(|r| release_json(&state, &project, r))
        .collect();
    Ok(page.respond(&req, shown))
}

async fn find_release(state: &AppState, project: &Project, tag: &str) -> ApiResult<Release> {
    let mut db = state.db.read().await?;
    Release::find(&mut db.conn(), project.id, tag)
        .await?
        .ok_or(ApiError::NotFound(None))
}

/// One release, by its tag.
#[utoipa::path(tag = "releases", operation_id = "get_release",
    params(("id" = String, Path), ("tag_name" = String, Path)), security(("private_token" = []), ("job_token" = [])),
    responses((status = 200, description = "the release"), (status = 404, description = "no such release")))]
#[get("/projects/{id}/releases/{tag_name}")]
pub async fn get_release(
    auth: AdminOrJobAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, tag) = path.into_inner();
    let project = find_project(&state, &id).await?;
    auth.may_act_on(project.id)?;
    let release = find_release(&state, &project, &tag).await?;
    Ok(HttpResponse::Ok().json(release_json(&state, &project, &release)))
}

/// Make a release of a tag: the tag's commit in the project's repository, else `ref`'s,
/// else (from a job) the job's commit.
#[utoipa::path(tag = "releases", operation_id = "create_release", params(("id" = String, Path)),
    request_body(content = ReleaseParams, content_type = "application/json",
        example = json!({ "tag_name": "v1.2.0", "name": "Release 1.2.0", "description": "Notes", "assets": { "links": [{ "name": "linux", "url": "https://example.com/app-linux" }] } })),
    security(("private_token" = []), ("job_token" = [])),
    responses((status = 201, description = "the release"), (status = 400, description = "bad params"),
              (status = 404, description = "no such project"), (status = 409, description = "Release already exists"),
              (status = 422, description = "Ref is not specified")))]
#[post("/projects/{id}/releases")]
pub async fn create_release(
    params: Validated<ReleaseParams>,
    auth: AdminOrJobAuth,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let project = find_project(&state, &id).await?;
    auth.may_act_on(project.id)?;
    let p = params.0;
    let Some(tag) = p.tag_name.filter(|t| !t.is_empty()) else {
        return Err(ApiError::InvalidParams("tag_name is missing".into()));
    };
    if let Some(milestone) = p.milestones.as_ref().and_then(|m| m.first()) {
        return Err(ApiError::Render(
            StatusCode::BAD_REQUEST,
            format!("Milestone(s) not found: {milestone}").into(),
        ));
    }
    let links = links_of(p.assets.as_ref())?;
    // The commit: the tag's where the repository has it, else `ref`'s, else the job's.
    let mut sha = None;
    for name in [Some(tag.as_str()), p.ref_.as_deref()]
        .into_iter()
        .flatten()
    {
        if let Ok(Some((found, _, _))) = state.repositories.commit(&project, name, None).await {
            sha = Some(found);
            break;
        }
    }
    if sha.is_none() {
        if let Some(job) = auth.job() {
            let mut db = state.db.read().await?;
            sha = Pipeline::find(&mut db.conn(), job.pipeline_id)
                .await?
                .map(|p| p.sha);
        }
    }
    let sha = match (sha, &p.ref_) {
        (Some(sha), _) => sha,
        (None, Some(r)) if r.len() == 40 && r.chars().all(|c| c.is_ascii_hexdigit()) => r.clone(),
        (None, Some(_)) => {
            return Err(ApiError::Render(
                StatusCode::BAD_REQUEST,
                "Ref is invalid".into(),
            ))
        }
        (None, None) => {
            return Err(ApiError::Render(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Ref is not specified".into(),
            ));
        }
    };
    let at = now();
    let fields = ReleaseFields {
        name: p.name.unwrap_or_else(|| tag.clone()),
        description: p.description.unwrap_or_default(),
        links: Value::Array(links).to_string(),
        released_at: released_at(p.released_at.as_deref())?,
        updated_at: at,
    };
    let created = {
        let mut db = state.db.write().await?;
        Release::create(&mut db.conn(), project.id, &tag, &sha, &fields).await?
    };
    let Some(release) = created else {
        return Err(ApiError::Render(
            StatusCode::CONFLICT,
            "Release already exists".into(),
        ));
    };
    let by = auth.job().map(|j| j.id);
    record_admin_action(
        &state,
        "release_created",
        "Release",
        release.id,
        json!({ "project_id": project.id, "tag_name": tag, "job_id": by }),
    )
    .await;
    Ok(HttpResponse::Created().json(release_json(&state, &project, &release)))
}

/// Change a release's name, description, date or links.
#[utoipa::path(tag = "releases", operation_id = "update_release",
    params(("id" = String, Path), ("tag_name" = String, Path)),
    request_body(content = ReleaseParams, content_type = "application/json", example = json!({ "description": "Updated notes" })),
    security(("private_token" = []), ("job_token" = [])),
    responses((status = 200, description = "the release"), (status = 404, description = "no such release")))]
#[put("/projects/{id}/releases/{tag_name}")]
pub async fn update_release(
    params: Validated<ReleaseParams>,
    auth: AdminOrJobAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, tag) = path.into_inner();
    let project = find_project(&state, &id).await?;
    auth.may_act_on(project.id)?;
    let release = find_release(&state, &project, &tag).await?;
    let p = params.0;
    let links = match &p.assets {
        Some(_) => Value::Array(links_of(p.assets.as_ref())?).to_string(),
        None => release.links.clone(),
    };
    let fields = ReleaseFields {
        name: p.name.unwrap_or(release.name.clone()),
        description: p.description.unwrap_or(release.description.clone()),
        links,
        released_at: match p.released_at.as_deref() {
            Some(t) => released_at(Some(t))?,
            None => release.released_at,
        },
        updated_at: now(),
    };
    {
        let mut db = state.db.write().await?;
        Release::update(&mut db.conn(), release.id, &fields).await?;
    }
    let release = find_release(&state, &project, &tag).await?;
    Ok(HttpResponse::Ok().json(release_json(&state, &project, &release)))
}

/// Delete a release (the tag stays).
#[utoipa::path(tag = "releases", operation_id = "delete_release",
    params(("id" = String, Path), ("tag_name" = String, Path)), security(("private_token" = []), ("job_token" = [])),
    responses((status = 200, description = "the deleted release"), (status = 404, description = "no such release")))]
#[delete("/projects/{id}/releases/{tag_name}")]
pub async fn delete_release(
    auth: AdminOrJobAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, tag) = path.into_inner();
    let project = find_project(&state, &id).await?;
    auth.may_act_on(project.id)?;
    let release = find_release(&state, &project, &tag).await?;
    {
        let mut db = state.db.write().await?;
        Release::delete(&mut db.conn(), release.id).await?;
    }
    record_admin_action(
        &state,
        "release_deleted",
        "Release",
        release.id,
        json!({ "project_id": project.id, "tag_name": tag }),
    )
    .await;
    Ok(HttpResponse::Ok().json(release_json(&state, &project, &release)))
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(list_releases)
        .service(get_release)
        .service(create_release)
        .service(update_release)
        .service(delete_release);
}
