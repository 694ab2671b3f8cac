//! `berth images push IMAGE`: an image from this machine's docker engine (or a
//! `docker save` archive) streamed through the control plane to the workers' engines,
//! for workers that cannot pull from a registry. A line per worker as its load ends;
//! exit 1 when one failed.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use futures::StreamExt;
use serde_json::Value;

use crate::client::{ApiClient, ClientArgs};
use crate::exit::Exit;
use crate::outln;
use crate::output;

#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Push an image to the docker workers' engines (admin): read from this
    /// machine's docker engine (DOCKER_HOST or the local socket), or from a
    /// `docker save` archive with --from-file, and loaded on every ready docker
    /// worker (or those of --workers) as it streams through.
    Push {
        /// The image, e.g. python:3.12 (from the local engine).
        #[arg(required_unless_present = "from_file", conflicts_with = "from_file")]
        image: Option<String>,
        /// A `docker save` archive to push instead (`-`: stdin).
        #[arg(long, value_name = "TAR")]
        from_file: Option<PathBuf>,
        /// Only these workers (ids, comma list or repeated).
        #[arg(long, value_delimiter = ',')]
        workers: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn run(command: ImagesCommand) -> anyhow::Result<()> {
    match command {
        ImagesCommand::Push {
            image,
            from_file,
            workers,
            client,
        } => push(image.as_deref(), from_file, &workers, &client).await,
    }
}

async fn push(
    image: Option<&str>,
    from_file: Option<PathBuf>,
    workers: &[String],
    client: &ClientArgs,
) -> anyhow::Result<()> {
    let body = match (image, from_file) {
        (_, Some(path)) if path.as_os_str() == "-" => {
            reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(tokio::io::stdin()))
        }
        (_, Some(path)) => reqwest::Body::from(
            tokio::fs::File::open(&path)
                .await
                .with_context(|| format!("cannot open {}", path.display()))?,
        ),
        (Some(image), None) => engine_archive(image).await?,
        (None, None) => anyhow::bail!("name an image, or a `docker save` archive with --from-file"),
    };
    let api = ApiClient::new(client)?;
    let mut path = "/api/v1/images/push?".to_owned();
    if !workers.is_empty() {
        let workers = crate::sandbox::encode(&workers.join(","));
        path.push_str(&format!("workers={workers}&"));
    }
    // a push the control plane would refuse (no such worker, no docker worker) is
    // told before the archive streams: it answers those before reading the body, and
    // an upload refused that way breaks off before its answer can be read
    let _: Value = api
        .raw(api.request(reqwest::Method::POST, &format!("{path}dry_run=true")))
        .await?
        .json()
        .await
        .context("the control plane's answer to the push check is not JSON")?;
    let request = api
        .request(reqwest::Method::POST, &path)
        .header("Content-Type", "application/x-tar")
        .body(body);
    // a connection the control plane closed mid-upload is no closed stdout
    let response = api
        .raw(request)
        .await
        .map_err(|err| anyhow::anyhow!("{err:#}"))?;
    let (mut failed, mut done) = (0usize, 0usize);
    crate::sandbox::for_each_line(response, |line| {
        if line.is_empty() {
            return Ok(None::<()>);
        }
        let event: Value = serde_json::from_str(line)
            .with_context(|| format!("a line of the push is not JSON: {line}"))?;
        if client.structured() {
            outln!("{line}")?;
        }
        let text = |key: &str| output::text(&event[key]);
        let status = text("status");
        if status == "loading" {
            return Ok(None);
        }
        done += 1;
        if status != "loaded" {
            failed += 1;
        }
        if !client.structured() {
            let detail = if status == "loaded" {
                let images: Vec<&str> = event["images"]
                    .as_array()
                    .map(|images| images.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                format!(
                    "{} ({:.1} MiB)",
                    images.join(", "),
                    event["bytes"].as_u64().unwrap_or(0) as f64 / (1u64 << 20) as f64
                )
            } else {
                text("error")
            };
            outln!("{}  {status}  {detail}", text("worker_id"))?;
        }
        Ok(None)
    })
    .await?;
    if done == 0 {
        anyhow::bail!("the push ended before any worker answered");
    }
    if failed > 0 {
        return Err(Exit {
            code: 1,
            message: Some(format!("the push failed on {failed} of {done} workers")),
        }
        .into());
    }
    Ok(())
}

/// `image` as `docker save` writes it, streamed from this machine's engine.
async fn engine_archive(image: &str) -> anyhow::Result<reqwest::Body> {
    let docker = bollard::Docker::connect_with_local_defaults()
        .context("cannot connect to the local docker engine (DOCKER_HOST)")?
        .negotiate_version()
        .await
        .context("the local docker engine does not answer (DOCKER_HOST)")?;
    docker.inspect_image(image).await.with_context(|| {
        format!("image {image:?} is not on this machine's docker engine (docker pull or build it first, or pass --from-file)")
    })?;
    let archive = docker
        .export_image(image)
        .map(|chunk| chunk.map_err(std::io::Error::other));
    Ok(reqwest::Body::wrap_stream(archive))
}
