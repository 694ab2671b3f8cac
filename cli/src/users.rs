//! `berth users add|list|remove --team T`: a team's users, whom its keys may be bound
//! to (cluster admin, or the team's admin).

use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::{ApiClient, ClientArgs, segment};
use crate::confirm::confirm;
use crate::output::{self, ListArgs, Table, TableStyle};
use crate::{out, outln, watch};

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add a user to a team.
    Add {
        /// The team.
        #[arg(long)]
        team: String,
        /// The user's name: letters, digits and '._@-', up to 64.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List a team's users.
    List {
        /// The team.
        #[arg(long)]
        team: String,
        #[command(flatten)]
        list: ListArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a user from a team: the keys bound to them are revoked.
    Remove {
        /// The team.
        #[arg(long)]
        team: String,
        /// The user's name.
        name: String,
        /// Remove them even while they own live sandboxes.
        #[arg(long)]
        force: bool,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn run(command: UsersCommand) -> anyhow::Result<()> {
    match command {
        UsersCommand::Add { team, name, client } => {
            let api = ApiClient::new(&client)?;
            let path = format!("/api/v1/teams/{}/users", segment(&team)?);
            let user: Value = api.post(&path, &json!({"name": name})).await?;
            if client.structured() {
                return output::structured(client.output, &user);
            }
            outln!(
                "added user {} to team {}",
                output::text(&user["name"]),
                output::text(&user["team"])
            )?;
            Ok(())
        }
        UsersCommand::List { team, list, client } => {
            let api = ApiClient::new(&client)?;
            let path = format!("/api/v1/teams/{}/users", segment(&team)?);
            let render = || async {
                let users: Vec<Value> = api.get(&path).await?;
                render(&users, &client, &list)
            };
            if list.watch {
                return watch::run(render).await;
            }
            out!("{}", render().await?)?;
            Ok(())
        }
        UsersCommand::Remove {
            team,
            name,
            force,
            yes,
            client,
        } => {
            let api = ApiClient::new(&client)?;
            confirm(
                &format!("remove user {name} from team {team} and revoke their keys"),
                yes,
            )?;
            let mut path = format!(
                "/api/v1/teams/{}/users/{}",
                segment(&team)?,
                segment(&name)?
            );
            if force {
                path.push_str("?force=true");
            }
            let answer: Value = api.delete(&path).await?;
            if client.structured() {
                return output::structured(client.output, &answer);
            }
            outln!("removed user {name} from team {team}")?;
            Ok(())
        }
    }
}

/// Users as the output flags ask, as text.
fn render(users: &[Value], client: &ClientArgs, list: &ListArgs) -> anyhow::Result<String> {
    let structured = client.structured().then_some(client.output);
    if let Some(text) = output::list_instead_of_table(users, "name", list.quiet, structured)? {
        return Ok(text);
    }
    let now = output::now_secs();
    let mut table = Table::new(&["NAME", "TEAM", "AGE"]);
    for user in users {
        table.row(vec![
            output::text(&user["name"]),
            output::text(&user["team"]),
            output::age(&user["created_at"], now),
        ]);
    }
    Ok(table.render(&TableStyle::for_list(list)))
}
