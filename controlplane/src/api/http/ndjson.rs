//! Answers that stream NDJSON (`application/x-ndjson`): one JSON object a line, sent
//! as each is produced.

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Serialize;

pub const CONTENT_TYPE: &str = "application/x-ndjson";

/// `items` as an NDJSON body, uncached.
pub fn response<T, S>(items: S) -> Response
where
    T: Serialize,
    S: Stream<Item = T> + Send + 'static,
{
    let lines = items.map(|item| {
        let mut line = serde_json::to_vec(&item).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(line)
    });
    (
        [
            (header::CONTENT_TYPE, CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(lines),
    )
        .into_response()
}
