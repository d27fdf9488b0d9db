//! Runway: GitLab's runner API without GitLab. This crate builds the whole application, so
//! `main`, the integration tests and the benchmarks all run the same app.

pub mod api;
pub mod auth;
pub mod ci;
pub mod cli;
pub mod client;
pub mod config;
pub mod db;
pub mod error;
pub mod git_http;
pub mod metrics;
pub mod observability;
pub mod pages;
pub mod queue;
pub mod secrets;
pub mod service;
pub mod testing;
pub mod ui;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context;
use utoipa_actix_web::{scope, AppExt, UtoipaApp};

use crate::auth::tokens::{NewToken, TokenDigest};
use crate::config::Settings;
use crate::db::models::InstanceSetting;
use crate::db::DbPool;
use crate::error::ApiError;
use crate::queue::{Dispatcher, Queue};
use crate::service::artifacts::Artifacts;
use crate::service::pipelines::Pipelines;
use crate::service::repos::Repositories;
use crate::service::runners::Runners;
use crate::service::traces::Traces;

/// Shared state of every worker.
pub struct AppState {
    pub db: DbPool,
    pub settings: Settings,
    pub runners: Runners,
    pub queue: Arc<Queue>,
    pub dispatcher: Dispatcher,
    pub pipelines: Pipelines,
    pub repositories: Repositories,
    pub traces: Traces,
    pub artifacts: Arc<Artifacts>,
    pub backoff: service::backoff::Backoff,
    pub metrics: Arc<metrics::Metrics>,
    pub limits: service::limits::Limits,
    pub admin_digest: TokenDigest,
    /// Seals CI/CD variables' values at rest ([`secrets::SecretBox`]).
    pub secrets: secrets::SecretBox,
    /// Signs jobs' `id_tokens` ([`service::id_tokens`]).
    pub id_tokens: service::id_tokens::IdTokens,
    pub registration_digest: Option<TokenDigest>,
    /// Faults armed by the test harness (`runway::testing`); none otherwise.
    pub faults: Arc<api::faults::Faults>,
    /// Signed-in sessions of the web pages (`/-/ui`).
    pub ui_sessions: ui::Sessions,
}

/// Registers every documented route on `app`; used for the server and for the document.
fn routes<T>(app: UtoipaApp<T>) -> UtoipaApp<T>
where
    T: ServiceFactory<ServiceRequest, Config = (), Error = actix_web::Error, InitError = ()>,
{
    app.service(api::health::liveness)
        .service(api::oidc::jwks)
        .service(api::oidc::openid_configuration)
        .service(api::health::readiness)
        .service(api::health::health)
        .service(api::health::metrics)
        .service(api::openapi::document)
        .service(api::docs::index)
        .service(api::docs::asset)
        .service(
            scope::scope("/api/v4")
                .wrap(from_fn(api::params::parse_params))
                .wrap(from_fn(api::runner_backoff))
                // Runner routes first: `/runners/managers` and `/runners/verify` must win
                // over the admin API's `/runners/{id}`.
                .configure(api::runner::runners::configure)
                .configure(api::runner::jobs::configure)
                .configure(api::runner::artifacts::configure)
                .configure(api::admin::configure),
        )
}

/// The OpenAPI document of every route.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let (_, mut doc) =
        routes(App::new().into_utoipa_app().openapi(api::openapi::base())).split_for_parts();
    api::openapi::complete(&mut doc);
    doc
}

/// The application for one worker.
pub fn build_app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let faults = api::faults::InjectFaults(state.faults.clone());
    let (app, _) = routes(App::new().into_utoipa_app().app_data(state)).split_for_parts();
    // The web pages are not API operations: plain routes, outside the OpenAPI document.
    app.configure(ui::configure)
        .configure(pages::configure)
        .configure(git_http::configure)
        .default_service(web::to(|req: actix_web::HttpRequest| async move {
            // A documented path asked with another method: Grape's 405 and `Allow`.
            match api::openapi::allowed_methods(req.path()) {
                Some(allow) => Ok(HttpResponse::MethodNotAllowed()
                    .insert_header((actix_web::http::header::ALLOW, allow))
                    .json(serde_json::json!({ "error": "405 Not Allowed" }))),
                None => Err::<HttpResponse, _>(ApiError::RouteNotFound),
            }
        }))
        .wrap(from_fn(api::runner::jobs::answer_known_poll))
        .wrap(faults)
        .wrap(from_fn(api::paths::normalize))
        .wrap(from_fn(api::hardening::catch_panics))
        .wrap(from_fn(api::hardening::body_deadline))
        .wrap(from_fn(observability::request_context))
}

