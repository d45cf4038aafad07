//! Counts text that arrives in pieces (a stream's deltas) exactly as if it
//! were counted whole, keeping only a short tail: whenever the tail has grown
//! enough, its settled pieces (the tokenizer's pre-split never re-splits them,
//! whatever follows) are counted and dropped. Memory per choice is bounded by
//! the last pieces, not by the response.

use crate::tokens::TextCounter;

/// The tail is looked at once it reaches this size, then each time it has
/// doubled since (so a long unsettled piece is not rescanned on every delta).
const SETTLE_FROM: usize = 256;
/// A tail this long is one enormous piece (a run of letters or spaces with no
/// break): it is counted as it stands, the only case where the sum can exceed
/// the whole-text count (by a token or so at the cut).
const MAX_TAIL: usize = 64 * 1024;

#[derive(Debug, Default)]
pub struct RunningCount {
    tail: String,
    counted: usize,
    settle_at: usize,
}

impl RunningCount {
    pub fn push(&mut self, text: &str, counter: &dyn TextCounter) {
        self.tail.push_str(text);
        if self.tail.len() < self.settle_at.max(SETTLE_FROM) {
            return;
        }
        let (bytes, tokens) = counter.count_settled(&self.tail);
        if bytes > 0 && self.tail.is_char_boundary(bytes) {
            self.counted += tokens;
            self.tail.drain(..bytes);
        }
        if self.tail.len() >= MAX_TAIL {
            self.counted += counter.count(&self.tail);
            self.tail.clear();
        }
        self.settle_at = (2 * self.tail.len()).min(MAX_TAIL);
    }

    /// Tokens of everything pushed so far.
    pub fn total(&self, counter: &dyn TextCounter) -> usize {
        self.counted + counter.count(&self.tail)
    }

    /// Bytes kept (for the tests of the bound).
    #[cfg(test)]
    pub fn kept(&self) -> usize {
        self.tail.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpe::tests::corpus;
    use crate::bpe::{Encoding, EncodingName};

    fn in_pieces(
        text: &str,
        mut sizes: impl FnMut(usize) -> usize,
        enc: &Encoding,
    ) -> RunningCount {
        let mut count = RunningCount::default();
        let mut rest = text;
        let mut i = 0;
        while !rest.is_empty() {
            let mut cut = sizes(i).clamp(1, rest.len());
            while !rest.is_char_boundary(cut) {
                cut += 1;
            }
            let (piece, after) = rest.split_at(cut);
            count.push(piece, enc);
            rest = after;
            i += 1;
        }
        count
    }

    #[test]
    fn deltas_of_every_size_count_as_the_whole_text() {
        for name in [EncodingName::O200kBase, EncodingName::Cl100kBase] {
            let enc = Encoding::load(name).unwrap();
            let texts = corpus();
            let all = texts.join("\n");
            for text in texts.iter().chain([&all]) {
                let whole = enc.count(text);
                for size in [1, 2, 3, 5, 8, 13, 64, 300, 4096] {
                    let running = in_pieces(text, |_| size, &enc);
                    assert_eq!(
                        running.total(&enc),
                        whole,
                        "{name:?}, deltas of {size} bytes"
                    );
                }
                let mut seed = 7u64;
                let running = in_pieces(
                    text,
                    |_| {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                        (seed >> 59) as usize + 1
                    },
                    &enc,
                );
                assert_eq!(running.total(&enc), whole, "{name:?}, random deltas");
            }
        }
    }

    #[test]
    fn memory_stays_bounded_by_the_last_pieces() {
        let enc = Encoding::load(EncodingName::O200kBase).unwrap();
        let text = corpus().join("\n").repeat(60);
        let mut count = RunningCount::default();
        let mut most = 0;
        for c in text.chars() {
            count.push(c.encode_utf8(&mut [0; 4]), &enc);
            most = most.max(count.kept());
        }
        assert!(text.len() > 100_000);
        assert!(most < 2 * SETTLE_FROM, "kept up to {most} bytes");
        assert_eq!(count.total(&enc), enc.count(&text));
    }

    #[test]
    fn one_enormous_piece_is_cut_not_kept() {
        let enc = Encoding::load(EncodingName::O200kBase).unwrap();
        let mut count = RunningCount::default();
        for _ in 0..100_000 {
            count.push("ab", &enc);
        }
        assert!(count.kept() <= MAX_TAIL);
        let whole = enc.count(&"ab".repeat(100_000));
        let total = count.total(&enc);
        assert!(
            total >= whole && total <= whole + 8,
            "{total} against {whole}"
        );
    }
}
