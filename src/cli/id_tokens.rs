//! `runway id-tokens rotate-key`.

use super::{exit, ServerArgs};

#[derive(Debug, clap::Args)]
pub struct IdTokensArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(subcommand)]
    pub command: IdTokensCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum IdTokensCommand {
    /// Make a new signing key for jobs' ID tokens; prints its key id (`kid`). The old key
    /// stays in the JWKS for seven days, so tokens it signed still verify.
    RotateKey,
}

/// Runs the command; its exit code.
pub async fn command(args: IdTokensArgs) -> anyhow::Result<i32> {
    let client = args.server.client()?;
    match args.command {
        IdTokensCommand::RotateKey => {
            let rotated = client.rotate_id_token_key().await?;
            println!("{}", rotated["kid"].as_str().unwrap_or_default());
        }
    }
    Ok(exit::SUCCESS)
}
