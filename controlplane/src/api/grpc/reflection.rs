//! gRPC server reflection (v1 and v1alpha) on the API port, no key needed: it
//! describes `berth.v1` (the protos' encoded descriptor set from `berth-proto`), the
//! health service and the reflection services themselves, so `grpcurl` and generated
//! clients can discover what is served.

use tonic_reflection::server::{v1, v1alpha};

fn builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(berth_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
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
