//! Incremental Server-Sent Events parser. Bytes go in as they arrive, in any
//! split; complete events come out. Handles LF, CRLF and CR line ends (also a
//! CRLF split across chunks), `:` comments, multi-line `data:` and other
//! fields, and UTF-8 split anywhere (decoding happens per complete event).
//! Memory is bounded: an event larger than the limit is dropped and counted,
//! never buffered without end. Every event carries the absolute byte offsets
//! it spans in the stream, so a caller can cut it out of the bytes it forwards.
//!
//! Hand-written rather than a crate: none reports byte offsets (needed to
//! hide the forced usage chunk without re-encoding the stream), and this one
//! stays small inside the wasm filter.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// Offset of the event's first byte in the stream.
    pub start: u64,
    /// Offset just past the blank line that ended it. With CRLF line ends the
    /// final LF arrives after dispatch and lies outside the span; left alone
    /// in a stream it is an empty line, which SSE readers ignore.
    pub end: u64,
}

impl SseEvent {
    pub fn is_done(&self) -> bool {
        self.data.trim() == "[DONE]"
    }
}

#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    event: Option<String>,
    /// Offset of the first byte of the current event (None: between events).
    event_start: Option<u64>,
    /// Bytes consumed so far.
    offset: u64,
    /// The previous byte was a CR: a following LF belongs to the same line end.
    after_cr: bool,
    /// The current event outgrew `max_event_bytes` and is being skipped.
    overflow: bool,
    max_event_bytes: usize,
    dropped: u64,
}

impl SseParser {
    pub fn new(max_event_bytes: usize) -> Self {
        SseParser {
            line: Vec::new(),
            data: Vec::new(),
            has_data: false,
            event: None,
            event_start: None,
            offset: 0,
            after_cr: false,
            overflow: false,
            max_event_bytes,
            dropped: 0,
        }
    }

    /// Events dropped because they exceeded the size limit.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Offset where the event in progress began, if one is.
    pub fn pending_start(&self) -> Option<u64> {
        self.event_start
    }

    /// Feeds the next bytes of the stream; returns the events they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &b in bytes {
            let at = self.offset;
            self.offset += 1;
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue; // the LF of a CRLF
                }
            }
            match b {
                b'\r' | b'\n' => {
                    self.after_cr = b == b'\r';
                    if let Some(e) = self.end_line() {
                        out.push(e);
                    }
                }
                _ => {
                    if self.event_start.is_none() {
                        self.event_start = Some(at);
                    }
                    if self.overflow {
                        continue;
                    }
                    if self.line.len() + self.data.len() >= self.max_event_bytes {
                        self.overflow = true;
                        self.line.clear();
                        self.data.clear();
                        continue;
                    }
                    self.line.push(b);
                }
            }
        }
        out
    }

    /// A line ended: a blank one dispatches the event, others are fields.
    fn end_line(&mut self) -> Option<SseEvent> {
        if self.line.is_empty() {
            return self.dispatch();
        }
        if self.event_start.is_none() {
            self.event_start = Some(self.offset.saturating_sub(1));
        }
        let line = std::mem::take(&mut self.line);
        if self.overflow || line.first() == Some(&b':') {
            return None;
        }
        let (field, value) = match line.iter().position(|&c| c == b':') {
            Some(i) => {
                let (f, rest) = line.split_at(i);
                let v = rest.get(1..).unwrap_or_default();
                (f, v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line.as_slice(), &[][..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {} // id, retry and unknown fields do not matter here
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let start = self.event_start.take()?;
        let overflow = std::mem::replace(&mut self.overflow, false);
        let data = std::mem::take(&mut self.data);
        let had_data = std::mem::replace(&mut self.has_data, false);
        let event = self.event.take();
        if overflow {
            self.dropped += 1;
            return None;
        }
        if !had_data {
            // Comments and fields without data dispatch nothing (per the spec).
            return None;
        }
        Some(SseEvent {
            event,
            data: String::from_utf8_lossy(&data).into_owned(),
            start,
            end: self.offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8]) -> Vec<SseEvent> {
        SseParser::new(1 << 20).push(input)
    }

    #[test]
    fn parses_fields_comments_and_multiline_data() {
        let events = all(b": keep-alive\n\nevent: delta\ndata: {\"a\":1}\ndata:second\nid: 7\n\ndata: [DONE]\n\n");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event.as_deref(), Some("delta"));
        assert_eq!(events[0].data, "{\"a\":1}\nsecond");
        assert!(events[1].is_done());
    }

    #[test]
    fn line_endings_are_equivalent() {
        let lf = all(b"data: x\n\ndata: y\n\n");
        let crlf = all(b"data: x\r\n\r\ndata: y\r\n\r\n");
        let cr = all(b"data: x\r\rdata: y\r\r");
        let data = |v: &[SseEvent]| v.iter().map(|e| e.data.clone()).collect::<Vec<_>>();
        assert_eq!(data(&lf), ["x", "y"]);
        assert_eq!(data(&crlf), data(&lf));
        assert_eq!(data(&cr), data(&lf));
    }

    #[test]
    fn crlf_split_between_chunks_is_one_line_end() {
        let mut p = SseParser::new(1 << 20);
        assert!(p.push(b"data: x\r").is_empty());
        assert!(p.push(b"\n\r").len() == 1);
        let rest = p.push(b"\ndata: y\r\n\r\n");
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].data, "y");
    }

    #[test]
    fn offsets_cover_each_event_exactly() {
        let input = b": c\n\ndata: a\n\ndata: b\r\n\r\n";
        let events = all(input);
        let spans: Vec<&[u8]> = events
            .iter()
            .map(|e| &input[e.start as usize..e.end as usize])
            .collect();
        assert_eq!(spans, [&b"data: a\n\n"[..], &b"data: b\r\n\r"[..]]);
    }

    #[test]
    fn utf8_split_inside_a_character_survives() {
        let text = "data: héllo 👋\n\n".as_bytes();
        let mut p = SseParser::new(1 << 20);
        let mut events = Vec::new();
        for b in text {
            events.extend(p.push(std::slice::from_ref(b)));
        }
        assert_eq!(events[0].data, "héllo 👋");
    }

    #[test]
    fn oversized_events_are_dropped_not_buffered() {
        let mut p = SseParser::new(16);
        let big = format!("data: {}\n\ndata: ok\n\n", "x".repeat(100));
        let events = p.push(big.as_bytes());
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "ok");
        assert_eq!(p.dropped(), 1);
    }

    #[test]
    fn an_unterminated_event_is_not_dispatched() {
        let mut p = SseParser::new(1 << 20);
        assert!(p.push(b"data: partial").is_empty());
        assert_eq!(p.pending_start(), Some(0));
    }
}
