//! `berth token create` (or `tokens`): a join token for a new worker (admin scope),
//! optionally naming the pool and labels the worker enrolls with.

use std::collections::BTreeMap;

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
        /// The pool the enrolled worker joins (default: "default").
        #[arg(long)]
        pool: Option<String>,
        /// A label the enrolled worker carries, KEY=VALUE (repeat for more); sandbox
        /// create constraints match them.
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
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
            pool,
            labels,
            client,
        } => {
            let api = ApiClient::new(&client)?;
            let labels: BTreeMap<String, String> = labels.into_iter().collect();
            let body = json!({"worker_id": worker_id, "ttl": ttl, "uses": uses,
                "pool": pool, "labels": labels});
            let token: Value = api.post("/api/v1/tokens", &body).await?;
            if client.structured() {
                return output::structured(client.output, &token);
            }
            // The token alone on stdout, so `$(berth token create)` works; details on stderr.
            outln!("{}", output::text(&token["token"]))?;
            eprintln!(
                "jti {} · uses {} · expires at {} · worker {} · pool {}{}",
                output::text(&token["jti"]),
                output::text(&token["uses"]),
                output::text(&token["expires_at"]),
                token["worker_id"].as_str().unwrap_or("any"),
                token["pool"].as_str().unwrap_or("default"),
                labels_suffix(&token["labels"]),
            );
            Ok(())
        }
    }
}

/// `KEY=VALUE` as a label; the control plane checks the characters.
fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// ` · labels k=v,k=v`, or nothing when there are none.
fn labels_suffix(labels: &Value) -> String {
    let Some(labels) = labels.as_object().filter(|l| !l.is_empty()) else {
        return String::new();
    };
    let pairs: Vec<String> = labels
        .iter()
        .map(|(key, value)| format!("{key}={}", output::text(value)))
        .collect();
    format!(" · labels {}", pairs.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_key_value() {
        assert_eq!(
            parse_label("region=eu").unwrap(),
            ("region".to_owned(), "eu".to_owned())
        );
        assert_eq!(parse_label("empty=").unwrap().1, "");
        assert!(parse_label("region").is_err());
        assert!(parse_label("=eu").is_err());
    }

    #[test]
    fn labels_are_summed_up_on_one_line() {
        assert_eq!(
            labels_suffix(&json!({"disk": "ssd", "region": "eu"})),
            " · labels disk=ssd,region=eu"
        );
        assert_eq!(labels_suffix(&json!({})), "");
        assert_eq!(labels_suffix(&Value::Null), "");
    }
}
