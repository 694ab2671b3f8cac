//! `berth audit list|verify`: the tamper-evident audit log (admin scope).

use clap::Subcommand;
use serde_json::Value;

use crate::client::{ApiClient, ClientArgs};
use crate::outln;
use crate::output::{self, Table, TableStyle};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Records, oldest first.
    List {
        /// Only records newer than this: a duration back from now (1h) or unix ms.
        #[arg(long)]
        since: Option<String>,
        /// At most this many records.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// Print the table without its header line.
        #[arg(long)]
        no_headers: bool,
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
            no_headers,
            client,
        } => {
            let mut path = format!("/api/v1/audit?limit={limit}");
            if let Some(since) = since {
                path.push_str(&format!("&since={since}"));
            }
            let records: Vec<Value> = ApiClient::new(&client)?.get(&path).await?;
            if client.structured() {
                return output::structured(client.output, &Value::Array(records));
            }
            let mut table = Table::new(&[
                "SEQ",
                "TIME",
                "ACTOR",
                "OPERATION",
                "SANDBOX",
                "OUTCOME",
                "DETAIL",
            ]);
            for record in &records {
                table.row(
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
                    .map(|field| output::text(&record[*field]))
                    .collect(),
                );
            }
            table.print(&TableStyle {
                headers: !no_headers,
                ..TableStyle::default()
            })?;
            Ok(())
        }
        AuditCommand::Verify { client } => {
            let verification: Value = ApiClient::new(&client)?.get("/api/v1/audit/verify").await?;
            if client.structured() {
                output::structured(client.output, &verification)?;
            }
            if verification["ok"].as_bool() == Some(true) {
                if !client.structured() {
                    outln!(
                        "audit log intact: {} records",
                        output::text(&verification["records"])
                    )?;
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
