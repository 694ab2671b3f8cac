//! gRPC clients of a test control plane's API port: a plain channel to it and requests
//! carrying an API key, as a client's `x-api-key` metadata does.

use tonic::transport::Channel;

/// A channel to the API port at `api_url` (`http://…` of a test control plane).
pub async fn api_channel(api_url: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(api_url.to_owned())
        .expect("a valid API url")
        .connect()
        .await
        .expect("the API port takes gRPC")
}

/// `message` as a request with `key` in its `x-api-key` metadata.
pub fn keyed<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-api-key", key.parse().expect("a key is ASCII"));
    request
}
