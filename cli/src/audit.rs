//! `berth audit list|verify`: the tamper-evident audit log (admin scope).

use clap::Subcommand;
use serde_json::Value;

use crate::client::{ApiClient, ClientArgs};
use crate::output;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Records, oldest first.
    List {
        /// Only records newer than this: a duration back from now (1h) or unix ms.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Checks the hash chain; exits non-zero at the first broken record.
    Verify {
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::List {
            since,
            limit,
            client,
        } => {
            let mut path = format!("/api/v1/audit?limit={limit}");
            if let Some(since) = since {
                path.push_str(&format!("&since={since}"));
            }
            let records: Vec<Value> = ApiClient::new(&client)?.get(&path).await?;
            if client.json() {
                return output::json(&Value::Array(records));
            }
            let rows: Vec<Vec<String>> = records
                .iter()
                .map(|r| {
                    [
                        "seq",
                        "time",
                        "actor",
                        "operation",
                        "sandbox_id",
                        "outcome",
                        "detail",
                    ]
                    .iter()
                    .map(|field| output::text(&r[*field]))
                    .collect()
                })
                .collect();
            output::table(
                &[
                    "SEQ",
                    "TIME",
                    "ACTOR",
                    "OPERATION",
                    "SANDBOX",
                    "OUTCOME",
                    "DETAIL",
                ],
                &rows,
            );
            Ok(())
        }
        AuditCommand::Verify { client } => {
            let verification: Value = ApiClient::new(&client)?.get("/api/v1/audit/verify").await?;
            if client.json() {
                output::json(&verification)?;
            }
            if verification["ok"].as_bool() == Some(true) {
                if !client.json() {
                    println!(
                        "audit log intact: {} records",
                        output::text(&verification["records"])
                    );
                }
                return Ok(());
            }
            let broken = &verification["first_broken"];
            anyhow::bail!(
                "audit log broken at record {}: {} ({} records before it are intact)",
                output::text(&broken["seq"]),
                output::text(&broken["reason"]),
                output::text(&verification["records"])
            )
        }
    }
}
