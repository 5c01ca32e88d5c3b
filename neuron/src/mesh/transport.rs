//! The mesh's wire: one QUIC endpoint per neuron, both accepting and dialling, over TLS 1.3
//! with certificates required on both sides and verified against the fleet CA.
//!
//! A peer's node name comes from its verified certificate (the first DNS name) and from nowhere
//! else. A failed handshake is classified by [`HandshakeFailure`] so that it can be counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, ConnectionError, Endpoint, IdleTimeout, Incoming, TransportConfig, VarInt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{AlertDescription, CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::identity::{node_name, NodeIdentity};

/// The ALPN protocol every mesh connection speaks.
pub const ALPN: &[u8] = b"cortex/1";
/// How often an otherwise quiet connection sends a keep-alive; well below `IDLE_TIMEOUT`.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How long a connection may hear nothing before it is dropped, in milliseconds.
pub const IDLE_TIMEOUT_MS: u32 = 30_000;
/// Receive buffer for QUIC datagrams (membership packets), in bytes.
const DATAGRAM_BUFFER: usize = 1 << 20;

/// Why a mesh connection could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The node's identity could not be turned into a TLS configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// A certificate verifier could not be built from the fleet CA.
    #[error("TLS verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The crypto provider lacks the cipher suite QUIC starts with.
    #[error("QUIC crypto: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// The UDP socket could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The underlying failure.
        source: std::io::Error,
    },
    /// A connection could not even be started (bad address or name, endpoint closing).
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The peer's address.
        addr: SocketAddr,
        /// The underlying failure.
        source: quinn::ConnectError,
    },
    /// The TLS or QUIC handshake failed; `failure` says why.
    #[error("handshake with {addr} failed ({}{}): {source}",
        failure.as_str(), if *by_peer { ", refused by the peer" } else { "" })]
    Handshake {
        /// The peer's address.
        addr: SocketAddr,
        /// The reason, for logs and metrics.
        failure: HandshakeFailure,
        /// Whether the peer refused us (rather than we it).
        by_peer: bool,
        /// The connection error.
        source: ConnectionError,
    },
    /// The peer's verified certificate carries no DNS name to call it by.
    #[error("{addr}: the peer's certificate carries no node name")]
    NoPeerName {
        /// The peer's address.
        addr: SocketAddr,
    },
}

impl TransportError {
    /// A short, fixed label for the failure (a metrics label).
    pub fn reason(&self) -> &'static str {
        match self {
            TransportError::Tls(_) | TransportError::Verifier(_) | TransportError::Quic(_) => "config",
            TransportError::Bind { .. } => "bind",
            TransportError::Connect { .. } => "connect",
            TransportError::Handshake { failure, .. } => failure.as_str(),
            TransportError::NoPeerName { .. } => "no_peer_name",
        }
    }

    /// Wraps a handshake's (or a just-opened connection's) error, classified.
    pub fn handshake(addr: SocketAddr, source: ConnectionError) -> Self {
        let (failure, by_peer) = HandshakeFailure::classify(&source);
        TransportError::Handshake { addr, failure, by_peer, source }
    }
}

/// Why a handshake failed, as far as TLS says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeFailure {
    /// The certificate was not signed by the fleet CA.
    UnknownCa,
    /// The certificate has expired (or is not valid yet).
    Expired,
    /// The client presented no certificate.
    NoCertificate,
    /// The certificate is malformed, or is for another node than the one dialled.
    BadCertificate,
    /// Anything else: a timeout, a protocol mismatch, a bad signature.
    Other,
}

