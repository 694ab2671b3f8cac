//! `berth version`: this client's version and the server's (`GET /api/v1/status`'s
//! `version`). The server part is best effort: when it cannot be read the line says
//! `server: unreachable (…)` and the command still exits 0, since the client's version
//! is what it was asked first and scripts use it to check the binary itself.

use serde_json::{Value, json};

use crate::client::{ApiClient, ClientArgs};
use crate::{outln, output};

pub async fn run(client: ClientArgs) -> anyhow::Result<()> {
    let mine = env!("CARGO_PKG_VERSION");
    let server = match ApiClient::new(&client) {
        Ok(api) => api
            .get::<Value>("/api/v1/status")
            .await
            .map(|status| (api.base().to_owned(), output::text(&status["version"]))),
        Err(err) => Err(err),
    };
    if client.structured() {
        let value = match &server {
            Ok((url, version)) => json!({"client": mine, "server": version, "api_url": url}),
            Err(err) => json!({"client": mine, "server": null, "error": format!("{err:#}")}),
        };
        return output::structured(client.output, &value);
    }
    outln!("client: berth {mine}")?;
    match server {
        Ok((url, version)) => outln!("server: berth {version} ({url})")?,
        Err(err) => outln!("server: unreachable ({err:#})")?,
    }
    Ok(())
}
