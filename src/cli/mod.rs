//! The command line's admin commands, `runway pipeline …` and `runway runners …`: HTTP
//! clients of a running server's admin API (`--url`, `--token`), for shells and CI scripts.

pub mod follow;
pub mod id_tokens;
pub mod lint;
pub mod pipeline;
pub mod runners;

use crate::client::{AdminClient, ClientError};

/// Exit codes of the admin commands.
pub mod exit {
    pub const SUCCESS: i32 = 0;
    /// The pipeline failed (or ended otherwise than success or canceled).
    pub const FAILED: i32 = 1;
    /// The pipeline was canceled.
    pub const CANCELED: i32 = 2;
    /// The command could not do its work: server unreachable, token refused, bad input.
    pub const ERROR: i32 = 3;
    /// Interrupted (Ctrl-C twice) while following.
    pub const INTERRUPTED: i32 = 130;
}

/// Which server, and the admin token.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// URL of the Runway server.
    #[arg(
        long,
        env = "RUNWAY_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// Admin token (`PRIVATE-TOKEN`), as printed by `runway serve` on its first start.
    #[arg(
        long,
        env = "RUNWAY_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    /// PEM certificates to trust besides the system's, for an HTTPS server with a
    /// self-signed or private certificate.
    #[arg(long, env = "RUNWAY_CA_FILE", global = true)]
    pub ca_file: Option<std::path::PathBuf>,
}

impl ServerArgs {
    pub fn client(&self) -> anyhow::Result<AdminClient> {
        let Some(token) = self.token.as_deref().filter(|t| !t.is_empty()) else {
            anyhow::bail!("no admin token: pass --token or set RUNWAY_ADMIN_TOKEN");
        };
        Ok(AdminClient::trusting(
            &self.url,
            token,
            self.ca_file.as_deref(),
        )?)
    }
}

/// Runs an admin command: its exit code, its error printed for a shell user.
pub async fn run(command: impl std::future::Future<Output = anyhow::Result<i32>>) -> i32 {
    match command.await {
        Ok(code) => code,
        Err(e) => report(&e),
    }
}

/// Prints a command's error the way a shell user reads it; the exit code for it.
fn report(error: &anyhow::Error) -> i32 {
    let hint = match error.downcast_ref::<ClientError>() {
        Some(ClientError::Status { status: 401, .. }) => {
            "\nhint: the admin token was refused; check --token / RUNWAY_ADMIN_TOKEN"
        }
        Some(ClientError::Unreachable { .. }) => {
            "\nhint: is `runway serve` running there? (--url / RUNWAY_URL)"
        }
        _ => "",
    };
    eprintln!("error: {error:#}{hint}");
    exit::ERROR
}

/// A project path for a name, as the server derives one (`CI_COMMIT_REF_SLUG`'s rules).
pub fn project_path(name: &str) -> String {
    match crate::api::runner::payload::slug(name) {
        path if path.is_empty() => "runway".to_string(),
        path => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_paths_are_what_the_server_accepts() {
        assert_eq!(project_path("my-repo"), "my-repo");
        assert_eq!(project_path("My Repo (2)"), "my-repo--2");
        assert_eq!(project_path(".hidden"), "hidden");
        assert_eq!(project_path("éé"), "runway");
    }
}
