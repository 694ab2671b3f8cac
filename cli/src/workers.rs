//! `berth workers list|get`.

use clap::Subcommand;
use serde_json::Value;

use crate::client::{ApiClient, ClientArgs};
use crate::output;

#[derive(Debug, Subcommand)]
pub enum WorkersCommand {
    /// List the fleet's workers.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one worker.
    Get {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Drain a worker: no new sandboxes; what it runs is destroyed at the deadline.
    Drain {
        id: String,
        /// e.g. 10m; without one the drain waits until its sandboxes are gone.
        #[arg(long)]
        deadline: Option<String>,
        /// Destroy what is left at once.
        #[arg(long)]
        force: bool,
        /// Show progress until the drain is complete.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a drain.
    Undrain {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Take no new sandboxes on a worker; what it runs keeps running.
    Cordon {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Let a cordoned worker take sandboxes again.
    Uncordon {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Refuse a worker's certificates and token at once, close its connections and
    /// mark its sandboxes lost.
    Revoke {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn run(command: WorkersCommand) -> anyhow::Result<()> {
    match command {
        WorkersCommand::List { client } => {
            let workers: Vec<Value> = ApiClient::new(&client)?.get("/api/v1/workers").await?;
            if client.json() {
                return output::json(&Value::Array(workers));
            }
            let rows: Vec<Vec<String>> = workers.iter().map(row).collect();
            output::table(&HEADERS, &rows);
            Ok(())
        }
        WorkersCommand::Drain {
            id,
            deadline,
            force,
            watch,
            client,
        } => {
            let api = ApiClient::new(&client)?;
            let body = serde_json::json!({"deadline": deadline, "force": force});
            let worker: Value = api
                .post(&format!("/api/v1/workers/{id}/drain"), &body)
                .await?;
            if !watch {
                if client.json() {
                    return output::json(&worker);
                }
                output::table(&HEADERS, &[row(&worker)]);
                return Ok(());
            }
            loop {
                let worker: Value = api.get(&format!("/api/v1/workers/{id}")).await?;
                let state = output::text(&worker["drain"]["state"]);
                println!(
                    "{id}: drain {state}, {} sandboxes left",
                    output::text(&worker["drain"]["remaining"])
                );
                if state != "draining" {
                    return Ok(());
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
        WorkersCommand::Undrain { id, client } => set_cordon(&id, "undrain", &client).await,
        WorkersCommand::Cordon { id, client } => set_cordon(&id, "cordon", &client).await,
        WorkersCommand::Uncordon { id, client } => set_cordon(&id, "uncordon", &client).await,
        WorkersCommand::Revoke { id, client } => {
            let answer: Value = ApiClient::new(&client)?
                .post(&format!("/api/v1/workers/{id}/revoke"), &Value::Null)
                .await?;
            if client.json() {
                return output::json(&answer);
            }
            let lost = answer["lost_sandboxes"].as_array().map_or(0, Vec::len);
            println!(
                "revoked {id}: {} connections closed, {lost} sandboxes lost",
                output::text(&answer["closed_connections"])
            );
            Ok(())
        }
        WorkersCommand::Get { id, client } => {
            let worker: Value = ApiClient::new(&client)?
                .get(&format!("/api/v1/workers/{id}"))
                .await?;
            if client.json() {
                return output::json(&worker);
            }
            output::table(&HEADERS, &[row(&worker)]);
            println!();
            println!("spiffe id    {}", output::text(&worker["spiffe_id"]));
            println!(
                "certificate  {} (expires at {})",
                output::text(&worker["certificate"]["serial"]),
                output::text(&worker["certificate"]["expires_at"])
            );
            println!("version      {}", output::text(&worker["version"]));
            Ok(())
        }
    }
}

/// Posts a bodyless worker action (cordon, uncordon, undrain) and shows the worker.
async fn set_cordon(id: &str, action: &str, client: &ClientArgs) -> anyhow::Result<()> {
    let worker: Value = ApiClient::new(client)?
        .post(&format!("/api/v1/workers/{id}/{action}"), &Value::Null)
        .await?;
    if client.json() {
        return output::json(&worker);
    }
    output::table(&HEADERS, &[row(&worker)]);
    Ok(())
}

const HEADERS: [&str; 7] = [
    "ID",
    "STATUS",
    "PROVIDERS",
    "CAPACITY",
    "ADDRESS",
    "HOSTNAME",
    "LAST HEARTBEAT",
];

fn row(worker: &Value) -> Vec<String> {
    let providers: Vec<String> = worker["providers"]
        .as_array()
        .map(|list| list.iter().map(output::text).collect())
        .unwrap_or_default();
    vec![
        output::text(&worker["id"]),
        {
            let mut status = output::text(&worker["status"]);
            if worker["cordoned"].as_bool() == Some(true) {
                status.push_str(" (cordoned)");
            }
            if let Some(drain) = worker["drain"]["state"].as_str().filter(|s| *s != "none") {
                status.push_str(&format!(" ({drain})"));
            }
            status
        },
        providers.join(","),
        output::text(&worker["capacity"]["max_sandboxes"]),
        output::text(&worker["advertise_addr"]),
        output::text(&worker["hostname"]),
        output::ago_ms(&worker["last_heartbeat"], now_ms()),
    ]
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(0))
        .unwrap_or(0)
}