/// Seconds the server waits for requests in flight when it is told to stop.
pub const SHUTDOWN_TIMEOUT_SECS: u64 = 10;

/// Answers every held job request (204) as soon as the process is told to stop (SIGTERM or
/// SIGINT), so that runners go on to their next poll elsewhere instead of waiting out the
/// shutdown; actix-web stops accepting and finishes the requests in flight meanwhile.
pub fn shut_down_on_signals(state: web::Data<AppState>) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down: answering held job requests");
        state.queue.close();
    });
}

/// A bound, not yet running server.
pub struct Runway {
    pub addr: SocketAddr,
    pub state: web::Data<AppState>,
    /// The admin token, when this start generated it (shown once).
    pub generated_admin_token: Option<String>,
    pub server: actix_web::dev::Server,
}

impl Runway {
    /// Connects to the database (running migrations), binds the listener and builds the
    /// server; `.server` still has to be awaited (or spawned).
    pub async fn build(mut settings: Settings) -> anyhow::Result<Runway> {
        let db = DbPool::connect_with(
            &settings.database_url,
            settings.database_pool_size,
            settings.database_pool_timeout,
        )
        .await?;
        let listener = TcpListener::bind(settings.listen)
            .with_context(|| format!("binding {}", settings.listen))?;
        let addr = listener.local_addr()?;
        let tls = match &settings.tls {
            Some((cert, key)) => Some(tls_config(cert, key)?),
            None => None,
        };
        if settings.external_url_is_default {
            let scheme = if tls.is_some() { "https" } else { "http" };
            settings.external_url = format!("{scheme}://{addr}");
        }
        let (admin_digest, generated_admin_token) = admin_token(&settings, &db).await?;
        let secrets = secrets::SecretBox::load(settings.secret_key.as_deref(), &settings.data_dir)?;
        let id_tokens = service::id_tokens::IdTokens::load(db.clone(), secrets.clone()).await?;
        let queue = Arc::new(Queue::new(settings.long_poll_timeout));
        let metrics = Arc::new(metrics::Metrics::default());
        let local_store = settings.object_store.url.is_none();
        let traces = Traces::new(db.clone(), &settings.data_dir, local_store)?;
        let log_files = traces.files().clone();
        let artifacts = Arc::new(Artifacts::new(
            db.clone(),
            log_files,
            &settings.data_dir,
            &settings.object_store,
            settings.max_artifact_size_bytes,
            settings.default_artifacts_expire_in,
        )?);
        let state = web::Data::new(AppState {
            metrics: metrics.clone(),
            limits: service::limits::Limits::new(
                settings.rate_limit_jobs_request,
                settings.rate_limit_trace,
                settings.rate_limit_job_api,
                settings.rate_limit_failed_auth,
                settings.rate_limit_window,
            ),
            backoff: service::backoff::Backoff::new(db.clone()),
            runners: Runners::new(
                db.clone(),
                settings.heartbeat_interval,
                settings.runner_token_expires_in,
                metrics,
                queue.clone(),
            ),
            dispatcher: Dispatcher::new(db.clone(), queue.clone(), settings.two_phase_commit),
            pipelines: Pipelines::new(
                db.clone(),
                queue.clone(),
                settings.max_pipeline_jobs,
                service::remote::RemoteIncludes {
                    allow_local: settings.include_remote_allow_local,
                },
                Repositories::new(&settings.data_dir, settings.git_allowed_schemes.clone()),
                secrets.clone(),
                artifacts.clone(),
            ),
            repositories: Repositories::new(
                &settings.data_dir,
                settings.git_allowed_schemes.clone(),
            ),
            traces,
            artifacts: artifacts.clone(),
            queue,
            registration_digest: settings.registration_token.as_deref().map(TokenDigest::of),
            admin_digest,
            secrets,
            id_tokens,
            faults: Default::default(),
            ui_sessions: Default::default(),
            db,
            settings,
        });
        state.traces.sweep().await?;
        spawn_reaper(state.clone());
        // Each mirrored project's upstream when its interval is up (its own
        // `mirror_interval`, else `RUNWAY_MIRROR_INTERVAL`), and due schedules.
        spawn_every_second(state.clone(), |s| Box::pin(pull_mirrors(s)));
        spawn_every_second(state.clone(), |s| Box::pin(run_schedules(s)));
        spawn_every_second(state.clone(), |s| Box::pin(start_waiting_jobs(s)));
        spawn_every_second(state.clone(), |s| Box::pin(survey_queue(s)));
        if state.db.backend() == db::Backend::Postgres {
            queue::listen::spawn(state.settings.database_url.clone(), state.queue.clone());
        }
        let workers = state.settings.workers;
        let app_state = state.clone();
        let server = HttpServer::new(move || build_app(app_state.clone()))
            .workers(workers)
            // On SIGTERM/SIGINT: stop accepting, let requests in flight finish (held polls
            // are answered at once, see `shut_down_on_signals`), then stop, bounded.
            .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS);
        let server = match tls {
            Some(config) => server.listen_rustls_0_23(listener, config)?,
            None => server.listen(listener)?,
        }
        .run();
        Ok(Runway {
            addr,
            state,
            generated_admin_token,
            server,
        })
    }
}

