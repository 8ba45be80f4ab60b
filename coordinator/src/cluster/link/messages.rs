//! What a node's agent answers to, locally and across a link.
//!
//! [`AgentMsg`] implements `ractor::Message` by hand rather than with ractor_cluster's derive:
//! the derive's `BytesConvertable::from_bytes` cannot fail, while bytes from the network can be
//! malformed (a peer of another version). Here each message crosses as JSON of [`Wire`], its
//! variant named, and a reply as JSON of an [`Answer`]; anything undecodable is refused
//! instead of panicking the session.

use std::time::Duration;

use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::RpcReplyPort;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::records::{RunRecord, SyncId};
use crate::schedule::TriggerReason;

/// A request refused by the agent, as the admin API would answer it (a gRPC status code).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub code: i32,
    pub message: String,
    /// A trigger refused because the sync runs: that run's id (the HTTP trigger answers it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_run: Option<String>,
}

impl Refusal {
    pub fn from_status(status: &tonic::Status) -> Self {
        Self {
            code: status.code() as i32,
            message: status.message().to_string(),
            running_run: status
                .metadata()
                .get(crate::admin::errors::RUNNING_RUN)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        }
    }

    pub fn to_status(&self) -> tonic::Status {
        let mut status = tonic::Status::new(tonic::Code::from_i32(self.code), self.message.clone());
        if let Some(value) = self.running_run.as_deref().and_then(|r| r.parse().ok()) {
            status
                .metadata_mut()
                .insert(crate::admin::errors::RUNNING_RUN, value);
        }
        status
    }
}

pub type Answer<T> = Result<T, Refusal>;

/// A run in progress on the answering node, as it stands now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveRun {
    /// Live counters and state (the stored record lags until the next commit).
    pub record: RunRecord,
    /// What started it ("api", "schedule", "http").
    pub reason: String,
    /// Rows the run will read, once its source said.
    pub rows_total: Option<u64>,
    pub eta_seconds: Option<f64>,
}

pub enum AgentMsg {
    /// Re-read this node's assignments now (the coordinator wrote new ones).
    Reconcile,
    /// Cancel the running run of a sync that moved away (its cursor stays at its last commit).
    Stop { sync: SyncId },
    /// Start a run of a sync assigned here; answers its run id.
    StartRun {
        sync: SyncId,
        reason: TriggerReason,
        reply: RpcReplyPort<Answer<String>>,
    },
    /// The live state of a run, if it runs here.
    RunProgress {
        sync: SyncId,
        run_id: String,
        reply: RpcReplyPort<Answer<Option<LiveRun>>>,
    },
    /// Cancel a run here; answers once it ended (its final record), or with None when it did
    /// not end within the agent's wait.
    CancelRun {
        sync: SyncId,
        run_id: String,
        reply: RpcReplyPort<Answer<Option<RunRecord>>>,
    },
}

impl std::fmt::Debug for AgentMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentMsg::Reconcile => write!(f, "Reconcile"),
            AgentMsg::Stop { sync } => write!(f, "Stop({sync})"),
            AgentMsg::StartRun { sync, .. } => write!(f, "StartRun({sync})"),
            AgentMsg::RunProgress { sync, run_id, .. } => {
                write!(f, "RunProgress({sync}, {run_id})")
            }
            AgentMsg::CancelRun { sync, run_id, .. } => write!(f, "CancelRun({sync}, {run_id})"),
        }
    }
}

/// The arguments of an [`AgentMsg`] on the wire.
#[derive(Debug, Serialize, Deserialize)]
enum Wire {
    Reconcile,
    Stop { sync: SyncId },
    StartRun { sync: SyncId, reason: String },
    RunProgress { sync: SyncId, run_id: String },
    CancelRun { sync: SyncId, run_id: String },
}

