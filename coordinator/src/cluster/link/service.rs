//! The accepting side of links: `ferry.cluster.v1.NodeLink/Open` on the node's port. A call
//! must carry the cluster's shared secret in its metadata ([`SECRET_HEADER`]); any other is
//! refused with UNAUTHENTICATED before a byte reaches ractor_cluster, whose own handshake then
//! checks the same secret as its cookie.

use std::pin::Pin;
use std::sync::Arc;

use ferry_proto::cluster::v1::node_link_server::NodeLink;
use ferry_proto::cluster::v1::LinkFrame;
use ractor::ActorRef;
use ractor_cluster::NodeServerMessage;
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::transport::{bridge, OUTBOUND_FRAMES};
use super::{ClusterSecret, LinkTasks};

/// The metadata key carrying the shared secret on `Open`.
pub const SECRET_HEADER: &str = "ferry-cluster-secret";

pub struct NodeLinkService {
    pub(super) node_id: String,
    pub(super) secret: ClusterSecret,
    pub(super) server: ActorRef<NodeServerMessage>,
    pub(super) tasks: Arc<LinkTasks>,
}

impl NodeLinkService {
    fn check_secret<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let given = request
            .metadata()
            .get(SECRET_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if bool::from(given.ct_eq(self.secret.expose().as_bytes())) {
            Ok(())
        } else {
            Err(Status::unauthenticated(format!(
                "node {} accepts links only from nodes holding the cluster's secret",
                self.node_id
            )))
        }
    }
}

#[tonic::async_trait]
impl NodeLink for NodeLinkService {
    type OpenStream = Pin<Box<dyn Stream<Item = Result<LinkFrame, Status>> + Send + 'static>>;

    async fn open(
        &self,
        request: Request<Streaming<LinkFrame>>,
    ) -> Result<Response<Self::OpenStream>, Status> {
        if let Err(refused) = self.check_secret(&request) {
            tracing::warn!(node = %self.node_id, remote = ?request.remote_addr(), "link refused: wrong or missing cluster secret");
            return Err(refused);
        }
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "peer".into());
        let (tx, rx) = mpsc::channel(OUTBOUND_FRAMES);
        let (stream, task) = bridge(request.into_inner(), tx, peer.clone(), self.node_id.clone());
        self.tasks.keep(task);
        self.server
            .cast(NodeServerMessage::ConnectionOpenedExternal {
                stream: Box::new(stream),
                is_server: true,
            })
            .map_err(|_| Status::unavailable(format!("node {} is stopping", self.node_id)))?;
        tracing::info!(node = %self.node_id, %peer, "link accepted");
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(Ok))))
    }
}
