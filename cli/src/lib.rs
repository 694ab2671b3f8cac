//! What the `berth` binary wires together beyond its flags: the serve config file
//! ([`serve_config`]: the control plane's settings plus the `local_worker` section) and
//! the in-process [`local_worker`] that `berth serve --local-worker` starts beside the
//! control plane. They live here, not in `berth-controlplane`, so the control plane
//! never depends on the worker crate or its docker client.

pub mod local_worker;
pub mod serve_config;
