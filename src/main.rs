use std::path::PathBuf;

use clap::{Parser, Subcommand};
use runway::cli;
use runway::config::{Settings, SettingsArgs};

/// Runway: GitLab's runner API without GitLab.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (migrations run first).
    Serve {
        #[command(flatten)]
        settings: SettingsArgs,
        /// Optional TOML file with the same keys (flags and environment win over it).
        #[arg(long, env = "RUNWAY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run pending database migrations and exit.
    Migrate {
        #[command(flatten)]
        settings: SettingsArgs,
        #[arg(long, env = "RUNWAY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Pipelines on a running server: run one from a file and stream its logs, follow,
    /// list, show, cancel, retry.
    Pipeline(runway::cli::pipeline::PipelineArgs),
    /// Runners on a running server: create (prints the glrt- token), list, show, delete.
    Runners(runway::cli::runners::RunnersArgs),
    /// Jobs' ID tokens on a running server: `rotate-key` makes a new signing key.
    IdTokens(runway::cli::id_tokens::IdTokensArgs),
    /// Check a `.gitlab-ci.yml` on this machine (no server needed): exit 0 valid, 1 not.
    Lint(runway::cli::lint::LintArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve { settings, config } => {
            let settings = Settings::resolve(settings, config.as_deref())?;
            runway::observability::init_logging(settings.log_format);
            let database = redact_url(&settings.database_url);
            let runway = runway::Runway::build(settings).await?;
            print_banner(&runway, &database);
            runway::shut_down_on_signals(runway.state.clone());
            runway.server.await?;
        }
        Command::Migrate { settings, config } => {
            let settings = Settings::resolve(settings, config.as_deref())?;
            runway::db::DbPool::connect(&settings.database_url, 1).await?;
            println!(
                "migrations are up to date on {}",
                redact_url(&settings.database_url)
            );
        }
        Command::Openapi => println!("{}", runway::api::openapi::json()),
        Command::Pipeline(args) => exit(cli::run(cli::pipeline::command(args)).await),
        Command::Runners(args) => exit(cli::run(cli::runners::command(args)).await),
        Command::IdTokens(args) => exit(cli::run(cli::id_tokens::command(args)).await),
        Command::Lint(args) => exit(cli::lint::run(&args)),
    }
    Ok(())
}

/// Ends the process with `code`, standard output written out first.
fn exit(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

/// The URL without a password, for printing.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

fn print_banner(runway: &runway::Runway, database: &str) {
    let url = &runway.state.settings.external_url;
    let scheme = if runway.state.settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    println!(
        "Runway {} listening on {scheme}://{} (database: {database})",
        env!("CARGO_PKG_VERSION"),
        runway.addr
    );
    let token = match &runway.generated_admin_token {
        Some(token) => {
            println!("Admin token (shown only this once; set RUNWAY_ADMIN_TOKEN to choose your own): {token}");
            token.as_str()
        }
        None => "<admin token>",
    };
    println!("Create a runner and register it:");
    println!("  curl -s -X POST -H 'PRIVATE-TOKEN: {token}' {url}/api/v4/user/runners -d runner_type=instance_type");
    println!("  gitlab-runner register --non-interactive --url {url} --token <glrt-… token from above> --executor shell");
    if runway.state.registration_digest.is_some() {
        println!("  (legacy: gitlab-runner register --non-interactive --url {url} --registration-token \"$RUNWAY_REGISTRATION_TOKEN\" --executor shell)");
    }
    println!("API documentation: {url}/api/openapi.json");
}