/// The TLS configuration from PEM files: the certificate chain (leaf first) and its key.
fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading certificates from {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "no certificate in {}", cert.display());
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading a private key from {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the certificate and key do not make a TLS configuration")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// How often the local artifact store is walked for uploads a crash left unfinished
/// (this instance's at start, or another's sharing the folder).
const STAGING_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Ends jobs nothing will finish (timeouts, silent runners), every 30 s at most, until
/// the server stops; archives logs, expires artifacts, deletes pipelines past their
/// retention ([`service::retention`]), prunes finished pipelines'
/// `refs/pipelines/<id>`, and — at start, then hourly —
/// sweeps unfinished uploads (in the background: the walk of a large store does not hold
/// up serving).
fn spawn_reaper(state: web::Data<AppState>) {
    let period = (state.settings.stuck_job_timeout / 4).min(std::time::Duration::from_secs(30));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut staging_swept: Option<std::time::Instant> = None;
        let mut refs_pruned: Option<chrono::NaiveDateTime> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                // The server is stopping: no more passes (and the state is let go).
                _ = state.queue.closed() => return,
            }
            let full = staging_swept.is_none_or(|at| at.elapsed() >= STAGING_SWEEP_EVERY);
            // Every repository at start and hourly, else those where a pipeline finished
            // since the last pass (a minute back: a transaction commits after its clock).
            let pass_at = crate::db::models::now();
            let since = refs_pruned
                .filter(|_| !full)
                .map(|at| at - chrono::TimeDelta::minutes(1));
            match state.pipelines.prune_refs(since).await {
                Ok(_) => refs_pruned = Some(pass_at),
                Err(e) => tracing::error!(error = %e, "pruning refs/pipelines failed"),
            }
            if full {
                staging_swept = Some(std::time::Instant::now());
                if let Err(e) = state.artifacts.sweep_staging().await {
                    tracing::error!(error = %e, "sweeping unfinished uploads failed");
                }
                if let Err(e) = state.artifacts.sweep_orphans().await {
                    tracing::error!(error = %e, "sweeping objects without rows failed");
                }
            }
            // Another instance may have rotated the ID token signing key.
            if let Err(e) = state.id_tokens.refresh().await {
                tracing::error!(error = %e, "reading the ID token signing keys failed");
            }
            if let Err(e) = state.pipelines.reap(state.settings.stuck_job_timeout).await {
                tracing::error!(error = %e, "reaping stuck jobs failed");
            }
            if let Err(e) = state.artifacts.archive_traces().await {
                tracing::error!(error = %e, "archiving job logs failed");
            }
            state.limits.prune();
            state.traces.prune();
            state.runners.prune();
            if let Err(e) = state.artifacts.expire().await {
                tracing::error!(error = %e, "expiring artifacts failed");
            }
            match service::retention::delete_old_pipelines(&state).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pipelines = n, "deleted pipelines past their retention"),
                Err(e) => tracing::error!(error = %e, "deleting old pipelines failed"),
            }
        }
    });
}

