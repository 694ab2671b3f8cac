//! `berth quota [--team T]`: a team's quota, what it uses of it, and the pools it may
//! use with their room (`GET /api/v1/pool/status`; `--team` acts for that team with
//! `X-Tenant-ID`, which only a key without a team, or of that team, may do).

use clap::Args;
use serde_json::Value;

use crate::client::{ApiClient, ClientArgs};
use crate::output::{self, ListArgs, Table, TableStyle};
use crate::teams::used_of_limit;
use crate::{out, watch};

#[derive(Debug, Args)]
pub struct QuotaArgs {
    /// The team to show (default: the key's own; a key without a team: `default`).
    #[arg(long)]
    team: Option<String>,
    #[command(flatten)]
    list: ListArgs,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: QuotaArgs) -> anyhow::Result<()> {
    let QuotaArgs { team, list, client } = args;
    let api = ApiClient::new(&client)?.for_team(team);
    let render = || async {
        let status: Value = api.get("/api/v1/pool/status").await?;
        render(&status, &client, &list)
    };
    if list.watch {
        return watch::run(render).await;
    }
    out!("{}", render().await?)?;
    Ok(())
}

/// The quota table (used of each limit), a blank line, then the pools table; `-q`
/// prints the pools' names.
fn render(status: &Value, client: &ClientArgs, list: &ListArgs) -> anyhow::Result<String> {
    let pools: &[Value] = status["pools"].as_array().map_or(&[], Vec::as_slice);
    if list.quiet {
        let names: Vec<String> = pools
            .iter()
            .map(|p| output::text(&p["name"]) + "\n")
            .collect();
        return Ok(names.concat());
    }
    if client.structured() {
        return Ok(match client.output {
            output::Format::Yaml => serde_yaml_ng::to_string(status)?,
            _ => serde_json::to_string_pretty(status)? + "\n",
        });
    }
    let style = TableStyle::for_list(list);
    let team = output::text(&status["team"]);
    let mut quota = Table::new(&["TEAM", "SANDBOXES", "VCPUS", "MEMORY", "MAX TTL"]);
    quota.row(vec![
        team,
        used_of_limit(status, "sandboxes", "max_sandboxes", ""),
        used_of_limit(status, "vcpus", "max_vcpus", ""),
        used_of_limit(status, "memory_mb", "max_memory_mb", "Mi"),
        output::text(&status["quota"]["max_ttl"]),
    ]);
    let mut pool_table = Table::new(&["POOL", "WORKERS", "CAPACITY", "USED", "AVAILABLE"]);
    for pool in pools {
        pool_table.row(vec![
            output::text(&pool["name"]),
            format!(
                "{}/{}",
                output::text(&pool["online"]),
                output::text(&pool["workers"])
            ),
            output::text(&pool["capacity"]["sandboxes"]),
            output::text(&pool["used"]["sandboxes"]),
            output::text(&pool["available"]["sandboxes"]),
        ]);
    }
    let mut text = quota.render(&style);
    text.push('\n');
    if pools.is_empty() {
        text.push_str("no pool this team may use has workers\n");
    } else {
        text.push_str(&pool_table.render(&style));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quota_and_pools_read_as_two_tables() {
        let status = json!({"team": "a",
            "pools": [{"name": "eu", "workers": 3, "online": 2, "capacity": {"sandboxes": 8},
                "used": {"sandboxes": 3}, "available": {"sandboxes": 5}}],
            "quota": {"max_sandboxes": 10, "max_vcpus": null, "max_memory_mb": null,
                "max_ttl": "2h"},
            "usage": {"sandboxes": 3, "vcpus": 3, "memory_mb": 1536}});
        let client = ClientArgs {
            api_url: None,
            api_key: None,
            api_key_file: None,
            data_dir: None,
            ca_file: None,
            context: None,
            output: output::Format::Table,
        };
        let text = render(&status, &client, &ListArgs::default()).unwrap();
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines[1], ["a", "3/10", "3/-", "1536Mi/-", "2h"], "{text}");
        assert!(lines[2].is_empty(), "{text}");
        assert_eq!(lines[3][0], "POOL", "{text}");
        assert_eq!(lines[4], ["eu", "2/3", "8", "3", "5"], "{text}");
        let quiet = ListArgs {
            quiet: true,
            ..ListArgs::default()
        };
        assert_eq!(render(&status, &client, &quiet).unwrap(), "eu\n");
    }
}