impl HandshakeFailure {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::UnknownCa => "unknown_ca",
            HandshakeFailure::Expired => "expired",
            HandshakeFailure::NoCertificate => "no_certificate",
            HandshakeFailure::BadCertificate => "bad_certificate",
            HandshakeFailure::Other => "other",
        }
    }

    /// The reason behind a connection error, and whether the peer (rather than we) refused.
    /// TLS alerts travel as QUIC crypto errors (0x100 + alert), so both sides see the same one.
    pub fn classify(err: &ConnectionError) -> (Self, bool) {
        let (code, by_peer) = match err {
            ConnectionError::TransportError(e) => (u64::from(e.code), false),
            ConnectionError::ConnectionClosed(c) => (u64::from(c.error_code), true),
            _ => return (HandshakeFailure::Other, false),
        };
        let failure = match code.checked_sub(0x100).and_then(|a| u8::try_from(a).ok()).map(AlertDescription::from) {
            Some(AlertDescription::UnknownCA) => HandshakeFailure::UnknownCa,
            Some(AlertDescription::CertificateExpired) => HandshakeFailure::Expired,
            Some(AlertDescription::CertificateRequired) => HandshakeFailure::NoCertificate,
            Some(AlertDescription::BadCertificate) => HandshakeFailure::BadCertificate,
            _ => HandshakeFailure::Other,
        };
        (failure, by_peer)
    }
}

/// Binds the neuron's QUIC endpoint on `listen`: it accepts peers that present a certificate
/// from the fleet CA, and dials with the node's own certificate. Needs a tokio runtime.
pub fn endpoint(identity: &NodeIdentity, listen: SocketAddr) -> Result<Endpoint, TransportError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(identity.ca.clone())?;
    let roots = Arc::new(roots);
    let transport = Arc::new(transport_config());

    let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
    let mut server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(identity.cert_chain.clone(), identity.key.clone_key())?;
    server_tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(server_tls)?));
    server.transport_config(transport.clone());

    let server_verifier = FleetServerVerifier::new(roots, provider.clone())?;
    let mut client_tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(server_verifier))
        .with_client_auth_cert(identity.cert_chain.clone(), identity.key.clone_key())?;
    client_tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut client = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client_tls)?));
    client.transport_config(transport);

    let mut endpoint =
        Endpoint::server(server, listen).map_err(|source| TransportError::Bind { addr: listen, source })?;
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}

/// Dials `addr` and returns the connection and the peer's node name. With `expected_name`, a
/// peer whose certificate is for another node is refused during the handshake; without, any
/// node of the fleet is accepted.
///
/// TLS 1.3 finishes on the client before the server has checked the client's certificate: a
/// server that refuses ours closes the connection just after this returns, and
/// [`HandshakeFailure::classify`] names the reason from that close.
pub async fn connect(
    endpoint: &Endpoint,
    addr: SocketAddr,
    expected_name: Option<&str>,
) -> Result<(Connection, String), TransportError> {
    // The server name is what `FleetServerVerifier` checks the certificate's node name
    // against; an IP address there means "any node of the fleet".
    let server_name = match expected_name {
        Some(name) => name.to_owned(),
        None => addr.ip().to_string(),
    };
    let connecting = endpoint.connect(addr, &server_name).map_err(|source| TransportError::Connect { addr, source })?;
    let connection = connecting.await.map_err(|e| log_failure(TransportError::handshake(addr, e)))?;
    let name = verified_peer_name(&connection).ok_or_else(|| log_failure(TransportError::NoPeerName { addr }))?;
    tracing::debug!(peer = %name, %addr, "mesh connection established");
    Ok((connection, name))
}

/// Completes an incoming connection and returns it with the peer's node name.
pub async fn accept(incoming: Incoming) -> Result<(Connection, String), TransportError> {
    let addr = incoming.remote_address();
    let connection = incoming.await.map_err(|e| log_failure(TransportError::handshake(addr, e)))?;
    let name = verified_peer_name(&connection).ok_or_else(|| log_failure(TransportError::NoPeerName { addr }))?;
    tracing::debug!(peer = %name, %addr, "mesh connection accepted");
    Ok((connection, name))
}

fn log_failure(err: TransportError) -> TransportError {
    tracing::warn!(reason = err.reason(), error = %err, "mesh handshake failed");
    err
}

