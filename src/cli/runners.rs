//! `runway runners create|list|show|delete`.

use serde_json::{json, Value};

use super::{exit, ServerArgs};

#[derive(Debug, clap::Args)]
pub struct RunnersArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(subcommand)]
    pub command: RunnersCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum RunnersCommand {
    /// Create a runner; prints its glrt- authentication token (for
    /// `gitlab-runner register --token`) on standard output, its id on standard error.
    Create {
        /// `instance_type` or `project_type`.
        #[arg(long = "type", default_value = "instance_type")]
        runner_type: String,
        /// The project of a `project_type` runner (id).
        #[arg(long)]
        project_id: Option<i64>,
        /// Comma-separated tags.
        #[arg(long)]
        tag_list: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Whether it takes jobs without tags (default: yes).
        #[arg(long)]
        run_untagged: Option<bool>,
        /// Created paused: it takes no jobs until resumed.
        #[arg(long)]
        paused: bool,
        /// Locked to its projects.
        #[arg(long)]
        locked: bool,
    },
    /// Every runner: id, status, type, description.
    List,
    /// One runner in full, as JSON.
    Show { id: i64 },
    /// Delete a runner; its token stops working at once.
    Delete { id: i64 },
}

/// Runs the command; its exit code.
pub async fn command(args: RunnersArgs) -> anyhow::Result<i32> {
    let client = args.server.client()?;
    match args.command {
        RunnersCommand::Create {
            runner_type,
            project_id,
            tag_list,
            description,
            run_untagged,
            paused,
            locked,
        } => {
            let mut params =
                json!({ "runner_type": runner_type, "paused": paused, "locked": locked });
            let optional = [
                ("project_id", project_id.map(Value::from)),
                ("tag_list", tag_list.map(Value::from)),
                ("description", description.map(Value::from)),
                ("run_untagged", run_untagged.map(Value::from)),
            ];
            for (key, value) in optional {
                if let Some(value) = value {
                    params[key] = value;
                }
            }
            let created = client.create_runner(&params).await?;
            let token = created["token"].as_str().unwrap_or_default();
            eprintln!("runner {} created", created["id"]);
            println!("{token}");
        }
        RunnersCommand::List => {
            println!(
                "{:<6} {:<16} {:<14} {:<7} DESCRIPTION",
                "ID", "STATUS", "TYPE", "PAUSED"
            );
            for r in client.runners().await? {
                println!(
                    "{:<6} {:<16} {:<14} {:<7} {}",
                    r["id"],
                    r["status"].as_str().unwrap_or(""),
                    r["runner_type"].as_str().unwrap_or(""),
                    r["paused"],
                    r["description"].as_str().unwrap_or("")
                );
            }
        }
        RunnersCommand::Show { id } => {
            println!("{:#}", client.runner(id).await?);
        }
        RunnersCommand::Delete { id } => {
            client.delete_runner(id).await?;
            println!("runner {id} deleted");
        }
    }
    Ok(exit::SUCCESS)
}
