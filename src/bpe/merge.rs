//! Byte-pair merging as tiktoken does it (`_byte_pair_merge` and its heap
//! variant for long pieces), counting the tokens instead of listing them:
//! start from single bytes and repeatedly merge the adjacent pair whose joined
//! bytes have the lowest rank, the leftmost on ties, until no pair is a token.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::ranks::Ranks;

/// tiktoken's switch between the two algorithms (same result, different cost).
const LONG_PIECE: usize = 100;

pub fn count(ranks: &Ranks, piece: &[u8]) -> usize {
    match piece.len() {
        0 | 1 => piece.len(),
        n if n < LONG_PIECE => count_short(ranks, piece),
        _ => count_long(ranks, piece),
    }
}

fn rank_of(ranks: &Ranks, piece: &[u8], start: usize, end: usize) -> u32 {
    piece
        .get(start..end)
        .and_then(|bytes| ranks.rank(bytes))
        .unwrap_or(u32::MAX)
}

/// O(n²), cache-friendly: a list of (start, rank of the pair starting here).
pub(super) fn count_short(ranks: &Ranks, piece: &[u8]) -> usize {
    let n = piece.len();
    let mut parts: Vec<(usize, u32)> = (0..n.saturating_sub(1))
        .map(|i| (i, rank_of(ranks, piece, i, i + 2)))
        .collect();
    parts.push((n.saturating_sub(1), u32::MAX));
    parts.push((n, u32::MAX));
    // The rank of the pair that part `i` would form with its next part once
    // part `i + 1` is merged away (it is still in the list, hence `i + 3`).
    let joined = |parts: &[(usize, u32)], i: usize| match (parts.get(i), parts.get(i + 3)) {
        (Some(&(start, _)), Some(&(end, _))) => rank_of(ranks, piece, start, end),
        _ => u32::MAX,
    };
    loop {
        let last = parts.len().saturating_sub(1);
        // `min_by_key` keeps the first of equal minima: the leftmost pair.
        let best = parts
            .iter()
            .take(last)
            .enumerate()
            .min_by_key(|(_, &(_, rank))| rank)
            .filter(|(_, &(_, rank))| rank != u32::MAX)
            .map(|(i, _)| i);
        let Some(i) = best else {
            break;
        };
        if i > 0 {
            let rank = joined(&parts, i - 1);
            if let Some(p) = parts.get_mut(i - 1) {
                p.1 = rank;
            }
        }
        let rank = joined(&parts, i);
        if let Some(p) = parts.get_mut(i) {
            p.1 = rank;
        }
        if i + 1 < parts.len() {
            parts.remove(i + 1);
        }
    }
    parts.len().saturating_sub(1)
}

/// O(n log n) for long pieces: the live tokens as a linked list over their
/// start offsets, candidate merges in a min-heap ordered by (rank, start);
/// a candidate whose tokens changed since it was pushed is skipped.
pub(super) fn count_long(ranks: &Ranks, piece: &[u8]) -> usize {
    const DEAD: usize = 0;
    let n = piece.len();
    // `end[s]`: where the token starting at `s` ends (DEAD once merged into
    // its left neighbour); `prev[s]`: the start of the token before it.
    let mut end: Vec<usize> = (1..=n).collect();
    let mut prev: Vec<usize> = (0..n).map(|s| s.wrapping_sub(1)).collect();
    let mut heap = BinaryHeap::with_capacity(n);
    for s in 0..n - 1 {
        let rank = rank_of(ranks, piece, s, s + 2);
        if rank != u32::MAX {
            heap.push(Reverse((rank, s, s + 2)));
        }
    }
    let end_of = |end: &[usize], s: usize| end.get(s).copied().unwrap_or(DEAD);
    let mut tokens = n;
    while let Some(Reverse((_, left, joined_end))) = heap.pop() {
        let right = end_of(&end, left);
        if right == DEAD || right >= n || end_of(&end, right) != joined_end {
            continue;
        }
        if let Some(e) = end.get_mut(left) {
            *e = joined_end;
        }
        if let Some(e) = end.get_mut(right) {
            *e = DEAD;
        }
        if let Some(p) = prev.get_mut(joined_end) {
            *p = left;
        }
        tokens -= 1;
        // The merged token can now join its right and its left neighbour.
        if joined_end < n {
            let next_end = end_of(&end, joined_end);
            let rank = rank_of(ranks, piece, left, next_end);
            if rank != u32::MAX {
                heap.push(Reverse((rank, left, next_end)));
            }
        }
        if left > 0 {
            let before = prev.get(left).copied().unwrap_or(usize::MAX);
            let rank = rank_of(ranks, piece, before, joined_end);
            if rank != u32::MAX {
                heap.push(Reverse((rank, before, joined_end)));
            }
        }
    }
    tokens
}
