//! The per-sync pipeline: the stages of one run (`pipeline`), when a cursor may be committed
//! (`checkpoint`), and how a failed pipeline is restarted (`restart`). The ractor actors
//! (SyncSupervisor, NodeAgent) that host these stages come next.

pub mod changes;
pub mod checkpoint;
pub mod pipeline;
pub mod restart;
pub mod send_gate;
pub mod supervisor;
