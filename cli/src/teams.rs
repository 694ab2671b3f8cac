//! `berth teams create|list|get|set|delete`: teams, their quotas and the pools they
//! may use (cluster admin; a team's own key may read its team).

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use crate::client::{ApiClient, ClientArgs, segment};
use crate::confirm::confirm;
use crate::output::{self, ListArgs, Table, TableStyle};
use crate::{out, outln, watch};

#[derive(Debug, Subcommand)]
pub enum TeamsCommand {
    /// Create a team; a limit left out is no limit.
    Create {
        /// The team's name: lowercase letters, digits and '-', up to 63.
        name: String,
        #[command(flatten)]
        quota: QuotaArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List teams with their usage and quotas (a team's key sees only its own).
    List {
        #[command(flatten)]
        list: ListArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one team.
    Get {
        /// The team's name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Change a team's quotas or pools; only what is given changes, 0 clears a limit.
    Set {
        /// The team's name.
        name: String,
        #[command(flatten)]
        quota: QuotaArgs,
        /// Let the team use any pool again.
        #[arg(long, conflicts_with = "pool")]
        any_pool: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a team: its keys are revoked and its users removed.
    Delete {
        /// The team's name.
        name: String,
        /// Delete it even while it owns live sandboxes (they are destroyed).
        #[arg(long)]
        force: bool,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// A team's limits and pools, as `create` and `set` take them.
#[derive(Debug, Clone, Args)]
pub struct QuotaArgs {
    /// Most sandboxes alive at once (set: 0 clears).
    #[arg(long, value_name = "N")]
    max_sandboxes: Option<u64>,
    /// Most vCPUs over its sandboxes (set: 0 clears).
    #[arg(long, value_name = "N")]
    max_vcpus: Option<u64>,
    /// Most memory over its sandboxes, in MiB (set: 0 clears).
    #[arg(long, value_name = "MiB")]
    max_memory: Option<u64>,
    /// Longest TTL a sandbox may have, e.g. 2h (set: 0 clears).
    #[arg(long, value_name = "DURATION")]
    max_ttl: Option<String>,
    /// A pool its sandboxes may run in (repeated or comma list; none: any pool).
    #[arg(long, value_delimiter = ',')]
    pool: Vec<String>,
}

impl QuotaArgs {
    /// The body fields given, and only those (`{"max_sandboxes": 10, …}`).
    fn fields(&self) -> Map<String, Value> {
        let mut fields = Map::new();
        let numbers = [
            ("max_sandboxes", self.max_sandboxes),
            ("max_vcpus", self.max_vcpus),
            ("max_memory_mb", self.max_memory),
        ];
        for (field, value) in numbers {
            if let Some(value) = value {
                fields.insert(field.to_owned(), json!(value));
            }
        }
        if let Some(ttl) = &self.max_ttl {
            // a bare 0 is "0s" on the wire, which clears it
            let ttl = if ttl.trim() == "0" { "0s" } else { ttl.trim() };
            fields.insert("max_ttl".to_owned(), json!(ttl));
        }
        if !self.pool.is_empty() {
            fields.insert("pools".to_owned(), json!(self.pool));
        }
        fields
    }
}

pub async fn run(command: TeamsCommand) -> anyhow::Result<()> {
    match command {
        TeamsCommand::Create {
            name,
            quota,
            client,
        } => {
            let api = ApiClient::new(&client)?;
            let mut body = quota.fields();
            body.insert("name".to_owned(), json!(name));
            let team: Value = api.post("/api/v1/teams", &Value::Object(body)).await?;
            show_one(&team, &client)
        }
        TeamsCommand::List { list, client } => {
            let api = ApiClient::new(&client)?;
            let render = || async {
                let teams: Vec<Value> = api.get("/api/v1/teams").await?;
                render(&teams, &client, &list)
            };
            if list.watch {
                return watch::run(render).await;
            }
            out!("{}", render().await?)?;
            Ok(())
        }
        TeamsCommand::Get { name, client } => {
            let api = ApiClient::new(&client)?;
            let team: Value = api
                .get(&format!("/api/v1/teams/{}", segment(&name)?))
                .await?;
            show_one(&team, &client)
        }
        TeamsCommand::Set {
            name,
            quota,
            any_pool,
            client,
        } => {
            let mut body = quota.fields();
            if any_pool {
                body.insert("pools".to_owned(), json!([]));
            }
            if body.is_empty() {
                anyhow::bail!(
                    "nothing to change: give --max-sandboxes, --max-vcpus, --max-memory, \
                     --max-ttl, --pool or --any-pool"
                );
            }
            let api = ApiClient::new(&client)?;
            let path = format!("/api/v1/teams/{}", segment(&name)?);
            let team: Value = api.patch(&path, &Value::Object(body)).await?;
            show_one(&team, &client)
        }
        TeamsCommand::Delete {
            name,
            force,
            yes,
            client,
        } => {
            let api = ApiClient::new(&client)?;
            let what = if force {
                format!(
                    "delete team {name}, destroy its sandboxes, revoke its keys and remove its users"
                )
            } else {
                format!("delete team {name}, revoke its keys and remove its users")
            };
            confirm(&what, yes)?;
            let mut path = format!("/api/v1/teams/{}", segment(&name)?);
            if force {
                path.push_str("?force=true");
            }
            let answer: Value = api.delete(&path).await?;
            if client.structured() {
                return output::structured(client.output, &answer);
            }
            let destroyed = answer["destroyed"].as_u64().unwrap_or(0);
            outln!("deleted team {name}: {destroyed} sandboxes destroyed")?;
            Ok(())
        }
    }
}

fn show_one(team: &Value, client: &ClientArgs) -> anyhow::Result<()> {
    if client.structured() {
        return output::structured(client.output, team);
    }
    out!(
        "{}",
        render(std::slice::from_ref(team), client, &ListArgs::default())?
    )?;
    Ok(())
}

/// Teams as the output flags ask, as text.
fn render(teams: &[Value], client: &ClientArgs, list: &ListArgs) -> anyhow::Result<String> {
    let structured = client.structured().then_some(client.output);
    if let Some(text) = output::list_instead_of_table(teams, "name", list.quiet, structured)? {
        return Ok(text);
    }
    let now = output::now_secs();
    let mut table = Table::new(&[
        "NAME",
        "SANDBOXES",
        "VCPUS",
        "MEMORY",
        "MAX TTL",
        "POOLS",
        "USERS",
        "AGE",
    ]);
    for team in teams {
        table.row(vec![
            output::text(&team["name"]),
            used_of_limit(team, "sandboxes", "max_sandboxes", ""),
            used_of_limit(team, "vcpus", "max_vcpus", ""),
            used_of_limit(team, "memory_mb", "max_memory_mb", "Mi"),
            output::text(&team["quota"]["max_ttl"]),
            pools_text(&team["pools"]),
            output::text(&team["users"]),
            output::age(&team["created_at"], now),
        ]);
    }
    Ok(table.render(&TableStyle::for_list(list)))
}

/// `used/limit` from a team's (or pool status's) `usage` and `quota`; `-` for no limit.
pub fn used_of_limit(team: &Value, used: &str, limit: &str, unit: &str) -> String {
    let used = match team["usage"][used].as_u64() {
        Some(used) => format!("{used}{unit}"),
        None => "-".to_owned(),
    };
    let limit = match team["quota"][limit].as_u64() {
        Some(limit) if limit > 0 => format!("{limit}{unit}"),
        _ => "-".to_owned(),
    };
    format!("{used}/{limit}")
}

/// `eu,us`, or `any` when the team may use every pool.
fn pools_text(pools: &Value) -> String {
    let names: Vec<String> = pools
        .as_array()
        .map(|list| list.iter().map(output::text).collect())
        .unwrap_or_default();
    if names.is_empty() {
        return "any".to_owned();
    }
    names.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(args: &[&str]) -> QuotaArgs {
        #[derive(Debug, clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            quota: QuotaArgs,
        }
        let wrapper: Wrapper =
            clap::Parser::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
                .expect("flags parse");
        wrapper.quota
    }

    #[test]
    fn only_the_limits_given_are_sent() {
        assert_eq!(Value::Object(quota(&[]).fields()), json!({}));
        let fields = quota(&[
            "--max-sandboxes",
            "10",
            "--max-memory",
            "4096",
            "--max-ttl",
            "2h",
            "--pool",
            "eu,us",
        ])
        .fields();
        assert_eq!(
            Value::Object(fields),
            json!({"max_sandboxes": 10, "max_memory_mb": 4096, "max_ttl": "2h",
                "pools": ["eu", "us"]})
        );
        let cleared = quota(&["--max-vcpus", "0", "--max-ttl", "0"]).fields();
        assert_eq!(
            Value::Object(cleared),
            json!({"max_vcpus": 0, "max_ttl": "0s"})
        );
    }

    #[test]
    fn usage_reads_against_the_limit() {
        let team = json!({"quota": {"max_sandboxes": 10, "max_vcpus": null,
            "max_memory_mb": 4096}, "usage": {"sandboxes": 3, "vcpus": 2, "memory_mb": 1536}});
        assert_eq!(
            used_of_limit(&team, "sandboxes", "max_sandboxes", ""),
            "3/10"
        );
        assert_eq!(used_of_limit(&team, "vcpus", "max_vcpus", ""), "2/-");
        assert_eq!(
            used_of_limit(&team, "memory_mb", "max_memory_mb", "Mi"),
            "1536Mi/4096Mi"
        );
        assert_eq!(pools_text(&json!(["eu", "us"])), "eu,us");
        assert_eq!(pools_text(&json!([])), "any");
    }
}
