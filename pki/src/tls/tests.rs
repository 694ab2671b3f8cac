//! Real TLS handshakes between the configs of this module, pumped in memory.

use std::collections::HashSet;
use std::ops::DerefMut;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, ClientConnection, ConnectionCommon, ServerConfig, ServerConnection};
use rustls_pki_types::{CertificateDer, ServerName};

use super::*;
use crate::ca::{CertificateAuthority, ca_fingerprint};
use crate::csr::generate_key_and_csr;
use crate::identity::peer_spiffe_id;

const TD: &str = "berth.local";
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Which side of a handshake failed, and why.
#[derive(Debug)]
enum Failure {
    Client(rustls::Error),
    Server(rustls::Error),
}

impl Failure {
    fn server(self) -> rustls::Error {
        match self {
            Failure::Server(e) => e,
            Failure::Client(e) => panic!("expected the server to fail, client failed: {e}"),
        }
    }

    fn client(self) -> rustls::Error {
        match self {
            Failure::Client(e) => e,
            Failure::Server(e) => panic!("expected the client to fail, server failed: {e}"),
        }
    }
}

/// Moves every pending TLS record from one side to the other.
fn transfer<A, B, DA, DB>(from: &mut A, to: &mut B)
where
    A: DerefMut<Target = ConnectionCommon<DA>>,
    B: DerefMut<Target = ConnectionCommon<DB>>,
{
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).unwrap();
    }
}

/// Runs a full handshake; Ok only when both sides completed it.
fn handshake(
    client: ClientConfig,
    server: ServerConfig,
) -> Result<(ClientConnection, ServerConnection), Failure> {
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = ClientConnection::new(Arc::new(client), name).unwrap();
    let mut server = ServerConnection::new(Arc::new(server)).unwrap();
    for _ in 0..20 {
        transfer(&mut client, &mut server);
        server.process_new_packets().map_err(Failure::Server)?;
        transfer(&mut server, &mut client);
        client.process_new_packets().map_err(Failure::Client)?;
        let idle = !client.wants_write() && !server.wants_write();
        if idle && !client.is_handshaking() && !server.is_handshaking() {
            return Ok((client, server));
        }
    }
    panic!("handshake did not finish");
}

struct Mesh {
    ca: CertificateAuthority,
    control_plane: Arc<ReloadableIdentity>,
}

impl Mesh {
    fn new(trust_domain: &str) -> Self {
        let ca = CertificateAuthority::generate(trust_domain).unwrap();
        let cp = ca
            .issue_control_plane(&["localhost".into()], &[], DAY)
            .unwrap();
        // the control plane presents leaf + CA
        let chain = format!("{}{}", cp.cert.cert_pem, ca.cert_pem());
        let control_plane = Arc::new(ReloadableIdentity::from_pem(&chain, &cp.key_pem).unwrap());
        Self { ca, control_plane }
    }

    fn worker(&self, worker_id: &str) -> (Arc<ReloadableIdentity>, String) {
        let req = generate_key_and_csr(worker_id).unwrap();
        let cert = self
            .ca
            .sign_worker_csr(&req.csr_pem, worker_id, DAY)
            .unwrap();
        let identity = ReloadableIdentity::from_pem(&cert.cert_pem, &req.key_pem).unwrap();
        (Arc::new(identity), cert.serial_hex)
    }

    fn mesh_server(&self, revocation: Arc<dyn RevocationCheck>) -> ServerConfig {
        mesh_server_config(
            self.ca.cert_der(),
            TD,
            self.control_plane.clone(),
            revocation,
        )
        .unwrap()
    }

    fn client_to_control_plane(&self, identity: Option<Arc<ReloadableIdentity>>) -> ClientConfig {
        mesh_client_config(self.ca.cert_der(), SpiffeId::control_plane(TD), identity).unwrap()
    }
}

#[derive(Debug, Default)]
struct RevokedSerials(HashSet<String>);

