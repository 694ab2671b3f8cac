//! Every bad enrollment is refused with a clear error and spends nothing: bad join
//! tokens, used-up tokens, pinned ids, hostile CSRs, and a control plane whose CA does
//! not match the token's pin.

use std::time::Duration;

use berth_pki::{JoinTokenSpec, TokenSigner, generate_key_and_csr};
use berth_proto::v1 as pb;
use berth_testkit::{TestControlPlane, TestWorker};
use tonic::Code;

fn info() -> pb::WorkerInfo {
    pb::WorkerInfo {
        hostname: "test".into(),
        advertise_addr: "127.0.0.1:9".into(),
        providers: vec![pb::ProviderHealth {
            name: "mock".into(),
            healthy: true,
            message: String::new(),
        }],
        capacity: Some(pb::Capacity {
            max_sandboxes: 1,
            vcpus: 1,
            memory_mb: 64,
        }),
        version: "test".into(),
    }
}

fn join_request(token: &str, worker_id: &str, csr_pem: String) -> pb::EnrollRequest {
    pb::EnrollRequest {
        credential: Some(pb::enroll_request::Credential::JoinToken(token.to_owned())),
        worker_id: worker_id.to_owned(),
        csr_pem,
        info: Some(info()),
    }
}

async fn enroll(
    cp: &TestControlPlane,
    token: &str,
    worker_id: &str,
) -> Result<pb::EnrollResponse, tonic::Status> {
    let csr = generate_key_and_csr(if worker_id.is_empty() { "w" } else { worker_id })
        .unwrap()
        .csr_pem;
    cp.anonymous_mesh_client()
        .enroll(join_request(token, worker_id, csr))
        .await
        .map(tonic::Response::into_inner)
}

fn assert_refused(result: Result<pb::EnrollResponse, tonic::Status>, code: Code, words: &str) {
    let status = result.expect_err("enrollment must be refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(words),
        "{:?} should mention {words:?}",
        status.message()
    );
}

/// The control plane's own token key, with another issuer name or none changed.
fn control_plane_signer(cp: &TestControlPlane, issuer: &str) -> TokenSigner {
    let pem = std::fs::read_to_string(cp.config.data_dir.join("token.key")).unwrap();
    TokenSigner::from_pem(&pem, issuer).unwrap()
}

