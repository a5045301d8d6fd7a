//! Proof of possession: a supernode checks that a leaf holds what it
//! publishes by asking for one random 1 KiB chunk of one of its files, with
//! the chaining values that link that chunk to the content hash.
//!
//! KaZaA's indexes were poisoned by entries for files nobody had (Liang,
//! Naoumov, Ross, INFOCOM 2006). A content hash is the BLAKE3 root of the
//! file, so one chunk and the CVs of its siblings on the way up the tree
//! (about `log2(chunks)`, 20 for a gigabyte) prove the chunk belongs to the
//! file: about 1.7 KB per check, whatever the file's size, where a block
//! and the block layer would cost up to 512 KiB. A leaf cannot answer for a
//! file it does not hold, except by luck on a chunk it happens to have.
//!
//! The tree is BLAKE3's own over 1 KiB chunks: a node covering more than
//! one chunk splits into a left subtree of the largest power of two of
//! chunks that leaves at least one for the right. Block boundaries (blocks
//! are a power of two of chunks, [`super::content`]) fall on this tree's
//! nodes, so a prover reads the siblings above its block from the block
//! layer it keeps, and hashes those inside the block from the block's bytes.

use std::ops::Range;

use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode};

use super::content::{BlockHashes, CV_LEN};
use super::id::ContentHash;

/// BLAKE3's chunk: the unit a challenge asks for.
pub const CHUNK_LEN: u64 = 1024;
/// Longest proof a verifier reads: a tree of 2^64 chunks is 64 levels deep.
pub const MAX_PROOF_LEN: usize = 64;

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("chunk {index} is out of range (the file has {count} chunks)")]
    ChunkIndex { index: u64, count: u64 },
    #[error("chunk {index} has {got} bytes, expected {expected}")]
    ChunkLength { index: u64, expected: u64, got: usize },
    #[error("the proof has {got} chaining values, expected {expected}")]
    ProofLength { expected: usize, got: usize },
    #[error("the chunk and its proof do not hash to the content hash")]
    Mismatch,
    #[error("the block given is not the one that holds chunk {index}")]
    WrongBlock { index: u64 },
}

/// Chunks in a file of `size` bytes; an empty file has one empty chunk.
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK_LEN).max(1)
}

/// Byte range of chunk `index` in a file of `size` bytes.
pub fn chunk_range(size: u64, index: u64) -> Range<u64> {
    let start = (index * CHUNK_LEN).min(size);
    start..start.saturating_add(CHUNK_LEN).min(size)
}

/// One step on the way from the root down to a chunk: the sibling subtree
/// (a range of chunks) and whether it lies to the left.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sibling {
    chunks: Range<u64>,
    on_the_left: bool,
}

/// The siblings of chunk `index`'s ancestors, from the root down.
fn path(count: u64, index: u64) -> Vec<Sibling> {
    let mut siblings = Vec::new();
    let mut node = 0..count;
    while node.end - node.start > 1 {
        let middle = node.start + left_len(node.end - node.start);
        if index < middle {
            siblings.push(Sibling {
                chunks: middle..node.end,
                on_the_left: false,
            });
            node = node.start..middle;
        } else {
            siblings.push(Sibling {
                chunks: node.start..middle,
                on_the_left: true,
            });
            node = middle..node.end;
        }
    }
    siblings
}

/// BLAKE3's split: the largest power of two below `count` (2 or more).
fn left_len(count: u64) -> u64 {
    1 << (u64::BITS - 1 - (count - 1).leading_zeros())
}

/// The proof for chunk `index` of the file `hashes` describes: the CVs of
/// its siblings, from the root down. `block` is the whole block holding
/// the chunk (the siblings inside it are hashed from it).
pub fn prove(hashes: &BlockHashes, index: u64, block: &[u8]) -> Result<Vec<ChainingValue>, ProofError> {
    let layout = hashes.layout();
    let count = chunk_count(layout.size());
    if index >= count {
        return Err(ProofError::ChunkIndex { index, count });
    }
    let chunks_per_block = layout.block_size() / CHUNK_LEN;
    let block_index = index / chunks_per_block;
    let block_start = block_index * chunks_per_block;
    if block.len() as u64 != layout.block_len(block_index as u32) {
        return Err(ProofError::WrongBlock { index });
    }
    let layer = hashes.layer_bytes();
    let block_cvs: Vec<ChainingValue> = layer
        .chunks_exact(CV_LEN)
        .map(|cv| cv.try_into().expect("chunks_exact yields CV_LEN bytes"))
        .collect();
    Ok(path(count, index)
        .into_iter()
        .map(|sibling| {
            let whole_blocks = sibling.chunks.start % chunks_per_block == 0
                && (sibling.chunks.end % chunks_per_block == 0 || sibling.chunks.end == count);
            if whole_blocks && !block_cvs.is_empty() {
                let first = (sibling.chunks.start / chunks_per_block) as usize;
                let end = sibling.chunks.end.div_ceil(chunks_per_block) as usize;
                subtree(&block_cvs[first..end])
            } else {
                // Inside the block that holds the chunk.
                let start = ((sibling.chunks.start - block_start) * CHUNK_LEN) as usize;
                let end = (((sibling.chunks.end - block_start) * CHUNK_LEN) as usize).min(block.len());
                blake3::Hasher::new()
                    .set_input_offset(sibling.chunks.start * CHUNK_LEN)
                    .update(&block[start..end])
                    .finalize_non_root()
            }
        })
        .collect())
}

/// The CV of a run of whole blocks (two or more merged by BLAKE3's rule).
fn subtree(cvs: &[ChainingValue]) -> ChainingValue {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let (left, right) = cvs.split_at(left_len(cvs.len() as u64) as usize);
    merge_subtrees_non_root(&subtree(left), &subtree(right), Mode::Hash)
}

