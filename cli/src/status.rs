//! `berth status`: the control plane and its fleet in one screen.

use serde_json::Value;

use crate::client::{ApiClient, ClientArgs};
use crate::{outln, output};

pub async fn run(client: ClientArgs) -> anyhow::Result<()> {
    let status: Value = ApiClient::new(&client)?.get("/api/v1/status").await?;
    if client.structured() {
        return output::structured(client.output, &status);
    }
    let counts = |value: &Value| -> String {
        let parts: Vec<String> = value
            .as_object()
            .map(|map| map.iter().map(|(k, v)| format!("{k} {v}")).collect())
            .unwrap_or_default();
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join(", ")
        }
    };
    outln!(
        "control plane  berth {} · trust domain {}",
        output::text(&status["version"]),
        output::text(&status["trust_domain"])
    )?;
    outln!("store          {}", output::text(&status["store"]))?;
    outln!(
        "CA             expires {} · sha256 {}",
        output::text(&status["ca"]["expires_at"]),
        output::text(&status["ca"]["fingerprint"])
    )?;
    outln!(
        "workers        {} ({})",
        output::text(&status["workers"]["total"]),
        counts(&status["workers"]["by_status"])
    )?;
    outln!(
        "sandboxes      {} ({}) · capacity {}",
        output::text(&status["sandboxes"]["total"]),
        counts(&status["sandboxes"]["by_state"]),
        output::text(&status["capacity"])
    )?;
    match status["ssh"].as_object() {
        Some(ssh) => outln!(
            "ssh gateway    {} · host key {}",
            output::text(&ssh["address"]),
            output::text(&ssh["host_key_fingerprint"])
        )?,
        None => outln!("ssh gateway    off (berth serve --ssh-listen 127.0.0.1:2222)")?,
    }
    Ok(())
}
