//! The dialing side of links. Every node reads the membership records (`/ferry/v1/nodes/`,
//! each with the node's address) and dials the peers whose id sorts after its own, so each
//! pair of nodes has exactly one link, opened by the smaller id. A link that drops is dialed
//! again on the next pass; a link to a node that left (its record is gone, or its address
//! changed) is closed.
//!
//! A node whose port has TLS dials its peers with TLS ([`LinkTls`]), verifying their
//! certificates; TLS and plain nodes do not link with each other (each such pair is refused,
//! logged by the dialing node, naming the peer). The shared secret is checked either way.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use etcd_client::Client;
use ferry_proto::cluster::v1::node_link_client::NodeLinkClient;
use ractor::ActorRef;
use ractor_cluster::NodeServerMessage;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, ClientTlsConfig};

use super::service::SECRET_HEADER;
use super::transport::{bridge, OUTBOUND_FRAMES};
use super::{ClusterSecret, LinkError};
use crate::cluster::membership::list_nodes;

/// How long opening a link may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);

/// The URL a node's registered address is dialed at (`host:port`, or a URL as given).
pub fn endpoint_of(address: &str) -> String {
    if address.starts_with("http://") || address.starts_with("https://") {
        address.trim_end_matches('/').to_string()
    } else {
        format!("http://{address}")
    }
}

/// How this node dials its peers: plain, or (when its own port has TLS) with TLS, verifying
/// each peer's certificate against the cluster's CA or else the system's roots.
#[derive(Clone, Debug, Default)]
pub struct LinkTls(Option<ClientTlsConfig>);

impl LinkTls {
    /// Plain links (the node's port has no TLS).
    pub fn plain() -> Self {
        Self(None)
    }

    /// TLS links, peers verified against `ca_pem` (the cluster's CA, PEM), else the system's
    /// roots.
    pub fn verified_by(ca_pem: Option<Vec<u8>>) -> Self {
        let config = ClientTlsConfig::new();
        let config = match ca_pem {
            Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
            None => config.with_native_roots(),
        };
        Self(Some(config))
    }

    pub fn is_tls(&self) -> bool {
        self.0.is_some()
    }
}

/// Opens a link to the node at `address` and hands it to `server` as an outgoing session.
/// Returns the task pumping it; the link is up while that task runs.
pub async fn dial(
    server: &ActorRef<NodeServerMessage>,
    me: &str,
    peer: &str,
    address: &str,
    secret: &ClusterSecret,
    tls: &LinkTls,
) -> Result<JoinHandle<()>, LinkError> {
    let url = endpoint_of(address);
    let failed = |reason: String| LinkError::Dial {
        peer: peer.to_string(),
        address: url.clone(),
        reason,
    };
    let mismatch = |reason: &str| LinkError::Mismatch {
        peer: peer.to_string(),
        address: url.clone(),
        reason: reason.to_string(),
    };
    let endpoint = match (url.starts_with("https://"), &tls.0) {
        (true, None) => {
            return Err(mismatch(
                "the peer serves TLS and this node does not (give every node --tls-cert and --tls-key, or none)",
            ))
        }
        (false, Some(_)) => {
            return Err(mismatch(
                "this node serves TLS and the peer registered a plain address (give every node --tls-cert and --tls-key, or none)",
            ))
        }
        (true, Some(config)) => tonic::transport::Endpoint::from_shared(url.clone())
            .map_err(|e| failed(e.to_string()))?
            .tls_config(config.clone())
            .map_err(|e| failed(format!("TLS: {e}")))?,
        (false, None) => tonic::transport::Endpoint::from_shared(url.clone())
            .map_err(|e| failed(e.to_string()))?,
    };
    let channel = endpoint
        .connect_timeout(DIAL_TIMEOUT)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| failed(e.to_string()))?;
    let (tx, rx) = mpsc::channel(OUTBOUND_FRAMES);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    let secret_value = MetadataValue::try_from(secret.expose())
        .map_err(|_| failed("the cluster secret is not a valid header value".into()))?;
    request.metadata_mut().insert(SECRET_HEADER, secret_value);
    let opened = tokio::time::timeout(DIAL_TIMEOUT, NodeLinkClient::new(channel).open(request))
        .await
        .map_err(|_| failed(format!("no answer within {DIAL_TIMEOUT:?}")))?
        .map_err(|status| match status.code() {
            tonic::Code::Unauthenticated => LinkError::Refused {
                peer: peer.to_string(),
                reason: status.message().to_string(),
            },
            _ => failed(status.to_string()),
        })?;
    let (stream, task) = bridge(opened.into_inner(), tx, peer.to_string(), me.to_string());
    server
        .cast(NodeServerMessage::ConnectionOpenedExternal {
            stream: Box::new(stream),
            is_server: false,
        })
        .map_err(|_| LinkError::Stopped)?;
    tracing::info!(node = %me, %peer, url = %url, "link opened");
    Ok(task)
}

/// Keeps one link to every live peer whose id sorts after `me`, checking every `every`,
/// until `shutdown` turns true (then every link this loop opened is closed).
pub async fn keep_linked(
    client: Client,
    me: String,
    server: ActorRef<NodeServerMessage>,
    secret: ClusterSecret,
    tls: LinkTls,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut links: BTreeMap<String, (String, JoinHandle<()>)> = BTreeMap::new();
    // Peers whose last dial failed: warned about once, not on every pass.
    let mut failing: BTreeSet<String> = BTreeSet::new();
    loop {
        match list_nodes(&client).await {
            Ok(nodes) => {
                let peers: BTreeMap<String, String> = nodes
                    .into_iter()
                    .filter(|n| n.node_id.as_str() > me.as_str())
                    .map(|n| (n.node_id, n.address))
                    .collect();
                links.retain(|id, (address, task)| {
                    let keep = peers.get(id) == Some(address) && !task.is_finished();
                    if !keep {
                        if !task.is_finished() {
                            tracing::info!(node = %me, peer = %id, "closing the link: the peer left");
                        }
                        task.abort();
                    }
                    keep
                });
                failing.retain(|id| peers.contains_key(id));
                for (id, address) in &peers {
                    if links.contains_key(id) {
                        continue;
                    }
                    match dial(&server, &me, id, address, &secret, &tls).await {
                        Ok(task) => {
                            failing.remove(id);
                            links.insert(id.clone(), (address.clone(), task));
                        }
                        Err(LinkError::Stopped) => return,
                        Err(e @ LinkError::Mismatch { .. }) => {
                            if failing.insert(id.clone()) {
                                tracing::error!(node = %me, peer = %id, error = %e, "refusing to link TLS and plain nodes");
                            }
                        }
                        Err(e) => {
                            if failing.insert(id.clone()) {
                                tracing::warn!(node = %me, error = %e, "no link to a peer yet; retrying");
                            } else {
                                tracing::debug!(node = %me, error = %e, "still no link");
                            }
                        }
                    }
                }
            }
            Err(e) => {
                tracing::debug!(node = %me, error = %e, "members not listed; links kept as they are")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => break,
        }
        if *shutdown.borrow() {
            break;
        }
    }
    for (_, (_, task)) in links {
        task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_addresses_become_urls() {
        assert_eq!(endpoint_of("127.0.0.1:7700"), "http://127.0.0.1:7700");
        assert_eq!(endpoint_of("http://ferry-1:7700/"), "http://ferry-1:7700");
        assert_eq!(
            endpoint_of("https://ferry.example.com"),
            "https://ferry.example.com"
        );
    }
}