/// Calls `pass` every second, until the server stops: the mirror puller
/// ([`pull_mirrors`]), the scheduler ([`service::schedules::run_due`]), delayed jobs
/// and resource groups ([`start_waiting_jobs`]) and the queue's survey ([`survey_queue`]).
fn spawn_every_second<F>(state: web::Data<AppState>, pass: F)
where
    F: for<'a> Fn(&'a AppState) -> futures_util::future::BoxFuture<'a, ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = state.queue.closed() => return,
            }
            pass(&state).await;
        }
    });
}

/// Queues delayed jobs whose time has come, stops environments past their `auto_stop_in`,
/// and assigns free resource groups to their waiting jobs (after a crash, or where the
/// assignment after a change failed).
async fn start_waiting_jobs(state: &AppState) {
    if let Err(e) = state.pipelines.enqueue_scheduled().await {
        tracing::error!(error = %e, "queueing delayed jobs failed");
    }
    if let Err(e) = state.pipelines.stop_expired_environments().await {
        tracing::error!(error = %e, "stopping environments past their auto_stop_in failed");
    }
    match service::resource_groups::assign_all(&state.db).await {
        Ok(true) => state.queue.bump(),
        Ok(false) => {}
        Err(e) => tracing::error!(error = %e, "assigning resource groups failed"),
    }
}

/// Keeps the queue's known jobs fresh while polls are held ([`queue::Dispatcher::survey`]).
async fn survey_queue(state: &AppState) {
    if let Err(e) = state.dispatcher.survey().await {
        tracing::error!(error = %e, "reading the queue failed");
    }
}

/// Runs due pipeline schedules ([`service::schedules::run_due`]).
async fn run_schedules(state: &AppState) {
    if let Err(e) = service::schedules::run_due(state).await {
        tracing::error!(error = %e, "running due pipeline schedules failed");
    }
}

/// Pulls the mirrored projects whose interval is up ([`service::pushes::pull`]). Each due
/// pull is claimed in the database first, so that of several instances one pulls.
async fn pull_mirrors(state: &AppState) {
    let projects = match state.db.read().await {
        Ok(mut db) => crate::db::models::Project::all(&mut db.conn()).await,
        Err(e) => {
            tracing::error!(error = %e, "listing projects to pull");
            return;
        }
    };
    let at = crate::db::models::now();
    for project in projects.into_iter().flatten() {
        let Some(every) = project.mirror_every(state.settings.mirror_interval) else {
            continue;
        };
        let every = chrono::TimeDelta::from_std(every).unwrap_or(chrono::TimeDelta::MAX);
        if project
            .mirror_pulled_at
            .is_some_and(|last| last.checked_add_signed(every).is_none_or(|due| due > at))
        {
            continue;
        }
        match claim_mirror_pull(state, &project, at).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::error!(project_id = project.id, error = %e, "claiming a mirror pull");
                continue;
            }
        }
        if let Err(e) = service::pushes::pull(state, &project).await {
            tracing::info!(project_id = project.id, error = %e, "pulling the mirror failed");
        }
    }
}

/// Claims `project`'s due pull for this instance ([`crate::db::models::Project::claim_mirror_pull`]).
async fn claim_mirror_pull(
    state: &AppState,
    project: &crate::db::models::Project,
    at: chrono::NaiveDateTime,
) -> crate::error::ApiResult<bool> {
    let mut db = state.db.write().await?;
    let seen = project.mirror_pulled_at;
    Ok(crate::db::models::Project::claim_mirror_pull(&mut db.conn(), project.id, seen, at).await?)
}

/// The admin token's digest: from the settings, or generated on the first start and kept
/// (as a digest) in the database, so later starts accept the same token.
async fn admin_token(
    settings: &Settings,
    db: &DbPool,
) -> anyhow::Result<(TokenDigest, Option<String>)> {
    if let Some(token) = &settings.admin_token {
        return Ok((TokenDigest::of(token), None));
    }
    const KEY: &str = "admin_token_digest";
    let mut conn = db.write().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let new = NewToken::generate("glpat-");
    if InstanceSetting::insert_if_absent(&mut conn.conn(), KEY, &new.digest.to_hex()).await? {
        return Ok((new.digest, Some(new.token)));
    }
    let stored = InstanceSetting::get(&mut conn.conn(), KEY)
        .await?
        .context("admin token digest vanished")?;
    let digest = TokenDigest::from_hex(&stored).context("stored admin token digest is corrupt")?;
    Ok((digest, None))
}
