//! The dialing side of links. Every node reads the membership records (`/ferry/v1/nodes/`,
//! each with the node's address) and dials the peers whose id sorts after its own, so each
//! pair of nodes has exactly one link, opened by the smaller id. A link that drops is dialed
//! again on the next pass; a link to a node that left (its record is gone, or its address
//! changed) is closed.

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

/// Opens a link to the node at `address` and hands it to `server` as an outgoing session.
/// Returns the task pumping it; the link is up while that task runs.
pub async fn dial(
    server: &ActorRef<NodeServerMessage>,
    me: &str,
    peer: &str,
    address: &str,
    secret: &ClusterSecret,
) -> Result<JoinHandle<()>, LinkError> {
    let url = endpoint_of(address);
    let failed = |reason: String| LinkError::Dial {
        peer: peer.to_string(),
        address: url.clone(),
        reason,
    };
    if url.starts_with("https://") {
        return Err(failed(
            "links over TLS are not supported yet: register the node's plain address".into(),
        ));
    }
    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .map_err(|e| failed(e.to_string()))?
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
                    match dial(&server, &me, id, address, &secret).await {
                        Ok(task) => {
                            failing.remove(id);
                            links.insert(id.clone(), (address.clone(), task));
                        }
                        Err(LinkError::Stopped) => return,
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
