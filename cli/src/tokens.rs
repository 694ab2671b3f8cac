//! `berth token create`: a join token for a new worker (admin scope).

use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::{ApiClient, ClientArgs};
use crate::{outln, output};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a join token.
    Create {
        /// Pin the token to this worker id.
        #[arg(long)]
        worker_id: Option<String>,
        /// Lifetime, e.g. 1h (default: the control plane's tokens.join_ttl).
        #[arg(long)]
        ttl: Option<String>,
        /// How many workers may enroll with it.
        #[arg(long)]
        uses: Option<u32>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            worker_id,
            ttl,
            uses,
            client,
        } => {
            let api = ApiClient::new(&client)?;
            let body = json!({"worker_id": worker_id, "ttl": ttl, "uses": uses});
            let token: Value = api.post("/api/v1/tokens", &body).await?;
            if client.structured() {
                return output::structured(client.output, &token);
            }
            // The token alone on stdout, so `$(berth token create)` works; details on stderr.
            outln!("{}", output::text(&token["token"]))?;
            eprintln!(
                "jti {} · uses {} · expires at {} · worker {}",
                output::text(&token["jti"]),
                output::text(&token["uses"]),
                output::text(&token["expires_at"]),
                token["worker_id"].as_str().unwrap_or("any"),
            );
            Ok(())
        }
    }
}