impl RevocationCheck for RevokedSerials {
    fn is_revoked(&self, serial_hex: &str, _peer: &SpiffeId) -> bool {
        self.0.contains(serial_hex)
    }
}

fn message(err: &rustls::Error) -> String {
    err.to_string()
}

#[test]
fn mesh_server_accepts_a_worker_and_sees_its_identity() {
    let mesh = Mesh::new(TD);
    let (worker, _) = mesh.worker("w1");
    let (client, server) = handshake(
        mesh.client_to_control_plane(Some(worker)),
        mesh.mesh_server(Arc::new(NoRevocation)),
    )
    .unwrap();
    let peer = peer_spiffe_id(server.peer_certificates().unwrap()).unwrap();
    assert_eq!(peer, SpiffeId::worker(TD, "w1"));
    assert_eq!(server.alpn_protocol(), Some(ALPN_H2));
    assert_eq!(client.alpn_protocol(), Some(ALPN_H2));
    let server_id = peer_spiffe_id(client.peer_certificates().unwrap()).unwrap();
    assert_eq!(server_id, SpiffeId::control_plane(TD));
}

#[test]
fn mesh_server_accepts_no_client_cert_but_worker_server_refuses_it() {
    let mesh = Mesh::new(TD);
    let (_, server) = handshake(
        mesh.client_to_control_plane(None),
        mesh.mesh_server(Arc::new(NoRevocation)),
    )
    .unwrap();
    assert!(server.peer_certificates().is_none());

    let (worker, _) = mesh.worker("w1");
    let server = worker_server_config(mesh.ca.cert_der(), TD, worker).unwrap();
    let client = mesh_client_config(mesh.ca.cert_der(), SpiffeId::worker(TD, "w1"), None).unwrap();
    let err = handshake(client, server).unwrap_err().server();
    assert_eq!(err, rustls::Error::NoCertificatesPresented);
}

#[test]
fn control_plane_reaches_a_worker_server() {
    let mesh = Mesh::new(TD);
    let (worker, _) = mesh.worker("w1");
    let server = worker_server_config(mesh.ca.cert_der(), TD, worker).unwrap();
    let client = mesh_client_config(
        mesh.ca.cert_der(),
        SpiffeId::worker(TD, "w1"),
        Some(mesh.control_plane.clone()),
    )
    .unwrap();
    let (_, server) = handshake(client, server).unwrap();
    let peer = peer_spiffe_id(server.peer_certificates().unwrap()).unwrap();
    assert_eq!(peer, SpiffeId::control_plane(TD));
}

#[test]
fn cert_from_another_ca_is_refused() {
    let mesh = Mesh::new(TD);
    let foreign = Mesh::new(TD);
    let (intruder, _) = foreign.worker("w1");
    let err = handshake(
        mesh.client_to_control_plane(Some(intruder)),
        mesh.mesh_server(Arc::new(NoRevocation)),
    )
    .unwrap_err()
    .server();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature
            )
        ),
        "{err}"
    );

    // and a client refuses a server from another CA
    let err = handshake(
        mesh.client_to_control_plane(None),
        foreign.mesh_server(Arc::new(NoRevocation)),
    )
    .unwrap_err()
    .client();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature
            )
        ),
        "{err}"
    );
}

#[test]
fn worker_server_refuses_a_worker_client() {
    let mesh = Mesh::new(TD);
    let (server_identity, _) = mesh.worker("w1");
    let (other_worker, _) = mesh.worker("w2");
    let server = worker_server_config(mesh.ca.cert_der(), TD, server_identity).unwrap();
    let client = mesh_client_config(
        mesh.ca.cert_der(),
        SpiffeId::worker(TD, "w1"),
        Some(other_worker),
    )
    .unwrap();
    let err = handshake(client, server).unwrap_err().server();
    assert!(message(&err).contains("is not the control plane"), "{err}");
}

