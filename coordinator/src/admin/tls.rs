//! TLS on the node's one port (`ferry node --tls-cert --tls-key`): everything on it — the
//! admin API, the links between nodes, health, reflection and the HTTP/1.1 trigger URLs — goes
//! through one rustls acceptor on the incoming connections. tonic's own server TLS offers only
//! ALPN `h2`, which an HTTP/1.1 client of the trigger URL cannot negotiate; this acceptor offers
//! `h2` and `http/1.1`, and the server tells the two apart by the bytes that follow.
//!
//! Every rustls builder here names the ring provider: the `ferry` binary links rustls with both
//! ring and aws-lc-rs (ractor_cluster's tokio-rustls), where the implicit default panics.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// How long a client may take over its TLS handshake before it is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to take them.
const ACCEPTED_BACKLOG: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("{flag} {}: {source}", path.display())]
    Read {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{flag} {}: {reason}", path.display())]
    Pem {
        flag: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("--tls-cert {} and --tls-key {} do not make a usable server identity: {reason}", cert.display(), key.display())]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// The ring provider, named explicitly by every rustls builder Ferry writes.
pub fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file (`flag` names the command-line flag in errors).
pub fn read_certificates(
    flag: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let pem = read(flag, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(flag, path, format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_error(
            flag,
            path,
            "no certificate in it (expected -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(path).map_err(|source| TlsConfigError::Read {
        flag,
        path: path.to_path_buf(),
        source,
    })
}

fn pem_error(flag: &'static str, path: &Path, reason: String) -> TlsConfigError {
    TlsConfigError::Pem {
        flag,
        path: path.to_path_buf(),
        reason,
    }
}

/// The port's TLS identity and settings.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls")
    }
}

impl ServerTls {
    /// The certificate chain (`--tls-cert`) and its private key (`--tls-key`), both PEM.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsConfigError> {
        let chain = read_certificates("--tls-cert", cert)?;
        let key_pem = read("--tls-key", key)?;
        let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            pem_error(
                "--tls-key",
                key,
                format!("no private key in it (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
            )
        })?;
        let identity = |reason: String| TlsConfigError::Identity {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            reason,
        };
        let mut config = rustls::ServerConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| identity(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, private_key)
            .map_err(|e| identity(e.to_string()))?;
        // gRPC (and HTTP/2 clients) ask for h2; the trigger URL's HTTP/1.1 clients for http/1.1.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// The connections of `listener`, each after its TLS handshake. Handshakes run apart from
    /// the accept loop, so a slow or failing client holds up no one; failures are logged at
    /// debug (a client refusing the certificate is its own business). Ends when the stream is
    /// dropped.
    pub fn incoming(
        &self,
        listener: TcpListener,
    ) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> + Send + 'static {
        let (tx, rx) = mpsc::channel(ACCEPTED_BACKLOG);
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = tx.closed() => return,
                };
                let (tcp, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little rather than spin.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(Ok(tls)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        ReceiverStream::new(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_or_invalid_files_are_named_with_their_flag() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();

        let err = ServerTls::from_files(&missing, &junk)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--tls-cert "), "{err}");
        assert!(err.contains("missing.pem"), "{err}");

        let err = ServerTls::from_files(&junk, &junk).unwrap_err().to_string();
        assert!(
            err.contains("--tls-cert") && err.contains("no certificate"),
            "{err}"
        );

        let err = read_certificates("--cluster-ca-cert", &junk)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--cluster-ca-cert "), "{err}");
    }
}
