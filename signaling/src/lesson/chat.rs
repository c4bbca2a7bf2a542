//! The lesson's chat: a bounded log in memory, who may see which message, and each writer's
//! rate window.

use std::collections::VecDeque;

use super::wire::{ChatMessage, ChatTo};

/// Messages kept in memory per room; older ones fall off.
pub const LOG_CAPACITY: usize = 200;
/// Messages sent to a newcomer in `chat_history`.
pub const HISTORY: usize = 50;
/// Longest text, in Unicode scalar values after trimming.
pub const MAX_CHARS: usize = 500;
/// Messages one identity may send per [`RATE_WINDOW_MS`].
pub const RATE_COUNT: usize = 5;
pub const RATE_WINDOW_MS: u64 = 10_000;

/// A message with what the server needs to know about it besides the wire form.
#[derive(Debug, Clone)]
pub struct Logged {
    pub message: ChatMessage,
    /// The sender's identity: a rejoined pupil still sees its own questions to the teacher.
    pub identity: String,
}

impl Logged {
    /// Whether a participant with this identity (and teacher permission or not) sees it.
    pub fn visible_to(&self, identity: &str, teacher: bool) -> bool {
        match self.message.to {
            ChatTo::All => true,
            ChatTo::Teacher => teacher || self.identity == identity,
        }
    }
}

#[derive(Debug, Default)]
pub struct ChatLog {
    log: VecDeque<Logged>,
    next_id: u64,
}

/// Why a text is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextError {
    Empty,
    TooLong(usize),
}

/// The text as it will be shown: trimmed, 1..=[`MAX_CHARS`] scalar values.
pub fn clean_text(text: &str) -> Result<String, TextError> {
    let t = text.trim();
    let n = t.chars().count();
    if n == 0 {
        Err(TextError::Empty)
    } else if n > MAX_CHARS {
        Err(TextError::TooLong(n))
    } else {
        Ok(t.to_owned())
    }
}

/// Times of one identity's recent messages.
#[derive(Debug, Default, Clone)]
pub struct RateWindow {
    sent: VecDeque<u64>,
}

impl RateWindow {
    /// `Ok` and counts the message, or `Err(ms)` until the next one may be sent.
    pub fn take(&mut self, now_ms: u64) -> Result<(), u64> {
        self.take_of(now_ms, RATE_COUNT, RATE_WINDOW_MS)
    }

    /// Like [`RateWindow::take`] with `count` per `window_ms`.
    pub fn take_of(&mut self, now_ms: u64, count: usize, window_ms: u64) -> Result<(), u64> {
        while self
            .sent
            .front()
            .is_some_and(|t| now_ms.saturating_sub(*t) >= window_ms)
        {
            self.sent.pop_front();
        }
        if self.sent.len() >= count {
            let oldest = self.sent.front().copied().unwrap_or(now_ms);
            return Err((oldest + window_ms).saturating_sub(now_ms).max(1));
        }
        self.sent.push_back(now_ms);
        Ok(())
    }
}

impl ChatLog {
    /// Adds a message and gives it its id.
    pub fn push(&mut self, mut message: ChatMessage, identity: String) -> &Logged {
        self.next_id += 1;
        message.message_id = format!("m{}", self.next_id);
        if self.log.len() >= LOG_CAPACITY {
            self.log.pop_front();
        }
        self.log.push_back(Logged { message, identity });
        // Just pushed.
        &self.log[self.log.len() - 1]
    }

    pub fn remove(&mut self, message_id: &str) -> Option<Logged> {
        let i = self
            .log
            .iter()
            .position(|l| l.message.message_id == message_id)?;
        self.log.remove(i)
    }

    /// The last [`HISTORY`] messages this participant may see, oldest first.
    pub fn history(&self, identity: &str, teacher: bool) -> Vec<ChatMessage> {
        let mut out: Vec<ChatMessage> = self
            .log
            .iter()
            .rev()
            .filter(|l| l.visible_to(identity, teacher))
            .take(HISTORY)
            .map(|l| l.message.clone())
            .collect();
        out.reverse();
        out
    }

    pub fn len(&self) -> usize {
        self.log.len()
    }

    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Role;

    fn msg(to: ChatTo) -> ChatMessage {
        ChatMessage {
            message_id: String::new(),
            from: "PA_1".into(),
            name: "A".into(),
            role: Role::Student,
            to,
            text: "hi".into(),
            at_ms: 0,
        }
    }

    #[test]
    fn text_is_trimmed_and_bounded_in_scalar_values() {
        assert_eq!(clean_text("  こんにちは \n"), Ok("こんにちは".into()));
        assert_eq!(clean_text(" \t "), Err(TextError::Empty));
        assert!(clean_text(&"あ".repeat(MAX_CHARS)).is_ok());
        assert_eq!(
            clean_text(&"あ".repeat(MAX_CHARS + 1)),
            Err(TextError::TooLong(MAX_CHARS + 1))
        );
    }

    #[test]
    fn rate_window_allows_five_per_ten_seconds() {
        let mut w = RateWindow::default();
        for i in 0..5 {
            assert_eq!(w.take(1_000 + i * 100), Ok(()));
        }
        assert_eq!(w.take(2_000), Err(9_000));
        assert_eq!(w.take(10_999), Err(1));
        assert_eq!(w.take(11_000), Ok(()));
    }

    #[test]
    fn log_is_bounded_and_history_filters_private_questions() {
        let mut log = ChatLog::default();
        for _ in 0..LOG_CAPACITY + 10 {
            log.push(msg(ChatTo::All), "s1".into());
        }
        assert_eq!(log.len(), LOG_CAPACITY);
        let q = log
            .push(msg(ChatTo::Teacher), "s1".into())
            .message
            .message_id
            .clone();
        assert_eq!(
            log.history("s1", false).last().map(|m| &m.message_id),
            Some(&q)
        );
        assert_eq!(
            log.history("t", true).last().map(|m| &m.message_id),
            Some(&q)
        );
        assert_ne!(
            log.history("s2", false).last().map(|m| &m.message_id),
            Some(&q)
        );
        assert_eq!(log.history("s2", false).len(), HISTORY);
        assert!(log.remove(&q).is_some());
        assert!(log.remove(&q).is_none());
    }
}