#[test]
fn mesh_server_refuses_the_control_plane_identity_and_other_trust_domains() {
    let mesh = Mesh::new(TD);
    let err = handshake(
        mesh.client_to_control_plane(Some(mesh.control_plane.clone())),
        mesh.mesh_server(Arc::new(NoRevocation)),
    )
    .unwrap_err()
    .server();
    assert!(message(&err).contains("is not a worker"), "{err}");

    // same CA, but the server is configured for another trust domain
    let (worker, _) = mesh.worker("w1");
    let server = mesh_server_config(
        mesh.ca.cert_der(),
        "other.local",
        mesh.control_plane.clone(),
        Arc::new(NoRevocation),
    )
    .unwrap();
    let err = handshake(mesh.client_to_control_plane(Some(worker)), server)
        .unwrap_err()
        .server();
    assert!(message(&err).contains("trust domain"), "{err}");
}

#[test]
fn revoked_serial_is_refused() {
    let mesh = Mesh::new(TD);
    let (revoked, serial) = mesh.worker("w1");
    let (fine, _) = mesh.worker("w1");
    let revocation = Arc::new(RevokedSerials(HashSet::from([serial])));
    let err = handshake(
        mesh.client_to_control_plane(Some(revoked)),
        mesh.mesh_server(revocation.clone()),
    )
    .unwrap_err()
    .server();
    assert_eq!(
        err,
        rustls::Error::InvalidCertificate(CertificateError::Revoked)
    );
    // another certificate of the same worker is unaffected
    handshake(
        mesh.client_to_control_plane(Some(fine)),
        mesh.mesh_server(revocation),
    )
    .unwrap();
}

#[test]
fn client_refuses_a_server_with_the_wrong_identity() {
    let mesh = Mesh::new(TD);
    let (worker, _) = mesh.worker("w1");
    // a worker identity posing as the control plane
    let server = mesh_server_config(
        mesh.ca.cert_der(),
        TD,
        worker.clone(),
        Arc::new(NoRevocation),
    )
    .unwrap();
    let err = handshake(mesh.client_to_control_plane(None), server)
        .unwrap_err()
        .client();
    assert!(
        message(&err).contains("expected spiffe://berth.local/controlplane"),
        "{err}"
    );

    // the control plane dialing w2 but reaching w1
    let server = worker_server_config(mesh.ca.cert_der(), TD, worker).unwrap();
    let client = mesh_client_config(
        mesh.ca.cert_der(),
        SpiffeId::worker(TD, "w2"),
        Some(mesh.control_plane.clone()),
    )
    .unwrap();
    let err = handshake(client, server).unwrap_err().client();
    assert!(
        message(&err).contains("spiffe://berth.local/worker/w1"),
        "{err}"
    );
}

#[test]
fn bootstrap_with_the_right_pin_records_the_ca() {
    let mesh = Mesh::new(TD);
    let (client, pinned) = bootstrap_client_config(&mesh.ca.fingerprint()).unwrap();
    assert_eq!(pinned.get(), None);
    handshake(client, mesh.mesh_server(Arc::new(NoRevocation))).unwrap();
    let ca_der = pinned.get().unwrap();
    assert_eq!(ca_der, mesh.ca.cert_der());
    assert_eq!(ca_fingerprint(&ca_der), mesh.ca.fingerprint());
}

#[test]
fn bootstrap_with_a_wrong_pin_fails() {
    let mesh = Mesh::new(TD);
    let foreign = Mesh::new(TD);
    let (client, pinned) = bootstrap_client_config(&foreign.ca.fingerprint()).unwrap();
    let err = handshake(client, mesh.mesh_server(Arc::new(NoRevocation)))
        .unwrap_err()
        .client();
    assert!(message(&err).contains("pinned"), "{err}");
    assert_eq!(pinned.get(), None);

    assert!(matches!(
        bootstrap_client_config("abc"),
        Err(PkiError::InvalidArgument(_))
    ));
    assert!(bootstrap_client_config(&"zz".repeat(32)).is_err());
}