/// Checks `data` as chunk `index` of the file `root` of `size` bytes, with
/// `proof` (its siblings' CVs, from the root down).
pub fn verify(
    root: ContentHash,
    size: u64,
    index: u64,
    data: &[u8],
    proof: &[ChainingValue],
) -> Result<(), ProofError> {
    let count = chunk_count(size);
    if index >= count {
        return Err(ProofError::ChunkIndex { index, count });
    }
    let range = chunk_range(size, index);
    if data.len() as u64 != range.end - range.start {
        return Err(ProofError::ChunkLength {
            index,
            expected: range.end - range.start,
            got: data.len(),
        });
    }
    let siblings = path(count, index);
    if proof.len() != siblings.len() {
        return Err(ProofError::ProofLength {
            expected: siblings.len(),
            got: proof.len(),
        });
    }
    if siblings.is_empty() {
        return match ContentHash::of(data) == root {
            true => Ok(()),
            false => Err(ProofError::Mismatch),
        };
    }
    let mut node = blake3::Hasher::new()
        .set_input_offset(range.start)
        .update(data)
        .finalize_non_root();
    // From the chunk up; the last merge is the root's.
    for (level, (sibling, cv)) in siblings.iter().zip(proof).enumerate().rev() {
        let (left, right) = match sibling.on_the_left {
            true => (cv, &node),
            false => (&node, cv),
        };
        if level == 0 {
            return match ContentHash::from(merge_subtrees_root(left, right, Mode::Hash)) == root {
                true => Ok(()),
                false => Err(ProofError::Mismatch),
            };
        }
        node = merge_subtrees_non_root(left, right, Mode::Hash);
    }
    unreachable!("a non-empty path ends at the root")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::content::hash_bytes;
    use proptest::prelude::*;

    fn patterned(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    /// The proof for chunk `index` of `data`, as a prover holding it makes it.
    fn proof_of(data: &[u8], index: u64) -> (BlockHashes, Vec<ChainingValue>) {
        let hashes = hash_bytes(data);
        let layout = hashes.layout();
        let block = (index * CHUNK_LEN / layout.block_size()) as u32;
        let bytes = layout.block_range(block);
        let proof = prove(&hashes, index, &data[bytes.start as usize..bytes.end as usize]).unwrap();
        (hashes, proof)
    }

    fn chunk(data: &[u8], index: u64) -> &[u8] {
        let range = chunk_range(data.len() as u64, index);
        &data[range.start as usize..range.end as usize]
    }

    #[test]
    fn every_chunk_of_files_around_the_boundaries_proves_and_a_changed_byte_does_not() {
        // One chunk, a few, one block, a block and a bit, several blocks
        // with a short last one.
        for len in [0, 5, 1024, 3000, 65_536, 65_537, 200_000] {
            let data = patterned(len);
            let root = ContentHash::of(&data);
            let count = chunk_count(len as u64);
            for index in (0..count).step_by(7).chain([count - 1]) {
                let (_, proof) = proof_of(&data, index);
                let piece = chunk(&data, index);
                assert_eq!(
                    verify(root, len as u64, index, piece, &proof),
                    Ok(()),
                    "len {len}, chunk {index}"
                );
                if !piece.is_empty() {
                    let mut changed = piece.to_vec();
                    changed[0] ^= 1;
                    assert_eq!(
                        verify(root, len as u64, index, &changed, &proof),
                        Err(ProofError::Mismatch)
                    );
                }
                if proof.len() > 1 {
                    let mut forged = proof.clone();
                    forged[1][0] ^= 1;
                    assert_eq!(
                        verify(root, len as u64, index, piece, &forged),
                        Err(ProofError::Mismatch)
                    );
                }
            }
        }
    }

    #[test]
    fn a_proof_is_short_and_bounded_by_its_shape() {
        let data = patterned(200_000);
        let root = ContentHash::of(&data);
        let (_, proof) = proof_of(&data, 100);
        // 196 chunks: 8 levels.
        assert_eq!(proof.len(), 8);
        assert_eq!(
            verify(root, 200_000, 100, chunk(&data, 100), &proof[1..]),
            Err(ProofError::ProofLength { expected: 8, got: 7 })
        );
        // Another chunk's bytes, or the right bytes for another index, fail.
        assert_eq!(
            verify(root, 200_000, 101, chunk(&data, 100), &proof),
            Err(ProofError::Mismatch)
        );
        assert_eq!(
            verify(root, 200_000, 196, &[], &proof),
            Err(ProofError::ChunkIndex {
                index: 196,
                count: 196
            })
        );
        assert!(matches!(
            verify(root, 200_000, 195, &[0; 1024], &proof),
            Err(ProofError::ChunkLength { .. })
        ));
    }

    #[test]
    fn a_prover_without_the_right_block_is_refused() {
        let data = patterned(200_000);
        let hashes = hash_bytes(&data);
        assert_eq!(
            prove(&hashes, 100, &data[..10]),
            Err(ProofError::WrongBlock { index: 100 })
        );
        assert!(matches!(
            prove(&hashes, 500, &data[..65_536]),
            Err(ProofError::ChunkIndex { .. })
        ));
    }

    proptest! {
        #[test]
        fn any_chunk_of_any_file_proves(len in 0usize..300_000, pick in any::<u64>()) {
            let data = patterned(len);
            let index = pick % chunk_count(len as u64);
            let (hashes, proof) = proof_of(&data, index);
            prop_assert!(proof.len() <= MAX_PROOF_LEN);
            prop_assert_eq!(verify(hashes.root(), len as u64, index, chunk(&data, index), &proof), Ok(()));
        }
    }
}
