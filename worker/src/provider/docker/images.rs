//! Images pushed to this worker (`berth images push`): a `docker save` archive
//! streamed from the control plane through the mesh and loaded into the engine as it
//! arrives (nothing is spooled here). An archive cut off half-way fails the load and
//! leaves no image behind; the engine's own load is all or nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bollard::Docker;
use bollard::query_parameters::ImportImageOptions;
use bytes::Bytes;
use futures::StreamExt;

use super::engine::engine_error;
use crate::provider::{ByteStream, LoadedImages, ProviderError};

/// Loads the `docker save` archive `archive` into the engine; answers the images it
/// held (`name:tag`, or the id of an untagged one) and its size.
pub async fn load(docker: &Docker, archive: ByteStream) -> Result<LoadedImages, ProviderError> {
    let received = Arc::new(AtomicU64::new(0));
    // why the archive stopped, when it did not end cleanly: the engine then only
    // says its input broke off
    let interrupted: Arc<Mutex<Option<ProviderError>>> = Arc::default();
    let body = {
        let (received, interrupted) = (received.clone(), interrupted.clone());
        archive.map(move |chunk| match chunk {
            Ok(data) => {
                received.fetch_add(data.len() as u64, Ordering::Relaxed);
                Ok(Bytes::from(data))
            }
            Err(err) => {
                let message = err.to_string();
                *interrupted.lock().unwrap_or_else(PoisonError::into_inner) = Some(err);
                Err(std::io::Error::other(message))
            }
        })
    };
    let options = ImportImageOptions {
        quiet: true,
        ..Default::default()
    };
    let mut progress = docker.import_image_stream(options, body, None).boxed();
    let mut images = Vec::new();
    let mut failure = None;
    while let Some(step) = progress.next().await {
        match step {
            Ok(info) => {
                if let Some(detail) = info.error_detail {
                    failure = Some(detail.message.unwrap_or_default());
                }
                if let Some(line) = info.stream {
                    images.extend(loaded_images(&line));
                }
            }
            Err(err) => {
                failure
                    .get_or_insert_with(|| engine_error("load the image archive", err).to_string());
            }
        }
    }
    if let Some(err) = interrupted
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    {
        return Err(err);
    }
    if let Some(failure) = failure {
        return Err(ProviderError::InvalidArgument(format!(
            "the engine could not load the archive (is it `docker save` output?): {failure}"
        )));
    }
    if images.is_empty() {
        return Err(ProviderError::InvalidArgument(
            "the archive held no image (is it `docker save` output?)".into(),
        ));
    }
    tracing::info!(images = ?images, "images loaded");
    Ok(LoadedImages {
        images,
        bytes: received.load(Ordering::Relaxed),
    })
}

/// The images a line of the engine's load output names (`Loaded image: busybox:1`,
/// `Loaded image ID: sha256:…`).
fn loaded_images(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|line| {
            line.trim()
                .strip_prefix("Loaded image ID: ")
                .or_else(|| line.trim().strip_prefix("Loaded image: "))
        })
        .map(|image| image.trim().to_owned())
        .filter(|image| !image.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loaded_images_are_read_from_the_engines_output() {
        assert_eq!(
            loaded_images("Loaded image: berth-test-busybox:latest\n"),
            ["berth-test-busybox:latest"]
        );
        assert_eq!(
            loaded_images("Loaded image ID: sha256:abc\nLoaded image: a:1\n"),
            ["sha256:abc", "a:1"]
        );
        assert!(loaded_images("unrelated progress\n").is_empty());
    }
}
