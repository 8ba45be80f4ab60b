//! An SSH tunnel through a bastion, with `russh` (pure Rust, ring crypto: no OpenSSL).
//!
//! One SSH session per Postgres session: public-key authentication with an unencrypted key,
//! then one `direct-tcpip` channel to the database host and port as the bastion sees them.
//! The channel is itself the byte stream tokio-postgres runs on (`Config::connect_raw`), so
//! no local port is opened and TLS, when on, is still negotiated end to end with the
//! database and checks its real host name.
//!
//! The bastion's host key is checked against `host_key` when it is set. When it is not, any
//! key is accepted and its fingerprint logged as a warning: a deliberate trade-off so a first
//! connection works without out-of-band setup, at the price of no protection against a man in
//! the middle on the SSH leg until the fingerprint is pinned.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_core::spec::SshTunnel;
use russh::client::{self, Handle, Msg};
use russh::keys::ssh_key::public::KeyData;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelOpenFailure, ChannelStream, Disconnect};

use crate::warehouse::WarehouseError;

/// The stream a tunnelled Postgres session runs on.
pub type TunnelStream = ChannelStream<Msg>;

/// What the bastion's host key must be.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expected {
    /// `SHA256:` and unpadded base64, as `ssh-keygen -l` prints it.
    Fingerprint(String),
    Key(KeyData),
}

fn parse_host_key(text: &str) -> Result<Expected, WarehouseError> {
    let text = text.trim();
    if text.starts_with("SHA256:") {
        return Ok(Expected::Fingerprint(text.to_owned()));
    }
    // Accept a `.pub` line (`type base64 [comment]`) or a `known_hosts` line (`hosts type
    // base64 [comment]`): try each position an algorithm name could start at.
    let fields: Vec<&str> = text.split_whitespace().collect();
    for start in 0..fields.len().saturating_sub(1) {
        let line = format!("{} {}", fields[start], fields[start + 1]);
        if let Ok(key) = PublicKey::from_openssh(&line) {
            return Ok(Expected::Key(key.key_data().clone()));
        }
    }
    Err(WarehouseError::Config(
        "ssh_tunnel.host_key is neither a SHA256 fingerprint nor an SSH public key".into(),
    ))
}

/// The host key as the bastion presented it: fingerprint and whether it matched.
#[derive(Debug, Default)]
struct Seen {
    fingerprint: Option<String>,
}

/// russh's callbacks: only the host key check is ours.
struct Checker {
    expected: Option<Expected>,
    bastion: String,
    seen: Arc<Mutex<Seen>>,
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // A host certificate is checked by the key it certifies: Ferry trusts no SSH CA.
        let key = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.key_data().clone(),
            PublicKeyOrCertificate::Certificate(cert) => cert.public_key().clone(),
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        if let Ok(mut seen) = self.seen.lock() {
            seen.fingerprint = Some(fingerprint.clone());
        }
        Ok(match &self.expected {
            None => {
                tracing::warn!(
                    bastion = %self.bastion,
                    %fingerprint,
                    "SSH tunnel: no host_key is configured, so the bastion's host key is accepted \
                     unchecked; pin it by setting ssh_tunnel.host_key to this fingerprint"
                );
                true
            }
            Some(Expected::Fingerprint(want)) => *want == fingerprint,
            Some(Expected::Key(want)) => *want == key,
        })
    }
}

/// An open SSH session to the bastion. Close it with [`Tunnel::close`] once the channel's user
/// is done: the session's task keeps running until then or until the bastion hangs up.
pub struct Tunnel {
    handle: Handle<Checker>,
    bastion: String,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("bastion", &self.bastion)
            .finish()
    }
}

