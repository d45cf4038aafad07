//! The tokens of an encoding in one buffer, indexed by rank and by content.
//!
//! The packed file (scripts/pack_encodings.py) is LZMA over every token's bytes
//! in rank order, each preceded by its length in one byte. Unpacked, that
//! buffer is the token store as is; `starts` finds a rank's bytes, and a hash
//! table of ranks finds a token's rank from its bytes.

use std::hash::{BuildHasher, BuildHasherDefault};

use hashbrown::hash_table::Entry;
use hashbrown::HashTable;
use rustc_hash::FxHasher;

/// Larger than any packed encoding unpacks to (o200k_base: 1.6 MB).
const MAX_UNPACKED: usize = 8 * 1024 * 1024;

pub struct Ranks {
    /// `[len][bytes]…` in rank order.
    bytes: Vec<u8>,
    /// Where each rank's bytes start in `bytes`.
    starts: Vec<u32>,
    index: HashTable<u32>,
}

fn hash(token: &[u8]) -> u64 {
    BuildHasherDefault::<FxHasher>::default().hash_one(token)
}

fn token_at<'a>(bytes: &'a [u8], starts: &[u32], rank: u32) -> &'a [u8] {
    let Some(&start) = starts.get(rank as usize) else {
        return &[];
    };
    let start = start as usize;
    let len = start
        .checked_sub(1)
        .and_then(|at| bytes.get(at))
        .map_or(0, |&l| usize::from(l));
    bytes.get(start..start + len).unwrap_or(&[])
}

/// How many `[len][bytes]` records `bytes` holds (a cut last one counts).
fn count_tokens(bytes: &[u8]) -> usize {
    let (mut at, mut count) = (0, 0);
    while let Some(&len) = bytes.get(at) {
        at += 1 + usize::from(len);
        count += 1;
    }
    count
}

impl Ranks {
    /// `unpacked_len`: the exact unpacked size, so the token store is
    /// allocated once. The memory a wasm VM touches while it configures stays
    /// touched for the VM's life (linear memory never shrinks): no buffer here
    /// may double past its final size, and the LZMA window is kept small by
    /// the packer (256 KiB).
    pub fn from_packed(packed: &[u8], unpacked_len: usize) -> Result<Self, String> {
        let mut bytes = Vec::with_capacity(unpacked_len);
        let options = lzma_rs::decompress::Options {
            memlimit: Some(MAX_UNPACKED),
            ..Default::default()
        };
        lzma_rs::lzma_decompress_with_options(&mut { packed }, &mut bytes, &options)
            .map_err(|e| format!("cannot unpack the encoding: {e}"))?;
        let mut starts = Vec::with_capacity(count_tokens(&bytes));
        let mut at = 0;
        while let Some(&len) = bytes.get(at) {
            let start = at + 1;
            at = start + usize::from(len);
            if len == 0 || at > bytes.len() {
                return Err(format!("packed encoding cut at token {}", starts.len()));
            }
            starts.push(u32::try_from(start).map_err(|_| "packed encoding too large")?);
        }
        let count = u32::try_from(starts.len()).map_err(|_| "too many tokens")?;
        let mut index = HashTable::with_capacity(starts.len());
        for rank in 0..count {
            let token = token_at(&bytes, &starts, rank);
            let same = |&r: &u32| token_at(&bytes, &starts, r) == token;
            let rehash = |&r: &u32| hash(token_at(&bytes, &starts, r));
            match index.entry(hash(token), same, rehash) {
                Entry::Occupied(_) => return Err(format!("token {rank} appears twice")),
                Entry::Vacant(slot) => {
                    slot.insert(rank);
                }
            }
        }
        Ok(Ranks {
            bytes,
            starts,
            index,
        })
    }

    pub fn rank(&self, token: &[u8]) -> Option<u32> {
        self.index
            .find(hash(token), |&r| self.token(r) == token)
            .copied()
    }

    pub fn token(&self, rank: u32) -> &[u8] {
        token_at(&self.bytes, &self.starts, rank)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Bytes of the token store (a test holds `unpacked_len` to it).
    #[cfg(test)]
    pub fn store_len(&self) -> usize {
        self.bytes.len()
    }
}
