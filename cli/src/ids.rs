//! Id prefixes: every command taking a sandbox, worker or key id accepts a unique prefix of
//! one (`berth sandbox exec sbx-3f2 …`), resolved against the current list.

use anyhow::bail;
use serde_json::Value;

use crate::client::ApiClient;

/// The one id among `known` that `given` names: itself when it is one of them, else the
/// only one it is a prefix of. When none matches, `given` itself (the API then answers
/// 404, or finds something the list does not show). Several → an error naming them.
pub fn resolve(kind: &str, given: &str, known: &[String]) -> anyhow::Result<String> {
    if known.iter().any(|id| id == given) {
        return Ok(given.to_owned());
    }
    let matches: Vec<&String> = known.iter().filter(|id| id.starts_with(given)).collect();
    match matches.as_slice() {
        [] => Ok(given.to_owned()),
        [one] => Ok((*one).clone()),
        many => {
            let names: Vec<&str> = many.iter().map(|id| id.as_str()).collect();
            bail!(
                "{kind} id prefix {given:?} is ambiguous: it matches {}",
                names.join(", ")
            )
        }
    }
}

/// The sandbox `given` names (an id or a unique prefix of one). A whole id is used as
/// it is, without listing (a list of thousands for every exec would be a waste).
pub async fn sandbox(api: &ApiClient, given: &str) -> anyhow::Result<String> {
    if is_whole_sandbox_id(given) {
        return Ok(given.to_owned());
    }
    resolve_listed(api, "sandbox", "/api/v1/sandboxes", given).await
}

/// The shape of the ids the control plane gives sandboxes: `sbx-` and 16 hex digits.
fn is_whole_sandbox_id(id: &str) -> bool {
    id.strip_prefix("sbx-")
        .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The worker `given` names (an id or a unique prefix of one).
pub async fn worker(api: &ApiClient, given: &str) -> anyhow::Result<String> {
    resolve_listed(api, "worker", "/api/v1/workers", given).await
}

/// The API key `given` names (an id or a unique prefix of one).
pub async fn api_key(api: &ApiClient, given: &str) -> anyhow::Result<String> {
    resolve_listed(api, "API key", "/api/v1/keys", given).await
}

async fn resolve_listed(
    api: &ApiClient,
    kind: &str,
    path: &str,
    given: &str,
) -> anyhow::Result<String> {
    // a list the key may not read (a narrower scope) leaves the id as given
    let Ok(list) = api.get::<Vec<Value>>(path).await else {
        return Ok(given.to_owned());
    };
    let known: Vec<String> = list
        .iter()
        .filter_map(|item| item["id"].as_str().map(str::to_owned))
        .collect();
    resolve(kind, given, &known)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_resolve_to_one_id_or_name_the_candidates() {
        let known: Vec<String> = ["sbx-3f2a", "sbx-3f9b", "sbx-71", "sbx-7"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(resolve("sandbox", "sbx-3f2", &known).unwrap(), "sbx-3f2a");
        // an exact id wins over being a prefix of another
        assert_eq!(resolve("sandbox", "sbx-7", &known).unwrap(), "sbx-7");
        assert_eq!(resolve("sandbox", "sbx-zz", &known).unwrap(), "sbx-zz");
        let err = resolve("sandbox", "sbx-3f", &known)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ambiguous") && err.contains("sbx-3f2a, sbx-3f9b"),
            "{err}"
        );
    }
}