#[test]
fn bootstrap_refuses_a_chain_without_the_ca_or_a_non_control_plane_leaf() {
    let mesh = Mesh::new(TD);
    // control plane presenting its leaf alone
    let cp = mesh.ca.issue_control_plane(&[], &[], DAY).unwrap();
    let leaf_only = Arc::new(ReloadableIdentity::from_pem(&cp.cert.cert_pem, &cp.key_pem).unwrap());
    let (client, _) = bootstrap_client_config(&mesh.ca.fingerprint()).unwrap();
    let server = api_server_config(leaf_only).unwrap();
    let err = handshake(client, server).unwrap_err().client();
    assert!(message(&err).contains("pinned"), "{err}");

    // a worker certificate (with the right CA in the chain) is not a control plane
    let req = generate_key_and_csr("w1").unwrap();
    let cert = mesh.ca.sign_worker_csr(&req.csr_pem, "w1", DAY).unwrap();
    let chain = format!("{}{}", cert.cert_pem, mesh.ca.cert_pem());
    let worker = Arc::new(ReloadableIdentity::from_pem(&chain, &req.key_pem).unwrap());
    let (client, pinned) = bootstrap_client_config(&mesh.ca.fingerprint()).unwrap();
    let err = handshake(client, api_server_config(worker).unwrap())
        .unwrap_err()
        .client();
    assert!(message(&err).contains("expected a control plane"), "{err}");
    assert_eq!(pinned.get(), None);
}

#[test]
fn replaced_identity_is_served_on_the_next_handshake() {
    let mesh = Mesh::new(TD);
    let server = Arc::new(mesh.mesh_server(Arc::new(NoRevocation)));
    let first = leaf_served(&mesh, &server);
    assert_eq!(first, mesh.control_plane.current_leaf_der());

    let renewed = mesh.ca.issue_control_plane(&[], &[], DAY).unwrap();
    let chain = format!("{}{}", renewed.cert.cert_pem, mesh.ca.cert_pem());
    mesh.control_plane
        .replace(&chain, &renewed.key_pem)
        .unwrap();

    let second = leaf_served(&mesh, &server);
    assert_ne!(first, second);
    assert_eq!(second, renewed.cert.cert_der);
}

fn leaf_served(mesh: &Mesh, server: &Arc<ServerConfig>) -> Vec<u8> {
    let (client, _) = handshake(mesh.client_to_control_plane(None), (**server).clone()).unwrap();
    let certs: &[CertificateDer<'_>] = client.peer_certificates().unwrap();
    assert_eq!(certs.len(), 2, "leaf + ca");
    certs[0].to_vec()
}

#[test]
fn api_server_speaks_h2_and_http11_without_client_auth() {
    let mesh = Mesh::new(TD);
    let server = api_server_config(mesh.control_plane.clone()).unwrap();
    assert_eq!(
        server.alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    let mut client = mesh.client_to_control_plane(None);
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    let (client, server) = handshake(client, server).unwrap();
    assert_eq!(client.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert!(server.peer_certificates().is_none());
}

#[test]
fn configs_refuse_bad_inputs() {
    let mesh = Mesh::new(TD);
    assert!(matches!(
        mesh_server_config(
            b"junk",
            TD,
            mesh.control_plane.clone(),
            Arc::new(NoRevocation)
        ),
        Err(PkiError::Certificate(_))
    ));
    assert!(matches!(
        worker_server_config(
            mesh.ca.cert_der(),
            "Not A Domain",
            mesh.control_plane.clone()
        ),
        Err(PkiError::Identity(_))
    ));
    assert!(mesh_client_config(b"junk", SpiffeId::control_plane(TD), None).is_err());
}

#[test]
fn install_crypto_provider_is_idempotent() {
    install_crypto_provider();
    install_crypto_provider();
    assert!(rustls::crypto::CryptoProvider::get_default().is_some());
}
