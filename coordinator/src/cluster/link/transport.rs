//! A gRPC stream of [`LinkFrame`]s as the byte stream ractor_cluster's node protocol runs on.
//!
//! ractor_cluster reads and writes its length-prefixed frames on any
//! [`ClusterBidiStream`]; gRPC carries messages. The bridge between them is an in-memory
//! duplex: ractor_cluster gets one end, and one task pumps the other end to and from the gRPC
//! stream (bytes are forwarded in whatever chunks arrive: the protocol's own framing survives
//! re-chunking because the duplex is a byte stream). When either side ends — the peer closes
//! its half, the RPC fails, or the ractor session drops its end — the task ends and drops
//! both, so the other side sees the link closed too.

use ferry_proto::cluster::v1::LinkFrame;
use ractor_cluster::{BoxRead, BoxWrite, ClusterBidiStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::{Stream, StreamExt};

/// How many bytes the duplex buffers each way, and the largest frame sent.
const BUFFER: usize = 64 * 1024;
/// Frames queued towards the gRPC stream before the pump waits.
pub const OUTBOUND_FRAMES: usize = 16;

/// ractor_cluster's end of a link.
pub struct LinkStream {
    io: DuplexStream,
    peer: String,
    local: String,
}

impl ClusterBidiStream for LinkStream {
    fn split(self: Box<Self>) -> (BoxRead, BoxWrite) {
        let (read, write) = tokio::io::split(self.io);
        (Box::new(read), Box::new(write))
    }

    fn peer_label(&self) -> Option<String> {
        Some(self.peer.clone())
    }

    fn local_label(&self) -> Option<String> {
        Some(self.local.clone())
    }
}

/// Connects a gRPC stream pair to a new [`LinkStream`]: `inbound` are the frames the peer
/// sends, `outbound` takes the frames for the peer. The task ends when the link does.
pub fn bridge<S, E>(
    inbound: S,
    outbound: mpsc::Sender<LinkFrame>,
    peer: String,
    local: String,
) -> (LinkStream, JoinHandle<()>)
where
    S: Stream<Item = Result<LinkFrame, E>> + Unpin + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(BUFFER);
    let label = peer.clone();
    let task = tokio::spawn(async move {
        let (mut from_ractor, mut to_ractor) = tokio::io::split(theirs);
        let mut inbound = inbound;
        let receive = async {
            while let Some(frame) = inbound.next().await {
                match frame {
                    Ok(frame) => {
                        if to_ractor.write_all(&frame.data).await.is_err() {
                            return "the local session ended";
                        }
                    }
                    Err(e) => {
                        tracing::debug!(peer = %label, error = %e, "link stream failed");
                        return "the link stream failed";
                    }
                }
            }
            "the peer closed the link"
        };
        let send = async {
            let mut buf = vec![0u8; BUFFER];
            loop {
                match from_ractor.read(&mut buf).await {
                    Ok(0) | Err(_) => return "the local session ended",
                    Ok(n) => {
                        let frame = LinkFrame {
                            data: buf[..n].to_vec(),
                        };
                        if outbound.send(frame).await.is_err() {
                            return "the link stream closed";
                        }
                    }
                }
            }
        };
        let why = tokio::select! {
            why = receive => why,
            why = send => why,
        };
        tracing::debug!(peer = %label, "link closed: {why}");
    });
    (
        LinkStream {
            io: ours,
            peer,
            local,
        },
        task,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::wrappers::ReceiverStream;

    #[tokio::test]
    async fn bytes_cross_both_ways_and_a_closed_peer_closes_the_local_end() {
        let (peer_tx, peer_rx) = mpsc::channel::<Result<LinkFrame, String>>(4);
        let (out_tx, out_rx) = mpsc::channel(4);
        let (stream, task) = bridge(
            ReceiverStream::new(peer_rx),
            out_tx,
            "peer".into(),
            "me".into(),
        );
        assert_eq!(stream.peer_label().as_deref(), Some("peer"));
        let (mut read, mut write) = Box::new(stream).split();

        // Frames from the peer arrive as one byte stream, whatever their chunks.
        for chunk in [&b"hel"[..], b"lo ", b"world"] {
            peer_tx
                .send(Ok(LinkFrame {
                    data: chunk.to_vec(),
                }))
                .await
                .unwrap();
        }
        let mut got = [0u8; 11];
        read.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello world");

        // What the session writes leaves as frames.
        write.write_all(b"ping").await.unwrap();
        let mut out = ReceiverStream::new(out_rx);
        assert_eq!(out.next().await.unwrap().data, b"ping");

        // The peer hangs up: the session reads the end, and the outbound side closes.
        drop(peer_tx);
        let mut rest = Vec::new();
        read.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        task.await.unwrap();
        assert!(out.next().await.is_none(), "the outbound stream ends too");
    }
}
