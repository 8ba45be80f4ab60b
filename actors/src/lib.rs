//! The per-sync pipeline. This crate holds the pieces whose correctness the whole pipeline rests
//! on: when a cursor may be committed, and how a failed pipeline is restarted.

pub mod checkpoint;
pub mod restart;
