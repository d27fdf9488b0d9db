//! `runway pipeline run|follow|list|show|cancel|retry`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use super::follow::Follower;
use super::{exit, project_path, ServerArgs};
use crate::client::AdminClient;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes of run and follow: 0 the pipeline succeeded, 1 it failed, \
    2 it was canceled, 3 an error (server unreachable, token or configuration refused, \
    timeout), 130 interrupted."
)]
pub struct PipelineArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(subcommand)]
    pub command: PipelineCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum PipelineCommand {
    /// Create a pipeline from a .gitlab-ci.yml and follow it, printing each job's log as
    /// it runs, until it ends. Ctrl-C cancels the pipeline (twice: stop following).
    Run {
        /// The CI configuration (`-`: standard input).
        #[arg(long, short, default_value = ".gitlab-ci.yml")]
        file: PathBuf,
        /// Project the pipeline belongs to, created if missing (default: the current
        /// folder's name).
        #[arg(long, short)]
        project: Option<String>,
        /// Branch the pipeline runs for.
        #[arg(long = "ref", default_value = "main")]
        git_ref: String,
        /// A pipeline variable, `KEY=VALUE` (repeatable).
        #[arg(long = "variable", short = 'v', value_name = "KEY=VALUE")]
        variables: Vec<String>,
        /// Give up following after this many seconds (exit 3; the pipeline goes on).
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Follow an existing pipeline until it ends, as `run` does.
    Follow {
        id: i64,
        #[arg(long, short)]
        project: Option<String>,
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// A project's pipelines, newest first.
    List {
        /// Default: the current folder's name.
        #[arg(long, short)]
        project: Option<String>,
    },
    /// A pipeline's status and its jobs.
    Show {
        id: i64,
        #[arg(long, short)]
        project: Option<String>,
    },
    /// Cancel a pipeline's unfinished jobs.
    Cancel {
        id: i64,
        #[arg(long, short)]
        project: Option<String>,
    },
    /// Retry a pipeline's failed and canceled jobs.
    Retry {
        id: i64,
        #[arg(long, short)]
        project: Option<String>,
    },
}

/// Runs the command; its exit code.
pub async fn command(args: PipelineArgs) -> anyhow::Result<i32> {
    let client = args.server.client()?;
    match args.command {
        PipelineCommand::Run {
            file,
            project,
            git_ref,
            variables,
            timeout,
        } => {
            let ci_config = read_config(&file)?;
            let variables = variables
                .iter()
                .map(|v| match v.split_once('=') {
                    Some((key, value)) if !key.is_empty() => Ok((key.into(), value.into())),
                    _ => anyhow::bail!("variable {v:?} is not KEY=VALUE"),
                })
                .collect::<anyhow::Result<Vec<(String, String)>>>()?;
            let path = project.map_or_else(default_project, |p| project_path(&p));
            let project = client.ensure_project(&path).await?;
            let project_id = id_of(&project)?;
            let pipeline = client
                .create_pipeline(project_id, &git_ref, &ci_config, &variables)
                .await?;
            let pipeline_id = id_of(&pipeline)?;
            eprintln!(
                "==> pipeline {pipeline_id} of {} on {git_ref}: {}",
                project["path_with_namespace"].as_str().unwrap_or(&path),
                pipeline["status"].as_str().unwrap_or("?")
            );
            follow(
                client,
                project_id,
                pipeline_id,
                timeout.map(Duration::from_secs),
            )
            .await
        }
        PipelineCommand::Follow {
            id,
            project,
            timeout,
        } => {
            let project = locate(&client, project.as_deref(), id).await?;
            follow(client, project, id, timeout.map(Duration::from_secs)).await
        }
        PipelineCommand::List { project } => {
            let path = project.map_or_else(default_project, |p| project_path(&p));
            let project = client
                .find_project(&path)
                .await?
                .with_context(|| format!("no project root/{path}"))?;
            println!("{:<8} {:<10} {:<20} CREATED", "ID", "STATUS", "REF");
            for p in client.pipelines(id_of(&project)?).await? {
                println!(
                    "{:<8} {:<10} {:<20} {}",
                    p["id"],
                    text(&p["status"]),
                    text(&p["ref"]),
                    text(&p["created_at"])
                );
            }
            Ok(exit::SUCCESS)
        }
        PipelineCommand::Show { id, project } => {
            let project = locate(&client, project.as_deref(), id).await?;
            let pipeline = client.pipeline(project, id).await?;
            println!(
                "pipeline {id} on {}: {}",
                text(&pipeline["ref"]),
                text(&pipeline["status"])
            );
            println!("{:<8} {:<12} {:<20} STATUS", "JOB", "STAGE", "NAME");
            let mut jobs = client.pipeline_jobs(project, id).await?;
            jobs.sort_by_key(|j| j["id"].as_i64());
            for j in jobs {
                println!(
                    "{:<8} {:<12} {:<20} {}",
                    j["id"],
                    text(&j["stage"]),
                    text(&j["name"]),
                    text(&j["status"])
                );
            }
            Ok(exit::SUCCESS)
        }
        PipelineCommand::Cancel { id, project } => {
            act(&client, project.as_deref(), id, "cancel").await
        }
        PipelineCommand::Retry { id, project } => {
            act(&client, project.as_deref(), id, "retry").await
        }
    }
}

/// `cancel` or `retry` pipeline `id`; prints its status afterwards.
async fn act(
    client: &AdminClient,
    project: Option<&str>,
    id: i64,
    action: &str,
) -> anyhow::Result<i32> {
    let project = locate(client, project, id).await?;
    let pipeline = client.pipeline_action(project, id, action).await?;
    println!("pipeline {id}: {}", text(&pipeline["status"]));
    Ok(exit::SUCCESS)
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn id_of(v: &Value) -> anyhow::Result<i64> {
    v["id"]
        .as_i64()
        .with_context(|| format!("the server's answer has no id: {v}"))
}

fn read_config(file: &std::path::Path) -> anyhow::Result<String> {
    if file.as_os_str() == "-" {
        return std::io::read_to_string(std::io::stdin()).context("reading standard input");
    }
    std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
}

/// The current folder's name as a project path.
fn default_project() -> String {
    let dir = std::env::current_dir().ok();
    let name = dir
        .as_deref()
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    project_path(&name)
}

/// The project of pipeline `id`: the one named, else the first project that has it.
async fn locate(client: &AdminClient, project: Option<&str>, id: i64) -> anyhow::Result<i64> {
    if let Some(name) = project {
        let path = project_path(name);
        let project = client
            .find_project(&path)
            .await?
            .with_context(|| format!("no project root/{path}"))?;
        return id_of(&project);
    }
    for project in client.projects().await? {
        let project = id_of(&project)?;
        match client.pipeline(project, id).await {
            Ok(_) => return Ok(project),
            Err(e) if e.status() == Some(404) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("no pipeline {id}")
}

/// Follows the pipeline until it ends; the exit code for its final status.
async fn follow(
    client: AdminClient,
    project: i64,
    pipeline: i64,
    timeout: Option<Duration>,
) -> anyhow::Result<i32> {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut follower = Follower::new(client.clone(), project, pipeline, std::io::stdout());
    let mut interrupts = 0;
    loop {
        if let Some(status) = follower.step().await? {
            eprintln!("==> pipeline {pipeline}: {status}");
            return Ok(match status.as_str() {
                "success" => exit::SUCCESS,
                "canceled" => exit::CANCELED,
                _ => exit::FAILED,
            });
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            anyhow::bail!("pipeline {pipeline} has not ended within the timeout; it goes on");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = tokio::signal::ctrl_c() => {
                interrupts += 1;
                if interrupts > 1 {
                    eprintln!("==> stopped following pipeline {pipeline}");
                    return Ok(exit::INTERRUPTED);
                }
                eprintln!("==> canceling pipeline {pipeline} (Ctrl-C again to stop following)");
                client.pipeline_action(project, pipeline, "cancel").await?;
            }
        }
    }
}
