//! Mutual TLS between peers (rustls, with the `ring` provider: it builds with a C compiler
//! alone).
//!
//! Every node has a certificate from the cluster's CA naming it: the DNS name
//! [`node_name`]`(id)` (`node-<id>.raftwal`). A client checks that the server it reached holds
//! the certificate of the node it meant to reach; a server accepts only clients with a
//! certificate from the CA, checks that the id a client claims is the one its certificate
//! names, and the node then drops any message whose sender is not that id.

use std::io;
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection, StreamOwned,
};

/// The DNS name a node's certificate must carry.
pub fn node_name(id: u64) -> String {
    format!("node-{id}.raftwal")
}

fn bad(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

/// A node's TLS identity: the cluster CA and its own certificate and key.
#[derive(Clone)]
pub struct TlsIdentity {
    id: u64,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// Node `id`'s identity from PEM: the CA certificate(s) the cluster trusts, its certificate
    /// chain, and its private key.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] if a PEM does not parse, or the certificate does not name
    /// node `id` or is not from the CA.
    pub fn from_pem(id: u64, ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> io::Result<Self> {
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem) {
            roots
                .add(c.map_err(|e| bad(format!("CA certificate: {e}")))?)
                .map_err(|e| bad(format!("CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(bad("no CA certificate"));
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| bad(format!("certificate: {e}")))?;
        let leaf = chain.first().ok_or_else(|| bad("no certificate"))?;
        if !names(leaf, id) {
            return Err(bad(format!(
                "the certificate does not name node {id} ({})",
                node_name(id)
            )));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| bad(format!("key: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(roots);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(bad)?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(bad)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(bad)?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(bad)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(bad)?;
        Ok(TlsIdentity {
            id,
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    /// As [`TlsIdentity::from_pem`], reading the three PEM files.
    ///
    /// # Errors
    /// Reading a file, and as [`TlsIdentity::from_pem`].
    #[allow(clippy::disallowed_methods)] // configuration files, read once at start
    pub fn from_files(id: u64, ca: &Path, cert: &Path, key: &Path) -> io::Result<Self> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
        };
        Self::from_pem(id, &read(ca)?, &read(cert)?, &read(key)?)
    }

    /// The node this identity is.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Opens TLS to node `to` over `tcp`, checking that the server is `to`.
    pub(crate) fn connect(
        &self,
        to: u64,
        tcp: TcpStream,
    ) -> io::Result<StreamOwned<ClientConnection, TcpStream>> {
        let name = ServerName::try_from(node_name(to)).map_err(bad)?;
        let conn = ClientConnection::new(self.client.clone(), name).map_err(io::Error::other)?;
        Ok(StreamOwned::new(conn, tcp))
    }

    /// Accepts TLS over `tcp` (the handshake completes on the first read).
    pub(crate) fn accept(
        &self,
        tcp: TcpStream,
    ) -> io::Result<StreamOwned<ServerConnection, TcpStream>> {
        let conn = ServerConnection::new(self.server.clone()).map_err(io::Error::other)?;
        Ok(StreamOwned::new(conn, tcp))
    }
}

/// Whether `cert` names node `id`.
fn names(cert: &CertificateDer<'_>, id: u64) -> bool {
    let Ok(name) = ServerName::try_from(node_name(id)) else {
        return false;
    };
    webpki::EndEntityCert::try_from(cert)
        .is_ok_and(|c| c.verify_is_valid_for_subject_name(&name).is_ok())
}

/// Whether the client of an established server connection holds the certificate of `id` (the
/// chain was verified against the CA during the handshake).
pub(crate) fn client_is(conn: &ServerConnection, id: u64) -> bool {
    conn.peer_certificates()
        .and_then(|c| c.first())
        .is_some_and(|c| names(c, id))
}

/// A development CA that issues node certificates (feature `dev-certs`): for tests and for
/// trying a cluster out, not for production keys.
#[cfg(feature = "dev-certs")]
pub struct DevCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

#[cfg(feature = "dev-certs")]
impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevCa")
    }
}

#[cfg(feature = "dev-certs")]
impl DevCa {
    /// A new CA with a fresh key.
    ///
    /// # Errors
    /// Key generation or signing failures.
    pub fn new() -> io::Result<Self> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let key = KeyPair::generate().map_err(io::Error::other)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(io::Error::other)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "raftwal development CA");
        let cert = params.self_signed(&key).map_err(io::Error::other)?;
        Ok(DevCa { cert, key })
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate naming node `id` and its key, both PEM.
    ///
    /// # Errors
    /// Key generation or signing failures.
    pub fn node(&self, id: u64) -> io::Result<(String, String)> {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
        let key = KeyPair::generate().map_err(io::Error::other)?;
        let mut params = CertificateParams::new(vec![node_name(id)]).map_err(io::Error::other)?;
        params
            .distinguished_name
            .push(DnType::CommonName, node_name(id));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(io::Error::other)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Node `id`'s identity, issued now.
    ///
    /// # Errors
    /// As [`DevCa::node`] and [`TlsIdentity::from_pem`].
    pub fn identity(&self, id: u64) -> io::Result<TlsIdentity> {
        let (cert, key) = self.node(id)?;
        TlsIdentity::from_pem(
            id,
            self.ca_pem().as_bytes(),
            cert.as_bytes(),
            key.as_bytes(),
        )
    }
}

#[cfg(all(test, feature = "dev-certs"))]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_names_its_node_only() {
        let ca = DevCa::new().unwrap();
        let (cert, key) = ca.node(3).unwrap();
        let ca_pem = ca.ca_pem();
        TlsIdentity::from_pem(3, ca_pem.as_bytes(), cert.as_bytes(), key.as_bytes()).unwrap();
        let e = TlsIdentity::from_pem(4, ca_pem.as_bytes(), cert.as_bytes(), key.as_bytes())
            .unwrap_err();
        assert!(e.to_string().contains("node 4"), "{e}");
        // Another CA's certificate is not this cluster's.
        let other = DevCa::new().unwrap();
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        assert!(names(&der, 3) && !names(&der, 33));
        assert!(TlsIdentity::from_pem(3, other.ca_pem().as_bytes(), b"", key.as_bytes()).is_err());
    }
}