fn spec(ttl: Duration, not_before: Option<i64>) -> JoinTokenSpec {
    JoinTokenSpec {
        ttl,
        uses: 1,
        worker_id: None,
        not_before,
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn bad_join_tokens_are_refused() {
    let cp = TestControlPlane::start().await;
    let issuer = cp.fleet.authority().tokens().issuer().to_owned();
    let signer = control_plane_signer(&cp, &issuer);
    let ca = cp.ca_fingerprint();

    let (expired, _) = signer
        .create_join_token(&spec(Duration::from_secs(600), Some(now() - 3600)), &ca)
        .unwrap();
    assert_refused(
        enroll(&cp, &expired, "").await,
        Code::Unauthenticated,
        "expired",
    );

    let (early, _) = signer
        .create_join_token(&spec(Duration::from_secs(600), Some(now() + 3600)), &ca)
        .unwrap();
    assert_refused(
        enroll(&cp, &early, "").await,
        Code::Unauthenticated,
        "not valid yet",
    );

    let (other_issuer, _) = control_plane_signer(&cp, "spiffe://elsewhere/controlplane")
        .create_join_token(&spec(Duration::from_secs(600), None), &ca)
        .unwrap();
    assert_refused(
        enroll(&cp, &other_issuer, "").await,
        Code::Unauthenticated,
        "issuer",
    );

    let (worker_token, _) = signer
        .create_worker_token("w1", Duration::from_secs(600))
        .unwrap();
    assert_refused(
        enroll(&cp, &worker_token, "").await,
        Code::Unauthenticated,
        "audience",
    );

    let (forged, _) = TokenSigner::generate(&issuer)
        .unwrap()
        .create_join_token(&spec(Duration::from_secs(600), None), &ca)
        .unwrap();
    assert_refused(
        enroll(&cp, &forged, "").await,
        Code::Unauthenticated,
        "signature",
    );

    let (other_ca, _) = signer
        .create_join_token(&spec(Duration::from_secs(600), None), &"0".repeat(64))
        .unwrap();
    // the bootstrap TLS pins the token's CA, so send this one over a trusted channel
    assert_refused(
        enroll(&cp, &other_ca, "").await,
        Code::Unauthenticated,
        "ca",
    );

    assert_refused(
        enroll(&cp, "not-a-token", "").await,
        Code::Unauthenticated,
        "malformed",
    );
    assert!(
        cp.fleet.list_workers().await.unwrap().is_empty(),
        "nothing enrolled"
    );
    cp.stop().await;
}

#[tokio::test]
async fn a_used_up_token_is_refused_and_a_refusal_spends_nothing() {
    let cp = TestControlPlane::start().await;
    let token = cp.join_token(None).await;

    // a broken CSR is refused before the token is spent
    let broken = cp
        .anonymous_mesh_client()
        .enroll(join_request(
            &token,
            "w1",
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".into(),
        ))
        .await;
    assert_eq!(broken.unwrap_err().code(), Code::InvalidArgument);
    let bad_id = enroll(&cp, &token, "Not A Valid Id").await;
    assert_eq!(bad_id.unwrap_err().code(), Code::InvalidArgument);

    let granted = enroll(&cp, &token, "w1")
        .await
        .expect("the token still has its use");
    assert_eq!(granted.worker_id, "w1");
    assert_refused(
        enroll(&cp, &token, "w2").await,
        Code::Unauthenticated,
        "used up",
    );
    cp.stop().await;
}

#[tokio::test]
async fn a_token_pinned_to_another_worker_id_is_refused() {
    let cp = TestControlPlane::start().await;
    let token = cp.join_token(Some("pinned")).await;
    assert_refused(
        enroll(&cp, &token, "intruder").await,
        Code::PermissionDenied,
        "pinned",
    );
    // the worker refuses it too, before it sends anything
    let dir = tempfile::tempdir().unwrap();
    let mut config = cp.worker_config(dir.path(), Some(token.clone()));
    config.id = Some("intruder".into());
    let err = TestWorker::start(config).await.err().expect("refused");
    assert!(err.to_string().contains("pinned"), "{err}");
    // and the pinned id itself still enrolls
    let granted = enroll(&cp, &token, "").await.unwrap();
    assert_eq!(granted.worker_id, "pinned");
    cp.stop().await;
}

#[tokio::test]
async fn an_unpinned_token_cannot_take_over_an_enrolled_worker_id() {
    let cp = TestControlPlane::start().await;
    enroll(&cp, &cp.join_token(None).await, "w1").await.unwrap();
    assert_refused(
        enroll(&cp, &cp.join_token(None).await, "w1").await,
        Code::FailedPrecondition,
        "already enrolled",
    );
    // a token pinned to the id may (a re-provisioned machine)
    enroll(&cp, &cp.join_token(Some("w1")).await, "w1")
        .await
        .unwrap();
    cp.stop().await;
}

#[tokio::test]
async fn a_csr_asking_for_ca_rights_and_foreign_names_gets_a_plain_worker_leaf() {
    let cp = TestControlPlane::start().await;
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["evil.example".to_owned(), "localhost".to_owned()])
            .unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.subject_alt_names.push(rcgen::SanType::URI(
        "spiffe://berth.local/controlplane".try_into().unwrap(),
    ));
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let granted = cp
        .anonymous_mesh_client()
        .enroll(join_request(&cp.join_token(None).await, "plain", csr))
        .await
        .unwrap()
        .into_inner();
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(granted.certificate_pem.as_bytes()).unwrap();
    let info = berth_pki::cert_info(&der).unwrap();
    assert!(!info.is_ca);
    assert_eq!(
        info.spiffe_id.unwrap().to_string(),
        "spiffe://berth.local/worker/plain"
    );
    let text = String::from_utf8_lossy(der.as_ref()).into_owned();
    assert!(!text.contains("evil.example") && !text.contains("localhost"));
    cp.stop().await;
}

#[tokio::test]
async fn a_worker_refuses_a_control_plane_whose_ca_does_not_match_the_token() {
    let trusted = TestControlPlane::start().await;
    let impostor = TestControlPlane::start().await;
    let token = trusted.join_token(None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = trusted.worker_config(dir.path(), Some(token.clone()));
    config.control_plane = vec![impostor.mesh_url()];
    let err = TestWorker::start(config).await.err().expect("refused");
    assert!(
        err.to_string().to_lowercase().contains("pin") || err.to_string().contains("certificate"),
        "{err}"
    );
    assert!(impostor.fleet.list_workers().await.unwrap().is_empty());
    assert!(!dir.path().join("identity.json").exists(), "nothing stored");
    // the token was never shown to the impostor's enrollment, and still works
    let config = trusted.worker_config(dir.path(), Some(token));
    let worker = TestWorker::start(config)
        .await
        .expect("enrolls with the real one");
    worker.stop().await;
    trusted.stop().await;
    impostor.stop().await;
}

#[tokio::test]
async fn enrollments_over_the_rate_limit_are_told_to_retry_and_workers_back_off() {
    let cp = TestControlPlane::start_with(|config| {
        config.limits.enrollments_per_second = 1;
        config.limits.enrollment_burst = 1;
    })
    .await;
    // two enrollments in the same instant: the second is asked to slow down
    let first = enroll(&cp, &cp.join_token(None).await, "").await;
    assert!(first.is_ok(), "{first:?}");
    let second = enroll(&cp, &cp.join_token(None).await, "").await;
    assert_refused(second, Code::ResourceExhausted, "retry");

    // workers starting together all get in, spread out by their backoff
    let dir = tempfile::tempdir().unwrap();
    let mut starts = Vec::new();
    for index in 0..3 {
        let config = cp.worker_config(
            &dir.path().join(format!("w{index}")),
            Some(cp.join_token(None).await),
        );
        starts.push(tokio::spawn(TestWorker::start(config)));
    }
    let mut workers = Vec::new();
    for start in starts {
        workers.push(
            start
                .await
                .unwrap()
                .expect("the worker retried until admitted"),
        );
    }
    assert_eq!(cp.fleet.list_workers().await.unwrap().len(), 4);
    for worker in workers {
        worker.stop().await;
    }
    cp.stop().await;
}

#[tokio::test]
async fn a_minute_of_clock_skew_is_tolerated() {
    let cp = TestControlPlane::start().await;
    let issuer = cp.fleet.authority().tokens().issuer().to_owned();
    let signer = control_plane_signer(&cp, &issuer);
    let ca = cp.ca_fingerprint();
    // a token minted by a clock 50s ahead (not valid yet by ours) is accepted...
    let (ahead, claims) = signer
        .create_join_token(&spec(Duration::from_secs(600), Some(now() + 50)), &ca)
        .unwrap();
    cp.fleet
        .store()
        .insert_join_token(&berth_controlplane::store::NewJoinToken {
            jti: claims.jti.clone(),
            worker_id: None,
            max_uses: 1,
            created_at: now(),
            expires_at: claims.exp,
            created_by: "test".into(),
            pool: "default".into(),
            labels: "{}".into(),
        })
        .await
        .unwrap();
    let granted = enroll(&cp, &ahead, "skewed")
        .await
        .expect("50s of skew is tolerated");
    // ...and the certificate it gets is valid from minutes before now, so a worker whose
    // clock runs a minute behind already accepts it
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(granted.certificate_pem.as_bytes()).unwrap();
    let info = berth_pki::cert_info(&der).unwrap();
    assert!(
        info.not_before <= now() - 60,
        "not backdated: {}",
        info.not_before
    );
    cp.stop().await;
}
