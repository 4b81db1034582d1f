//! Estimated waits for self-service: a waiting conversation's position in
//! its queue and the queue's recent answers (the method is in
//! [`crate::wait`]).

use crate::ids::ConversationId;
use crate::time::TimeMs;
use crate::wait::WaitEstimate;

use super::Router;

impl Router {
    /// How long the waiting conversation will likely wait still; `None`
    /// when it is not waiting in a queue, or its queue has answered fewer
    /// than two conversations recently.
    pub fn wait_estimate(&self, now: TimeMs, conversation: ConversationId) -> Option<WaitEstimate> {
        let position = self.conversation_view(now, conversation)?.position?;
        let queue = self.entries.get(&conversation)?.queue;
        self.answers.get(&queue)?.estimate(now, position)
    }
}
