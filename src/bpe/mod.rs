//! OpenAI's byte-pair encodings (o200k_base, cl100k_base), for counting tokens.
//!
//! Hand-written instead of tiktoken-rs because of memory: its `CoreBPE` keeps
//! every token as a heap `Vec<u8>` in three structures (encoder, decoder,
//! sorted list), about 45 MiB per wasm VM for both encodings, built from 5.3 MB
//! of base64 text embedded in the module. Counting needs no decoding and no
//! special tokens: here the tokens stay in one buffer and a table of `u32`
//! ranks indexes it (`ranks.rs`, about 4 MiB for o200k_base), unpacked from
//! an LZMA file (`scripts/pack_encodings.py`). The pre-split patterns
//! and the merge rule (`merge.rs`) are tiktoken's; tests hold every count to
//! tiktoken-rs and the Python tiktoken package.

mod merge;
mod ranks;

use fancy_regex::Regex;

use ranks::Ranks;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingName {
    O200kBase,
    Cl100kBase,
}

impl EncodingName {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "o200k_base" => Some(EncodingName::O200kBase),
            "cl100k_base" => Some(EncodingName::Cl100kBase),
            _ => None,
        }
    }

    fn packed(self) -> &'static [u8] {
        match self {
            EncodingName::O200kBase => include_bytes!("data/o200k_base.lzma"),
            EncodingName::Cl100kBase => include_bytes!("data/cl100k_base.lzma"),
        }
    }

    /// What `packed` unpacks to, in bytes (a test checks it).
    fn unpacked_len(self) -> usize {
        match self {
            EncodingName::O200kBase => 1_597_668,
            EncodingName::Cl100kBase => 744_086,
        }
    }

    /// The pre-split patterns, as tiktoken publishes them (`openai_public.py`).
    fn pattern(self) -> &'static str {
        match self {
            EncodingName::O200kBase => concat!(
                r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
                r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
                r"|\p{N}{1,3}",
                r"| ?[^\s\p{L}\p{N}]+[\r\n/]*",
                r"|\s*[\r\n]+",
                r"|\s+(?!\S)",
                r"|\s+",
            ),
            EncodingName::Cl100kBase => concat!(
                r"'(?i:[sdmt]|ll|ve|re)",
                r"|[^\r\n\p{L}\p{N}]?+\p{L}++",
                r"|\p{N}{1,3}+",
                r"| ?[^\s\p{L}\p{N}]++[\r\n]*+",
                r"|\s++$",
                r"|\s*[\r\n]",
                r"|\s+(?!\S)",
                r"|\s",
            ),
        }
    }
}

/// Pieces of text that later text can still change: the pre-split of a text
/// that grows may re-split its last pieces (o200k_base's letter classes can
/// join the last two), never the ones before.
const UNSETTLED_PIECES: usize = 2;

pub struct Encoding {
    ranks: Ranks,
    split: Regex,
}

impl Encoding {
    pub fn load(name: EncodingName) -> Result<Self, String> {
        let ranks = Ranks::from_packed(name.packed(), name.unpacked_len())
            .map_err(|e| format!("{name:?}: {e}"))?;
        let split = Regex::new(name.pattern()).map_err(|e| format!("{name:?}: {e}"))?;
        Ok(Encoding { ranks, split })
    }

    /// Tokens of `text` (special tokens count as text), as tiktoken's
    /// `encode_ordinary(text).len()`.
    pub fn count(&self, text: &str) -> usize {
        let mut tokens = 0;
        let mut end = 0;
        for piece in self.split.find_iter(text) {
            match piece {
                Ok(p) => {
                    tokens += self.count_piece(p.as_str().as_bytes());
                    end = p.end();
                }
                // The pattern engine gave up (its backtracking limit): the
                // rest counts one token per byte, an upper bound.
                Err(_) => return tokens + text.len().saturating_sub(end),
            }
        }
        tokens
    }

    /// Splits off the leading pieces of `text` that no appended text can
    /// re-split: `(their length in bytes, their tokens)`.
    pub fn count_settled(&self, text: &str) -> (usize, usize) {
        let mut unsettled = std::collections::VecDeque::with_capacity(UNSETTLED_PIECES + 1);
        let (mut bytes, mut tokens) = (0, 0);
        for piece in self.split.find_iter(text) {
            let Ok(piece) = piece else {
                break;
            };
            unsettled.push_back(piece);
            if unsettled.len() > UNSETTLED_PIECES {
                if let Some(settled) = unsettled.pop_front() {
                    tokens += self.count_piece(settled.as_str().as_bytes());
                    bytes = settled.end();
                }
            }
        }
        (bytes, tokens)
    }

    fn count_piece(&self, piece: &[u8]) -> usize {
        if self.ranks.rank(piece).is_some() {
            1
        } else {
            merge::count(&self.ranks, piece)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
