//! gRPC server reflection (v1 and v1alpha) on the API port, no key needed: it
//! describes `berth.v1` (the protos' encoded descriptor set from `berth-proto`), the
//! health service and the reflection services themselves, so `grpcurl` and generated
//! clients can discover what is served.

use tonic_reflection::server::{v1, v1alpha};

/// What this port serves, and so what reflection lists. The descriptor set also holds
/// the worker mesh's services (`berth.v1.ControlPlane`, `berth.v1.WorkerService`), which
/// are served on the mesh port only; listing them here would send clients to calls
/// that answer UNIMPLEMENTED.
pub const ADVERTISED: [&str; 5] = [
    "berth.v1.Sandboxes",
    "berth.v1.Admin",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

fn builder() -> tonic_reflection::server::Builder<'static> {
    ADVERTISED.iter().fold(
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(berth_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // both versions are served, so each server describes both
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            ),
        |builder, name| builder.with_service_name(*name),
    )
}

/// `grpc.reflection.v1.ServerReflection`.
pub fn v1() -> v1::ServerReflectionServer<impl v1::ServerReflection> {
    builder()
        .build_v1()
        .expect("the compiled descriptor sets describe themselves")
}

/// `grpc.reflection.v1alpha.ServerReflection`, which older clients ask.
pub fn v1alpha() -> v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection> {
    builder()
        .build_v1alpha()
        .expect("the compiled descriptor sets describe themselves")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_descriptor_sets_build_both_versions() {
        let _ = super::v1();
        let _ = super::v1alpha();
    }
}
