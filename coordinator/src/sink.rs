//! The pipeline's cursor commits, written through the state store under the run's fence.

use std::sync::Arc;

use async_trait::async_trait;
use ferry_actors::pipeline::CursorSink;
use ferry_core::value::Value;

use crate::store::{Fence, StateStore};

/// Commits a run's cursors as fenced writes: once another node owns the sync, the commit fails
/// and the pipeline stops, leaving the successor's cursor alone.
pub struct FencedCursorSink {
    store: Arc<dyn StateStore>,
    fence: Fence,
    run_id: String,
}

impl FencedCursorSink {
    pub fn new(store: Arc<dyn StateStore>, fence: Fence, run_id: impl Into<String>) -> Self {
        Self {
            store,
            fence,
            run_id: run_id.into(),
        }
    }

    pub fn fence(&self) -> &Fence {
        &self.fence
    }
}

#[async_trait]
impl CursorSink for FencedCursorSink {
    async fn commit(&self, cursor: &Value) -> Result<(), String> {
        // The trait's error is a message for now; the class (fenced → stop, unavailable →
        // retry) is in the text only. See the crate's open points.
        self.store
            .commit_cursor(&self.fence, &self.run_id, cursor)
            .await
            .map_err(|e| e.to_string())
    }
}
