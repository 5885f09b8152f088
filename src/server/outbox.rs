//! A client's bounded outbound queue of whole WebSocket frames, flushed with `writev`.
//!
//! Broadcast frames are queued shared — one event as its [`Published`] pointer, a batch of
//! several as one buffer of back-to-back frames that every receiver of the batch shares (no copy,
//! no per-client serialisation); replies and control frames as owned bytes. [`Outbox::write_to`] sends as many
//! queued frames as the socket takes in one vectored write per call, looping until the queue is
//! empty or the socket would block.
//!
//! Invariants: `queued` is the number of bytes not yet written; `offset < len(front)` whenever the
//! queue is non-empty; bytes leave in exactly the order they were queued, so frame boundaries on
//! the wire are always intact (a partially written frame is always completed before anything
//! else is written).

use crate::event::Published;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;

/// Upper bound of slices handed to one `writev` (Linux IOV_MAX is 1024).
const MAX_SLICES: usize = 64;
/// A drained queue whose buffer grew beyond this many entries gives its memory back.
const SHRINK_ABOVE: usize = 64;

/// One queued frame (or sequence of whole frames).
#[derive(Debug)]
pub enum Chunk {
    /// A broadcast event; its frame bytes are shared with every other receiver.
    Event(Arc<Published>),
    /// Several broadcast events' frames, back to back, shared with every other receiver.
    Frames(Arc<[u8]>),
    /// Bytes owned by this connection (replies, pongs, close frames, HTTP responses).
    Bytes(Box<[u8]>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Event(p) => &p.frame,
            Chunk::Frames(f) => f,
            Chunk::Bytes(b) => b,
        }
    }
}

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Everything queued was written.
    Drained,
    /// The socket would block with output still pending: arm writable interest.
    Blocked,
}

/// The outbound queue.
#[derive(Debug, Default)]
pub struct Outbox {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    offset: usize,
    /// Bytes queued and not yet written.
    queued: usize,
}

impl Outbox {
    /// Queues a shared event frame.
    pub fn push_event(&mut self, ev: Arc<Published>) {
        self.queued += ev.frame.len();
        self.chunks.push_back(Chunk::Event(ev));
    }

    /// Queues shared whole frames (ignored when empty).
    pub fn push_frames(&mut self, frames: Arc<[u8]>) {
        if frames.is_empty() {
            return;
        }
        self.queued += frames.len();
        self.chunks.push_back(Chunk::Frames(frames));
    }

    /// Queues owned bytes (ignored when empty).
    pub fn push_bytes(&mut self, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        self.queued += bytes.len();
        self.chunks
            .push_back(Chunk::Bytes(bytes.into_boxed_slice()));
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Drops every queued frame except the one partially written (which must be completed to
    /// keep the stream well-formed). Used before a close frame for a slow consumer. Returns how
    /// many frames were dropped.
    pub fn discard_unsent(&mut self) -> usize {
        let keep = usize::from(self.offset > 0);
        let mut dropped = 0;
        while self.chunks.len() > keep {
            if let Some(c) = self.chunks.pop_back() {
                self.queued -= c.bytes().len();
                dropped += 1;
            }
        }
        dropped
    }

    /// Writes queued bytes until drained or the writer would block. `Interrupted` is retried;
    /// other errors (including a zero-length write) are returned.
    pub fn write_to<W: Write>(&mut self, w: &mut W) -> io::Result<Flush> {
        while !self.chunks.is_empty() {
            let n = {
                let mut slices: [IoSlice<'_>; MAX_SLICES] = [IoSlice::new(&[]); MAX_SLICES];
                let mut count = 0;
                for (i, c) in self.chunks.iter().take(MAX_SLICES).enumerate() {
                    let b = c.bytes();
                    slices[i] = IoSlice::new(if i == 0 { &b[self.offset..] } else { b });
                    count += 1;
                }
                match w.write_vectored(&slices[..count]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flush::Blocked),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            self.advance(n);
        }
        if self.chunks.capacity() > SHRINK_ABOVE {
            self.chunks = VecDeque::new();
        }
        Ok(Flush::Drained)
    }

    fn advance(&mut self, mut n: usize) {
        self.queued -= n;
        while n > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let left = front.bytes().len() - self.offset;
            if n >= left {
                n -= left;
                self.offset = 0;
                self.chunks.pop_front();
            } else {
                self.offset += n;
                n = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    /// A socket that takes at most `budget` bytes per call, and blocks every other call.
    struct Choppy {
        out: Vec<u8>,
        budget: usize,
        block_next: bool,
    }

    impl Write for Choppy {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.block_next = !self.block_next;
            if !self.block_next {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                let take = (self.budget - n).min(b.len());
                self.out.extend_from_slice(&b[..take]);
                n += take;
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn published(seq: u64) -> Arc<Published> {
        let ev = Event::new("BTC".into(), "new_block", None).with("height", seq.into());
        Arc::new(Published::new("e".into(), seq, &ev, 1.0))
    }

    #[test]
    fn partial_writes_and_would_block_keep_the_byte_stream_intact() {
        let mut ob = Outbox::default();
        let mut expected = Vec::new();
        for seq in 1..=50 {
            let p = published(seq);
            expected.extend_from_slice(&p.frame);
            ob.push_event(p);
            let reply = format!("reply-{seq}").into_bytes();
            expected.extend_from_slice(&reply);
            ob.push_bytes(reply);
        }
        assert_eq!(ob.queued_bytes(), expected.len());
        let mut sock = Choppy {
            out: Vec::new(),
            budget: 37,
            block_next: false,
        };
        let mut rounds = 0;
        while ob.write_to(&mut sock).unwrap() == Flush::Blocked {
            rounds += 1;
            assert!(rounds < 10_000);
        }
        assert_eq!(sock.out, expected);
        assert_eq!(ob.queued_bytes(), 0);
        assert!(ob.is_empty());
    }

    #[test]
    fn discard_keeps_the_partially_written_frame() {
        let mut ob = Outbox::default();
        let first = published(1);
        let first_len = first.frame.len();
        ob.push_event(first);
        ob.push_event(published(2));
        ob.push_event(published(3));
        ob.advance(5);
        assert_eq!(ob.discard_unsent(), 2);
        assert_eq!(ob.queued_bytes(), first_len - 5);
        let mut sink = Vec::new();
        ob.write_to(&mut sink).unwrap();
        assert_eq!(sink.len(), first_len - 5);
    }

    #[test]
    fn zero_length_write_is_an_error() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Ok(0)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut ob = Outbox::default();
        ob.push_bytes(b"x".to_vec());
        assert!(ob.write_to(&mut Closed).is_err());
    }
}