impl Tunnel {
    /// Connects and authenticates to the bastion, all within `timeout`.
    pub async fn open(spec: &SshTunnel, timeout: Duration) -> Result<Self, WarehouseError> {
        let bastion = format!("{}:{}", spec.host, spec.port);
        let key = russh::keys::decode_secret_key(spec.private_key.expose(), None).map_err(|e| {
            WarehouseError::Config(match e {
                russh::keys::Error::KeyIsEncrypted => {
                    "SSH tunnel: the private key is encrypted; give an unencrypted key \
                     (passphrases are not supported)"
                        .to_owned()
                }
                e => format!("SSH tunnel: the private key cannot be read: {e}"),
            })
        })?;
        let expected = spec.host_key.as_deref().map(parse_host_key).transpose()?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let checker = Checker {
            expected: expected.clone(),
            bastion: bastion.clone(),
            seen: seen.clone(),
        };
        let config = Arc::new(client::Config {
            // A read can sit idle while the consumer catches up: keepalives keep middleboxes
            // from dropping the session and notice a dead bastion (3 missed = error).
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 3,
            nodelay: true,
            ..Default::default()
        });
        let user = spec.user.clone();
        let unreachable = |message: String| WarehouseError::Unreachable {
            target: format!("SSH bastion {bastion}"),
            message: format!("SSH tunnel: {message}"),
        };
        let setup = async {
            let mut handle =
                client::connect(config, (spec.host.as_str(), spec.port), checker).await?;
            // RSA keys need the signature hash the server prefers (rsa-sha2-512/256 today,
            // ssh-rsa only on old servers); other key types ignore it.
            let hash = handle.best_supported_rsa_hash().await?.flatten();
            let auth = handle
                .authenticate_publickey(
                    user.clone(),
                    PrivateKeyWithHashAlg::new(Arc::new(key), hash),
                )
                .await?;
            Ok::<_, russh::Error>((handle, auth))
        };
        let (handle, auth) = match tokio::time::timeout(timeout, setup).await {
            Err(_) => {
                return Err(unreachable(format!(
                    "no SSH session within {} s",
                    timeout.as_secs()
                )))
            }
            Ok(Err(russh::Error::UnknownKey)) => {
                let presented = seen
                    .lock()
                    .ok()
                    .and_then(|s| s.fingerprint.clone())
                    .unwrap_or_else(|| "an unknown key".into());
                let wanted = match &expected {
                    Some(Expected::Fingerprint(f)) => f.clone(),
                    Some(Expected::Key(k)) => k.fingerprint(HashAlg::Sha256).to_string(),
                    None => "any".into(),
                };
                return Err(WarehouseError::Tunnel(format!(
                    "host key mismatch: the bastion {bastion} presented {presented}, but \
                     ssh_tunnel.host_key expects {wanted} (a changed key or a man in the middle)"
                )));
            }
            Ok(Err(e)) => return Err(unreachable(error_text(&e))),
            Ok(Ok(done)) => done,
        };
        if !auth.success() {
            // Say goodbye properly; the server would close the session anyway.
            let _ = handle
                .disconnect(Disconnect::ByApplication, "authentication failed", "en")
                .await;
            return Err(WarehouseError::Tunnel(format!(
                "the bastion {bastion} refused the private key for user '{user}' \
                 (is its public key in that user's authorized_keys?)"
            )));
        }
        Ok(Self { handle, bastion })
    }

    /// A `direct-tcpip` channel to `host:port` as the bastion resolves and reaches it.
    pub async fn forward(&self, host: &str, port: u16) -> Result<TunnelStream, WarehouseError> {
        let target = format!("{host}:{port}");
        match self
            .handle
            .channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0)
            .await
        {
            Ok(channel) => Ok(channel.into_stream()),
            Err(russh::Error::ChannelOpenFailure(ChannelOpenFailure::ConnectFailed)) => {
                // The bastion tried and could not connect: the database is down or the
                // bastion cannot route to it. Worth retrying like any unreachable database.
                Err(WarehouseError::Unreachable {
                    target: format!("{target} (via SSH bastion {})", self.bastion),
                    message: "SSH tunnel: the bastion could not connect to the database".into(),
                })
            }
            Err(russh::Error::ChannelOpenFailure(reason)) => Err(WarehouseError::Tunnel(format!(
                "the bastion {} refused to forward to {target} ({reason:?}; is \
                 AllowTcpForwarding on for this user?)",
                self.bastion
            ))),
            Err(e) => Err(WarehouseError::Unreachable {
                target: format!("SSH bastion {}", self.bastion),
                message: format!(
                    "SSH tunnel: the session failed while opening a channel: {}",
                    error_text(&e)
                ),
            }),
        }
    }

    /// Ends the SSH session. Called explicitly when the Postgres session over it has ended.
    pub async fn close(self) {
        if let Err(e) = self
            .handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await
        {
            // The session's task already ended (the bastion hung up): nothing left to close.
            tracing::debug!(bastion = %self.bastion, error = %e, "SSH tunnel already closed");
        }
    }
}

/// The error and its causes, one line.
fn error_text(e: &russh::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519_PUB: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    #[test]
    fn host_key_forms() {
        let fp = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
        assert_eq!(
            parse_host_key(fp).unwrap(),
            Expected::Fingerprint(fp.into())
        );
        let plain = parse_host_key(ED25519_PUB).unwrap();
        assert!(matches!(plain, Expected::Key(_)));
        // known_hosts form (leading host patterns) and a trailing comment name the same key.
        let line = format!("bastion,10.0.0.1 {ED25519_PUB} root@bastion");
        assert_eq!(parse_host_key(&line).unwrap(), plain);
        assert!(matches!(
            parse_host_key("ssh-ed25519 notbase64!"),
            Err(WarehouseError::Config(_))
        ));
    }

    #[tokio::test]
    async fn unusable_keys_are_config_errors() {
        let spec = |key: &str| SshTunnel {
            host: "127.0.0.1".into(),
            port: 22,
            user: "u".into(),
            private_key: ferry_core::spec::Secret::new(key),
            host_key: None,
        };
        let err = Tunnel::open(&spec("not a key"), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(
            matches!(err, WarehouseError::Config(ref m) if m.contains("SSH tunnel")),
            "{err:?}"
        );
    }
}
