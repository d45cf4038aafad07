//! The encodings held to tiktoken-rs (the crate the packed files come from):
//! every token, and the counts of a corpus and of generated text.

use super::merge::{count_long, count_short};
use super::ranks::Ranks;
use super::*;

fn reference(name: EncodingName) -> tiktoken_rs::CoreBPE {
    match name {
        EncodingName::O200kBase => tiktoken_rs::o200k_base().unwrap(),
        EncodingName::Cl100kBase => tiktoken_rs::cl100k_base().unwrap(),
    }
}

const BOTH: [EncodingName; 2] = [EncodingName::O200kBase, EncodingName::Cl100kBase];

#[test]
fn packed_tokens_equal_the_reference_ranks() {
    for (name, expected_len) in [
        (EncodingName::O200kBase, 199_998),
        (EncodingName::Cl100kBase, 100_256),
    ] {
        let ranks = Ranks::from_packed(name.packed(), name.unpacked_len()).unwrap();
        let bpe = reference(name);
        assert_eq!(ranks.len(), expected_len, "{name:?}");
        // Exact, so the store is allocated once (see Ranks::from_packed).
        assert_eq!(ranks.store_len(), name.unpacked_len(), "{name:?}");
        for rank in 0..expected_len as u32 {
            let token = bpe.decode_bytes(&[rank]).unwrap();
            assert_eq!(ranks.token(rank), token.as_slice(), "{name:?} rank {rank}");
            assert_eq!(ranks.rank(&token), Some(rank), "{name:?} rank {rank}");
        }
    }
}

/// Text from an alphabet that exercises every branch of both patterns: cases,
/// marks, digits, contractions, CJK, emoji, every kind of space and newline.
fn generated(seed: &mut u64, len: usize) -> String {
    const ALPHABET: &[&str] = &[
        " ", "  ", "\n", "\r\n", "\t", "\u{a0}", "\u{2028}", "a", "e", "s", "t", "X", "Y", "'s",
        "'LL", "'ve", "0", "1", "42", "12345", ".", ",", "!", "?", "-", "/", "\\", "\"", "(", ")",
        "{", "}", "é", "\u{301}", "ǅ", "ʰ", "中", "文", "😀", "👍🏽", "the", " quick", "ünï", "Ж",
        "ab", "aaaaaaaa", "=",
    ];
    let mut out = String::new();
    for _ in 0..len {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.push_str(ALPHABET[(*seed >> 33) as usize % ALPHABET.len()]);
    }
    out
}

/// The texts of tests/fixtures/token-corpus.json.
pub(crate) fn corpus() -> Vec<String> {
    let raw = include_str!("../../tests/fixtures/token-corpus.json");
    let items: Vec<serde_json::Value> = serde_json::from_str(raw).unwrap();
    items
        .iter()
        .map(|i| i["text"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn counts_equal_the_reference_tokenizer() {
    for name in BOTH {
        let ours = Encoding::load(name).unwrap();
        let bpe = reference(name);
        let mut texts = corpus();
        let mut seed = 1;
        texts.extend((0..2000).map(|i| generated(&mut seed, 1 + i % 60)));
        // Long pieces take the heap variant of the merge.
        texts.push("a".repeat(1000));
        texts.push("xq".repeat(700));
        texts.push(" ".repeat(500) + "z");
        texts.push("😀".repeat(300));
        for text in &texts {
            assert_eq!(
                ours.count(text),
                bpe.encode_ordinary(text).len(),
                "{name:?}: {text:?}"
            );
        }
    }
}

#[test]
fn both_merge_algorithms_agree() {
    let o200k = EncodingName::O200kBase;
    let ranks = Ranks::from_packed(o200k.packed(), o200k.unpacked_len()).unwrap();
    let mut seed = 3;
    for i in 0..3000 {
        let piece = generated(&mut seed, 1 + i % 40);
        let piece = piece.as_bytes();
        assert_eq!(
            count_short(&ranks, piece),
            count_long(&ranks, piece),
            "{:?}",
            String::from_utf8_lossy(piece)
        );
    }
}

#[test]
fn settled_pieces_never_change_when_text_is_appended() {
    for name in BOTH {
        let enc = Encoding::load(name).unwrap();
        let mut seed = 11;
        for i in 0..3000 {
            let text = generated(&mut seed, 2 + i % 30);
            let whole = enc.count(&text);
            let cuts = text.char_indices().map(|(at, _)| at).skip(1);
            for cut in cuts {
                let (head, _) = text.split_at(cut);
                let (bytes, tokens) = enc.count_settled(head);
                let rest = text.get(bytes..).unwrap();
                assert_eq!(
                    tokens + enc.count(rest),
                    whole,
                    "{name:?}: {head:?} | {text:?}"
                );
            }
        }
    }
}