/// The node name in the certificate the peer presented. Both sides require and verify
/// certificates, so an established connection's peer identity is a verified chain.
fn verified_peer_name(connection: &Connection) -> Option<String> {
    let chain = connection.peer_identity()?.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    node_name(chain.first()?)
}

fn transport_config() -> TransportConfig {
    let mut config = TransportConfig::default();
    config
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(IDLE_TIMEOUT_MS))))
        .datagram_receive_buffer_size(Some(DATAGRAM_BUFFER));
    config
}

/// Verifies a server's certificate against the fleet CA (chain, validity, serverAuth), then
/// matches its node name, the first DNS name, against the name dialled. A dialled IP address
/// accepts any node of the fleet: nodes are named by certificate, not by address.
#[derive(Debug)]
struct FleetServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl FleetServerVerifier {
    fn new(roots: Arc<RootCertStore>, provider: Arc<CryptoProvider>) -> Result<Self, TransportError> {
        Ok(Self { inner: WebPkiServerVerifier::builder_with_provider(roots, provider).build()? })
    }
}

impl ServerCertVerifier for FleetServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = node_name(end_entity).ok_or(rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let own_name = ServerName::try_from(name.as_str())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        self.inner.verify_server_cert(end_entity, intermediates, &own_name, ocsp_response, now)?;
        match server_name {
            ServerName::DnsName(dialled) if dialled.as_ref() != name => {
                Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::identity::{init_ca, issue, issue_with_validity};
    use crate::mesh::tests::TempDir;
    use std::net::IpAddr;
    use std::path::Path;

    const LOOPBACK: &str = "127.0.0.1:0";

    /// A fleet CA in a fresh directory with certificates for `names`.
    fn fleet(tag: &str, names: &[&str]) -> TempDir {
        let dir = TempDir::new(tag);
        init_ca(dir.path(), false).unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for name in names {
            issue(dir.path(), name, &[], &[ip], 30).unwrap();
        }
        dir
    }

    fn bind(dir: &Path, name: &str) -> Endpoint {
        endpoint(&NodeIdentity::load(dir, name).unwrap(), LOOPBACK.parse().unwrap()).unwrap()
    }

    /// Sends `msg` on a new bi-stream and reads the echo; a connection the peer closed
    /// instead yields the error it closed with.
    async fn exchange(conn: &Connection, msg: &[u8]) -> Result<Vec<u8>, ConnectionError> {
        let attempt = async {
            let (mut send, mut recv) = conn.open_bi().await.ok()?;
            send.write_all(msg).await.ok()?;
            send.finish().ok()?;
            recv.read_to_end(1024).await.ok()
        };
        match attempt.await {
            Some(reply) => Ok(reply),
            None => Err(conn.closed().await),
        }
    }

    /// `client` dials `server`, sends a message and reads it echoed back. Returns the peer
    /// name each side saw, or why each side failed.
    async fn handshake(
        client: &Endpoint,
        server: &Endpoint,
        expected: Option<&str>,
    ) -> (Result<String, TransportError>, Result<String, TransportError>) {
        let addr = server.local_addr().unwrap();
        let server = server.clone();
        let server_side = tokio::spawn(async move {
            let (conn, name) = accept(server.accept().await.expect("endpoint open")).await?;
            if let Ok((mut send, mut recv)) = conn.accept_bi().await {
                let msg = recv.read_to_end(1024).await.unwrap();
                send.write_all(&msg).await.unwrap();
                send.finish().unwrap();
            }
            conn.closed().await;
            Ok(name)
        });
        let client_side = async {
            let (conn, name) = connect(client, addr, expected).await?;
            let echoed = exchange(&conn, b"ping").await.map_err(|e| TransportError::handshake(addr, e))?;
            assert_eq!(echoed, b"ping");
            conn.close(0u32.into(), b"done");
            Ok(name)
        };
        let both = async { (client_side.await, server_side.await.unwrap()) };
        // A guard against a hang, not a speed bound: the idle timeout would end it at 30 s.
        tokio::time::timeout(Duration::from_secs(25), both).await.expect("handshake hung")
    }

    fn refused(result: Result<String, TransportError>) -> (&'static str, bool) {
        match result {
            Err(TransportError::Handshake { failure, by_peer, .. }) => (failure.as_str(), by_peer),
            other => panic!("expected a refused handshake, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn two_nodes_connect_both_ways_and_see_each_others_names() {
        let dir = fleet("both-ways", &["node-a", "node-b"]);
        let (a, b) = (bind(dir.path(), "node-a"), bind(dir.path(), "node-b"));

        let (client, server) = handshake(&a, &b, Some("node-b")).await;
        assert_eq!(client.unwrap(), "node-b");
        assert_eq!(server.unwrap(), "node-a");

        // Dialled by address alone, any node of the fleet is accepted and named.
        let (client, server) = handshake(&b, &a, None).await;
        assert_eq!(client.unwrap(), "node-a");
        assert_eq!(server.unwrap(), "node-b");
    }

    #[tokio::test]
    async fn dialling_a_node_by_name_refuses_another_node() {
        let dir = fleet("wrong-name", &["node-a", "node-b"]);
        let (a, b) = (bind(dir.path(), "node-a"), bind(dir.path(), "node-b"));
        let (client, server) = handshake(&a, &b, Some("node-c")).await;
        assert_eq!(refused(client), ("bad_certificate", false));
        assert_eq!(refused(server), ("bad_certificate", true));
    }

    #[tokio::test]
    async fn a_node_from_another_fleet_is_refused_as_client_and_as_server() {
        let ours = fleet("ours", &["node-a"]);
        let theirs = fleet("theirs", &["rogue"]);
        let a = bind(ours.path(), "node-a");
        // The rogue knows our CA certificate (it is no secret), but its own comes from another.
        let mut identity = NodeIdentity::load(theirs.path(), "rogue").unwrap();
        identity.ca = NodeIdentity::load(ours.path(), "node-a").unwrap().ca;
        let rogue = endpoint(&identity, LOOPBACK.parse().unwrap()).unwrap();

        let (client, server) = handshake(&rogue, &a, None).await;
        assert_eq!(refused(server), ("unknown_ca", false));
        assert_eq!(refused(client), ("unknown_ca", true));

        let (client, server) = handshake(&a, &rogue, None).await;
        assert_eq!(refused(client), ("unknown_ca", false));
        assert_eq!(refused(server), ("unknown_ca", true));
    }

    #[tokio::test]
    async fn an_expired_certificate_is_refused_as_client_and_as_server() {
        let dir = fleet("expired", &["node-a"]);
        let now = time::OffsetDateTime::now_utc();
        let (before, after) = (now - time::Duration::days(30), now - time::Duration::days(1));
        issue_with_validity(dir.path(), "old", &[], &[], before, after).unwrap();
        let (a, old) = (bind(dir.path(), "node-a"), bind(dir.path(), "old"));

        let (client, server) = handshake(&old, &a, Some("node-a")).await;
        assert_eq!(refused(server), ("expired", false));
        assert_eq!(refused(client), ("expired", true));

        let (client, server) = handshake(&a, &old, Some("old")).await;
        assert_eq!(refused(client), ("expired", false));
        assert_eq!(refused(server), ("expired", true));
    }

    #[tokio::test]
    async fn a_client_without_a_certificate_is_refused() {
        let dir = fleet("no-cert", &["node-a"]);
        let a = bind(dir.path(), "node-a");
        let identity = NodeIdentity::load(dir.path(), "node-a").unwrap();

        // A client that trusts the fleet CA but has no certificate of its own.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(identity.ca).unwrap();
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let mut anonymous = Endpoint::client(LOOPBACK.parse().unwrap()).unwrap();
        anonymous
            .set_default_client_config(quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap())));

        let (client, server) = handshake(&anonymous, &a, Some("node-a")).await;
        assert_eq!(refused(server), ("no_certificate", false));
        assert_eq!(refused(client), ("no_certificate", true));
    }
}
