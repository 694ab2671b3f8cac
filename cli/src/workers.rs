//! `berth workers list|get|drain|undrain|cordon|uncordon|revoke|rm`.

use clap::Subcommand;
use serde_json::Value;

use crate::client::{ApiClient, ClientArgs};
use crate::confirm::confirm;
use crate::output::{self, Format, ListArgs, Table, TableStyle};
use crate::{ids, out, outln, watch};

#[derive(Debug, Subcommand)]
pub enum WorkersCommand {
    /// List the fleet's workers.
    List {
        /// Only workers with these statuses (comma list or repeated: online, cordoned,
        /// draining, drained, unhealthy, offline, revoked).
        #[arg(long, value_delimiter = ',')]
        status: Vec<String>,
        /// Only workers offering this provider.
        #[arg(long)]
        provider: Option<String>,
        #[command(flatten)]
        list: ListArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one worker.
    Get {
        /// Worker id or a unique prefix of one.
        id: String,
        /// Redraw every 2 s (on a terminal), or print again whenever it changes.
        #[arg(short, long)]
        watch: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Drain a worker: no new sandboxes; what it runs is destroyed at the deadline.
    Drain {
        /// Worker id or a unique prefix of one.
        id: String,
        /// e.g. 10m; without one the drain waits until its sandboxes are gone.
        #[arg(long)]
        deadline: Option<String>,
        /// Destroy what is left at once.
        #[arg(long)]
        force: bool,
        /// Follow the drain until it is complete, printing a line whenever it changes.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a drain.
    Undrain {
        /// Worker id or a unique prefix of one.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Take no new sandboxes on a worker; what it runs keeps running.
    Cordon {
        /// Worker id or a unique prefix of one.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Let a cordoned worker take sandboxes again.
    Uncordon {
        /// Worker id or a unique prefix of one.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Refuse a worker's certificates and token at once, close its connections and
    /// mark its sandboxes lost.
    Revoke {
        /// Worker id or a unique prefix of one.
        id: String,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Forget a retired worker: revoke its credentials and remove its record.
    Rm {
        /// Worker id or a unique prefix of one.
        id: String,
        /// Remove it even though it holds sandboxes (they are marked lost).
        #[arg(long)]
        force: bool,
        /// Do not ask for confirmation (asked only with --force).
        #[arg(short, long)]
        yes: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn run(command: WorkersCommand) -> anyhow::Result<()> {
    match command {
        WorkersCommand::List {
            status,
            provider,
            list,
            client,
        } => {
            let api = ApiClient::new(&client)?;
            let render = || async {
                let workers: Vec<Value> = api.get("/api/v1/workers").await?;
                let shown: Vec<Value> = workers
                    .into_iter()
                    .filter(|w| status.is_empty() || status.contains(&status_word(w)))
                    .filter(|w| provider.as_deref().is_none_or(|p| offers(w, p)))
                    .collect();
                render(&shown, &client, &list)
            };
            if list.watch {
                return watch::run(render).await;
            }
            out!("{}", render().await?)?;
            Ok(())
        }
        WorkersCommand::Get { id, watch, client } => {
            let api = ApiClient::new(&client)?;
            let id = ids::worker(&api, &id).await?;
            let render = || async {
                let worker: Value = api.get(&format!("/api/v1/workers/{id}")).await?;
                if client.structured() {
                    return output::structured_text(client.output, &worker);
                }
                details(&worker, &client)
            };
            if watch {
                return watch::run(render).await;
            }
            out!("{}", render().await?)?;
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
            let id = ids::worker(&api, &id).await?;
            let body = serde_json::json!({"deadline": deadline, "force": force});
            let worker: Value = api
                .post(&format!("/api/v1/workers/{id}/drain"), &body)
                .await?;
            if !watch {
                return show_one(&worker, &client);
            }
            if let Some(deadline) = unix_deadline(&worker) {
                let when = output::relative(&deadline, output::now_secs());
                outln!("{id}: what is left is destroyed {when}")?;
            }
            let mut last = String::new();
            loop {
                let worker: Value = api.get(&format!("/api/v1/workers/{id}")).await?;
                let line = drain_line(&id, &worker);
                if line != last {
                    outln!("{line}")?;
                    last = line;
                }
                if worker["drain"]["state"].as_str() != Some("draining") {
                    return Ok(());
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
        WorkersCommand::Undrain { id, client } => set_cordon(&id, "undrain", &client).await,
        WorkersCommand::Cordon { id, client } => set_cordon(&id, "cordon", &client).await,
        WorkersCommand::Uncordon { id, client } => set_cordon(&id, "uncordon", &client).await,
        WorkersCommand::Revoke { id, yes, client } => {
            let api = ApiClient::new(&client)?;
            let id = ids::worker(&api, &id).await?;
            confirm(
                &format!("revoke worker {id} (its sandboxes become lost)"),
                yes,
            )?;
            let answer: Value = api
                .post(&format!("/api/v1/workers/{id}/revoke"), &Value::Null)
                .await?;
            if client.structured() {
                return output::structured(client.output, &answer);
            }
            let lost = answer["lost_sandboxes"].as_array().map_or(0, Vec::len);
            outln!(
                "revoked {id}: {} connections closed, {lost} sandboxes lost",
                output::text(&answer["closed_connections"])
            )?;
            Ok(())
        }
        WorkersCommand::Rm {
            id,
            force,
            yes,
            client,
        } => {
            let api = ApiClient::new(&client)?;
            let id = ids::worker(&api, &id).await?;
            if force {
                confirm(
                    &format!("remove worker {id} and mark its sandboxes lost"),
                    yes,
                )?;
            }
            let answer: Value = api
                .delete(&format!("/api/v1/workers/{id}?force={force}"))
                .await?;
            if client.structured() {
                return output::structured(client.output, &answer);
            }
            let lost = answer["lost_sandboxes"].as_array().map_or(0, Vec::len);
            outln!("removed {id}: {lost} sandboxes lost")?;
            Ok(())
        }
    }
}

/// Posts a bodyless worker action (cordon, uncordon, undrain) and shows the worker.
async fn set_cordon(id: &str, action: &str, client: &ClientArgs) -> anyhow::Result<()> {
    let api = ApiClient::new(client)?;
    let id = ids::worker(&api, id).await?;
    let worker: Value = api
        .post(&format!("/api/v1/workers/{id}/{action}"), &Value::Null)
        .await?;
    show_one(&worker, client)
}

fn show_one(worker: &Value, client: &ClientArgs) -> anyhow::Result<()> {
    if client.structured() {
        return output::structured(client.output, worker);
    }
    out!(
        "{}",
        render(std::slice::from_ref(worker), client, &ListArgs::default())?
    )?;
    Ok(())
}

/// `workers get`: the table row and the identity lines.
fn details(worker: &Value, client: &ClientArgs) -> anyhow::Result<String> {
    let now = output::now_secs();
    let mut text = render(std::slice::from_ref(worker), client, &ListArgs::default())?;
    text.push('\n');
    text.push_str(&format!(
        "spiffe id    {}\n",
        output::text(&worker["spiffe_id"])
    ));
    text.push_str(&format!(
        "certificate  {} (expires {})\n",
        output::text(&worker["certificate"]["serial"]),
        output::relative(&worker["certificate"]["expires_at"], now)
    ));
    text.push_str(&format!(
        "version      {}\n",
        output::text(&worker["version"])
    ));
    text.push_str(&format!(
        "enrolled     {}\n",
        output::relative(&worker["enrolled_at"], now)
    ));
    Ok(text)
}

/// Workers as the output flags ask, as text.
fn render(workers: &[Value], client: &ClientArgs, list: &ListArgs) -> anyhow::Result<String> {
    let structured = client.structured().then_some(client.output);
    if let Some(text) = output::list_instead_of_table(workers, "id", list.quiet, structured)? {
        return Ok(text);
    }
    let wide = client.output == Format::Wide;
    let now = output::now_secs();
    let mut headers = vec![
        "ID",
        "STATUS",
        "PROVIDERS",
        "CAPACITY",
        "POOL",
        "MODE",
        "ADDRESS",
        "HOSTNAME",
        "AGE",
        "LAST HEARTBEAT",
    ];
    if wide {
        headers.extend(["MEMORY", "VCPUS", "VERSION", "LABELS", "SPIFFE ID"]);
    }
    let mut table = Table::new(&headers);
    for worker in workers {
        let providers: Vec<String> = worker["providers"]
            .as_array()
            .map(|list| list.iter().map(output::text).collect())
            .unwrap_or_default();
        let mut row = vec![
            output::text(&worker["id"]),
            status_word(worker),
            providers.join(","),
            used_of(worker, "sandboxes", "max_sandboxes", ""),
            output::text(&worker["pool"]),
            output::text(&worker["mode"]),
            address_cell(&worker["advertise_addr"]),
            output::text(&worker["hostname"]),
            output::age(&worker["enrolled_at"], now),
            output::relative(&worker["last_heartbeat"], now),
        ];
        if wide {
            row.extend([
                used_of(worker, "memory_mb", "memory_mb", "Mi"),
                used_of(worker, "vcpus", "vcpus", ""),
                output::text(&worker["version"]),
                labels_cell(&worker["labels"]),
                output::text(&worker["spiffe_id"]),
            ]);
        }
        table.row(row);
    }
    Ok(table.render(&TableStyle::for_list(list)))
}

/// Where the control plane dials a worker; `-` for one that dials out.
fn address_cell(address: &Value) -> String {
    match address.as_str() {
        Some("") | None => "-".to_owned(),
        Some(address) => address.to_owned(),
    }
}

/// A worker's labels as `k=v,k=v` (sorted by key), `-` when it has none.
fn labels_cell(labels: &Value) -> String {
    let pairs: Vec<String> = labels
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .map(|(key, value)| format!("{key}={}", output::text(value)))
                .collect()
        })
        .unwrap_or_default();
    if pairs.is_empty() {
        "-".to_owned()
    } else {
        pairs.join(",")
    }
}

/// `used/max` when the worker answer has `allocated`, else `max`.
fn used_of(worker: &Value, allocated: &str, capacity: &str, unit: &str) -> String {
    let max = output::text(&worker["capacity"][capacity]);
    // 0: the worker does not count it (the mock's memory)
    if max == "0" {
        return match worker["allocated"][allocated].as_i64() {
            Some(used) => format!("{used}{unit}/-"),
            None => "-".to_owned(),
        };
    }
    match worker["allocated"][allocated].as_i64() {
        Some(used) => format!("{used}/{max}{unit}"),
        None => format!("{max}{unit}"),
    }
}

/// One word for where a worker stands: a health problem first (unhealthy, offline,
/// revoked), then the operator's say (drained, draining, cordoned), else online.
pub fn status_word(worker: &Value) -> String {
    let status = worker["status"].as_str().unwrap_or("unknown");
    if matches!(status, "unhealthy" | "offline" | "revoked") {
        return status.to_owned();
    }
    match worker["drain"]["state"].as_str() {
        Some("drained") => return "drained".to_owned(),
        Some("draining") => return "draining".to_owned(),
        _ => {}
    }
    if status == "draining" {
        return "draining".to_owned();
    }
    if worker["cordoned"].as_bool() == Some(true) {
        return "cordoned".to_owned();
    }
    status.to_owned()
}

fn offers(worker: &Value, provider: &str) -> bool {
    worker["providers"]
        .as_array()
        .is_some_and(|list| list.iter().any(|p| p.as_str() == Some(provider)))
}

/// The drain deadline: `drain.deadline` (RFC 3339) or an older control plane's
/// `drain.deadline_ms`.
fn unix_deadline(worker: &Value) -> Option<Value> {
    let drain = &worker["drain"];
    [&drain["deadline"], &drain["deadline_ms"]]
        .into_iter()
        .find(|v| !v.is_null())
        .cloned()
}

/// `drain --watch`'s line: the worker's one-word status and what it still holds.
fn drain_line(id: &str, worker: &Value) -> String {
    let status = status_word(worker);
    let remaining = output::text(&worker["drain"]["remaining"]);
    match worker["drain"]["state"].as_str() {
        Some("drained") => format!("{id}: drained, no sandboxes left"),
        Some("draining") => format!("{id}: draining, {remaining} sandboxes left"),
        _ => format!("{id}: {status} (the drain was cancelled)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn worker(status: &str, cordoned: bool, drain: &str) -> Value {
        json!({"id": "w1", "status": status, "cordoned": cordoned,
            "drain": {"state": drain, "remaining": 2, "deadline": null},
            "capacity": {"max_sandboxes": 10, "memory_mb": 4096, "vcpus": 4},
            "providers": ["mock"]})
    }

    #[test]
    fn the_status_is_one_word() {
        assert_eq!(status_word(&worker("online", false, "none")), "online");
        assert_eq!(status_word(&worker("online", true, "none")), "cordoned");
        assert_eq!(
            status_word(&worker("draining", true, "draining")),
            "draining"
        );
        assert_eq!(status_word(&worker("draining", true, "drained")), "drained");
        assert_eq!(
            status_word(&worker("unhealthy", true, "draining")),
            "unhealthy"
        );
        assert_eq!(status_word(&worker("revoked", false, "none")), "revoked");
    }

    #[test]
    fn capacity_is_used_of_max_when_allocated_is_there() {
        let mut w = worker("online", false, "none");
        assert_eq!(used_of(&w, "sandboxes", "max_sandboxes", ""), "10");
        w["allocated"] = json!({"sandboxes": 3, "memory_mb": 1024, "vcpus": 2});
        assert_eq!(used_of(&w, "sandboxes", "max_sandboxes", ""), "3/10");
        assert_eq!(used_of(&w, "memory_mb", "memory_mb", "Mi"), "1024/4096Mi");
        let uncounted = json!({"capacity": {"memory_mb": 0}, "allocated": {"memory_mb": 512}});
        assert_eq!(
            used_of(&uncounted, "memory_mb", "memory_mb", "Mi"),
            "512Mi/-"
        );
        assert!(offers(&w, "mock") && !offers(&w, "docker"));
    }

    #[test]
    fn labels_are_one_sorted_cell() {
        assert_eq!(
            labels_cell(&json!({"region": "eu", "disk": "ssd"})),
            "disk=ssd,region=eu"
        );
        assert_eq!(labels_cell(&json!({})), "-");
        assert_eq!(labels_cell(&Value::Null), "-");
    }

    #[test]
    fn drain_lines_say_one_thing() {
        assert_eq!(
            drain_line("w1", &worker("draining", true, "draining")),
            "w1: draining, 2 sandboxes left"
        );
        assert_eq!(
            drain_line("w1", &worker("draining", true, "drained")),
            "w1: drained, no sandboxes left"
        );
    }
}