impl Wire {
    fn variant(&self) -> &'static str {
        match self {
            Wire::Reconcile => "Reconcile",
            Wire::Stop { .. } => "Stop",
            Wire::StartRun { .. } => "StartRun",
            Wire::RunProgress { .. } => "RunProgress",
            Wire::CancelRun { .. } => "CancelRun",
        }
    }
}

fn reason_from(name: &str) -> Option<TriggerReason> {
    [
        TriggerReason::Api,
        TriggerReason::Schedule,
        TriggerReason::Http,
    ]
    .into_iter()
    .find(|r| r.as_str() == name)
}

/// The caller's side of a remote call: the session sends bytes back; they are decoded for
/// the typed port (an undecodable answer becomes a refusal).
fn bytes_port<T>(typed: RpcReplyPort<Answer<T>>) -> RpcReplyPort<Vec<u8>>
where
    T: DeserializeOwned + Send + 'static,
{
    let (tx, rx) = ractor::concurrency::oneshot::<Vec<u8>>();
    let port: RpcReplyPort<Vec<u8>> = match typed.get_timeout() {
        Some(timeout) => (tx, timeout).into(),
        None => tx.into(),
    };
    tokio::spawn(async move {
        if let Ok(bytes) = rx.await {
            let answer = serde_json::from_slice::<Answer<T>>(&bytes).unwrap_or_else(|e| {
                Err(Refusal {
                    code: tonic::Code::Internal as i32,
                    message: format!("the peer's answer was not understood: {e}"),
                    running_run: None,
                })
            });
            let _ = typed.send(answer);
        }
        // The peer dropped the call: dropping `typed` tells the caller.
    });
    port
}

/// The callee's side: the handler answers on a typed port; the answer leaves as bytes.
fn typed_port<T>(bytes: RpcReplyPort<Vec<u8>>) -> RpcReplyPort<Answer<T>>
where
    T: Serialize + Send + 'static,
{
    let (tx, rx) = ractor::concurrency::oneshot::<Answer<T>>();
    let timeout: Option<Duration> = bytes.get_timeout();
    let port: RpcReplyPort<Answer<T>> = match timeout {
        Some(timeout) => (tx, timeout).into(),
        None => tx.into(),
    };
    tokio::spawn(async move {
        if let Ok(answer) = rx.await {
            if let Ok(encoded) = serde_json::to_vec(&answer) {
                let _ = bytes.send(encoded);
            }
        }
    });
    port
}

impl ractor::Message for AgentMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        let encode = |wire: &Wire| serde_json::to_vec(wire).map_err(|_| BoxedDowncastErr);
        Ok(match self {
            AgentMsg::Reconcile => cast(Wire::Reconcile, encode)?,
            AgentMsg::Stop { sync } => cast(Wire::Stop { sync }, encode)?,
            AgentMsg::StartRun {
                sync,
                reason,
                reply,
            } => {
                let wire = Wire::StartRun {
                    sync,
                    reason: reason.as_str().to_string(),
                };
                call(&wire, encode(&wire)?, bytes_port(reply))
            }
            AgentMsg::RunProgress {
                sync,
                run_id,
                reply,
            } => {
                let wire = Wire::RunProgress { sync, run_id };
                call(&wire, encode(&wire)?, bytes_port(reply))
            }
            AgentMsg::CancelRun {
                sync,
                run_id,
                reply,
            } => {
                let wire = Wire::CancelRun { sync, run_id };
                call(&wire, encode(&wire)?, bytes_port(reply))
            }
        })
    }

    fn deserialize(message: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        let decode =
            |args: &[u8]| serde_json::from_slice::<Wire>(args).map_err(|_| BoxedDowncastErr);
        match message {
            SerializedMessage::Cast { args, .. } => match decode(&args)? {
                Wire::Reconcile => Ok(AgentMsg::Reconcile),
                Wire::Stop { sync } => Ok(AgentMsg::Stop { sync }),
                _ => Err(BoxedDowncastErr),
            },
            SerializedMessage::Call { args, reply, .. } => match decode(&args)? {
                Wire::StartRun { sync, reason } => Ok(AgentMsg::StartRun {
                    sync,
                    reason: reason_from(&reason).ok_or(BoxedDowncastErr)?,
                    reply: typed_port(reply),
                }),
                Wire::RunProgress { sync, run_id } => Ok(AgentMsg::RunProgress {
                    sync,
                    run_id,
                    reply: typed_port(reply),
                }),
                Wire::CancelRun { sync, run_id } => Ok(AgentMsg::CancelRun {
                    sync,
                    run_id,
                    reply: typed_port(reply),
                }),
                _ => Err(BoxedDowncastErr),
            },
            SerializedMessage::CallReply(..) => Err(BoxedDowncastErr),
        }
    }
}

fn cast(
    wire: Wire,
    encode: impl Fn(&Wire) -> Result<Vec<u8>, BoxedDowncastErr>,
) -> Result<SerializedMessage, BoxedDowncastErr> {
    Ok(SerializedMessage::Cast {
        variant: wire.variant().to_string(),
        args: encode(&wire)?,
        metadata: None,
    })
}

fn call(wire: &Wire, args: Vec<u8>, reply: RpcReplyPort<Vec<u8>>) -> SerializedMessage {
    SerializedMessage::Call {
        variant: wire.variant().to_string(),
        args,
        reply,
        metadata: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ractor::Message;

    fn sync() -> SyncId {
        SyncId::new("acme", "orders").unwrap()
    }

    #[tokio::test]
    async fn messages_and_answers_survive_the_wire_and_garbage_is_refused() {
        let Ok(SerializedMessage::Cast { variant, args, .. }) =
            AgentMsg::Stop { sync: sync() }.serialize()
        else {
            panic!("Stop is a cast")
        };
        assert_eq!(variant, "Stop");
        let back = AgentMsg::deserialize(SerializedMessage::Cast {
            variant,
            args,
            metadata: None,
        })
        .unwrap();
        assert!(matches!(back, AgentMsg::Stop { sync: s } if s == sync()));

        // A call: the callee's typed answer reaches the caller's typed port.
        let (tx, rx) = ractor::concurrency::oneshot::<Answer<String>>();
        let Ok(SerializedMessage::Call { args, reply, .. }) = (AgentMsg::StartRun {
            sync: sync(),
            reason: TriggerReason::Api,
            reply: tx.into(),
        })
        .serialize() else {
            panic!("StartRun is a call")
        };
        let AgentMsg::StartRun {
            sync: s,
            reason,
            reply,
        } = AgentMsg::deserialize(SerializedMessage::Call {
            variant: "StartRun".into(),
            args,
            reply,
            metadata: None,
        })
        .unwrap()
        else {
            panic!("decoded as another message")
        };
        assert_eq!((s, reason), (sync(), TriggerReason::Api));
        reply
            .send(Err(Refusal::from_status(&crate::admin::errors::trigger(
                &crate::schedule::TriggerError::AlreadyRunning {
                    sync: sync(),
                    run_id: "r7".into(),
                },
            ))))
            .unwrap();
        let answer = rx.await.unwrap().unwrap_err();
        let status = answer.to_status();
        assert_eq!(status.code(), tonic::Code::AlreadyExists);
        assert_eq!(
            status
                .metadata()
                .get(crate::admin::errors::RUNNING_RUN)
                .and_then(|v| v.to_str().ok()),
            Some("r7"),
            "the running run's id crossed the link"
        );

        for garbage in [
            &b"{"[..],
            br#"{"StartRun":{"sync":{"tenant":"a/b","sync":"x"},"reason":"api"}}"#,
        ] {
            assert!(AgentMsg::deserialize(SerializedMessage::Cast {
                variant: "Stop".into(),
                args: garbage.to_vec(),
                metadata: None,
            })
            .is_err());
        }
    }
}
