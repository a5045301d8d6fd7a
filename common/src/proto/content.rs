//! Content identity and verified blocks.
//!
//! A file's id is its BLAKE3 hash, exactly what `b3sum` prints. To fetch a
//! file from many untrusted sources we need to check each piece as it
//! arrives, not only the whole file at the end. BLAKE3 is itself a Merkle
//! tree over 1 KiB chunks, so we cut the file into **blocks** of 2^k chunks:
//! each block is a complete subtree, its chaining value (CV) is one interior
//! node, and merging all block CVs with BLAKE3's own left-balanced rule
//! gives back the root hash.
//!
//! The list of block CVs (the "block layer", as BitTorrent v2 calls its piece
//! layer) is fetched once from any source and checked against the root;
//! afterwards every block from every source is verified on its own by
//! hashing it as a subtree and comparing with its CV. The layer is at most
//! [`MAX_BLOCKS`] × 32 bytes = 512 KiB (0.05 % of a 1 GiB file), and a file
//! of one block needs none: the block is checked against the root directly.

use std::ops::Range;

use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode};

use super::id::ContentHash;

/// The smallest block: 64 KiB (64 BLAKE3 chunks).
pub const MIN_BLOCK_SIZE: u64 = 64 * 1024;
/// Block sizes double until a file has at most this many blocks, which bounds
/// the block layer any peer may send us to 512 KiB.
pub const MAX_BLOCKS: u64 = 16 * 1024;
/// Bytes per block CV in the block layer.
pub const CV_LEN: usize = 32;

/// Why received content was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("block layer has {got} bytes, expected {expected} for a file of {size} bytes")]
    LayerLength { size: u64, expected: usize, got: usize },
    #[error("block layer does not hash to the content hash")]
    LayerMismatch,
    #[error("block {index} is out of range (the file has {count} blocks)")]
    BlockIndex { index: u32, count: u32 },
    #[error("block {index} has {got} bytes, expected {expected}")]
    BlockLength { index: u32, expected: u64, got: u64 },
    #[error("block {index} failed verification: its bytes do not match the content hash")]
    BlockMismatch { index: u32 },
    #[error("file size changed while hashing: expected {expected} bytes, read {got}")]
    SizeChanged { expected: u64, got: u64 },
}

/// How a file of a given size is cut into blocks. Both ends derive it from
/// the size alone, so it never travels on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockLayout {
    size: u64,
    block_size: u64,
}

impl BlockLayout {
    pub fn for_size(size: u64) -> Self {
        let mut block_size = MIN_BLOCK_SIZE;
        while size.div_ceil(block_size) > MAX_BLOCKS {
            block_size *= 2;
        }
        BlockLayout { size, block_size }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// Number of blocks; an empty file has one empty block so that every file
    /// is fetched and verified the same way.
    pub fn block_count(&self) -> u32 {
        self.size.div_ceil(self.block_size).max(1) as u32
    }

    /// Whether the file is a single block, verified against the root itself.
    pub fn is_single_block(&self) -> bool {
        self.block_count() == 1
    }

    /// Byte range of block `index` within the file.
    pub fn block_range(&self, index: u32) -> Range<u64> {
        let start = u64::from(index) * self.block_size;
        let end = (start + self.block_size).min(self.size);
        start.min(self.size)..end
    }

    pub fn block_len(&self, index: u32) -> u64 {
        let range = self.block_range(index);
        range.end - range.start
    }

    /// Byte range covering blocks `first..first + count`.
    pub fn blocks_range(&self, first: u32, count: u32) -> Range<u64> {
        let start = self.block_range(first).start;
        let end = self.block_range(first + count.max(1) - 1).end;
        start..end
    }

    /// Size in bytes of the block layer for this file.
    pub fn layer_len(&self) -> usize {
        if self.is_single_block() {
            0
        } else {
            self.block_count() as usize * CV_LEN
        }
    }

    fn check_index(&self, index: u32) -> Result<(), ContentError> {
        if index >= self.block_count() {
            return Err(ContentError::BlockIndex {
                index,
                count: self.block_count(),
            });
        }
        Ok(())
    }
}

/// Chaining value of block `index`: the BLAKE3 subtree hash of its bytes at
/// its offset in the file.
fn block_cv(layout: &BlockLayout, index: u32, data: &[u8]) -> ChainingValue {
    blake3::Hasher::new()
        .set_input_offset(layout.block_range(index).start)
        .update(data)
        .finalize_non_root()
}

/// Merges block CVs into the root with BLAKE3's left-balanced rule: the left
/// subtree always holds the largest power of two of blocks that leaves at
/// least one for the right. Needs two or more CVs.
fn root_of(cvs: &[ChainingValue]) -> ContentHash {
    fn subtree(cvs: &[ChainingValue]) -> ChainingValue {
        if cvs.len() == 1 {
            return cvs[0];
        }
        let (left, right) = cvs.split_at(left_len(cvs.len()));
        merge_subtrees_non_root(&subtree(left), &subtree(right), Mode::Hash)
    }
    let (left, right) = cvs.split_at(left_len(cvs.len()));
    merge_subtrees_root(&subtree(left), &subtree(right), Mode::Hash).into()
}

fn left_len(count: usize) -> usize {
    debug_assert!(count >= 2);
    1 << (usize::BITS - 1 - (count - 1).leading_zeros())
}

/// The verified block layer of one file: what a downloader checks every
/// block against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockHashes {
    root: ContentHash,
    layout: BlockLayout,
    cvs: Vec<ChainingValue>,
}

impl BlockHashes {
    /// Checks a block layer received from a peer against the content hash.
    ///
    /// `size` comes from the same untrusted peer. A wrong size that changes
    /// the block count fails here; one that only moves the end of the last
    /// block passes, but then no bytes of that length match the last CV. A
    /// downloader therefore fetches and verifies the last block before it
    /// trusts the size (for preallocation, progress or a final rename).
    pub fn verify(root: ContentHash, size: u64, layer: &[u8]) -> Result<Self, ContentError> {
        let layout = BlockLayout::for_size(size);
        if layer.len() != layout.layer_len() {
            return Err(ContentError::LayerLength {
                size,
                expected: layout.layer_len(),
                got: layer.len(),
            });
        }
        let cvs: Vec<ChainingValue> = layer
            .chunks_exact(CV_LEN)
            .map(|cv| cv.try_into().expect("chunks_exact yields CV_LEN bytes"))
            .collect();
        if !layout.is_single_block() && root_of(&cvs) != root {
            return Err(ContentError::LayerMismatch);
        }
        Ok(BlockHashes { root, layout, cvs })
    }

    pub fn root(&self) -> ContentHash {
        self.root
    }

    pub fn layout(&self) -> BlockLayout {
        self.layout
    }

    /// The block layer as sent on the wire: the CVs back to back.
    pub fn layer_bytes(&self) -> Vec<u8> {
        self.cvs.concat()
    }

    /// Verifies the bytes of block `index`. Only bytes that pass may be
    /// written anywhere a user could see them.
    pub fn verify_block(&self, index: u32, data: &[u8]) -> Result<(), ContentError> {
        self.layout.check_index(index)?;
        let expected = self.layout.block_len(index);
        if data.len() as u64 != expected {
            return Err(ContentError::BlockLength {
                index,
                expected,
                got: data.len() as u64,
            });
        }
        let matches = if self.layout.is_single_block() {
            ContentHash::of(data) == self.root
        } else {
            block_cv(&self.layout, index, data) == self.cvs[index as usize]
        };
        if matches {
            Ok(())
        } else {
            Err(ContentError::BlockMismatch { index })
        }
    }
}

/// Hashes a file of known size as its bytes stream in, producing the content
/// hash and the block layer together in one pass.
pub struct FileHasher {
    layout: BlockLayout,
    block: blake3::Hasher,
    block_filled: u64,
    cvs: Vec<ChainingValue>,
    seen: u64,
}

impl FileHasher {
    pub fn new(size: u64) -> Self {
        FileHasher {
            layout: BlockLayout::for_size(size),
            block: blake3::Hasher::new(),
            block_filled: 0,
            cvs: Vec::new(),
            seen: 0,
        }
    }

    pub fn layout(&self) -> BlockLayout {
        self.layout
    }

    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = (self.layout.block_size - self.block_filled) as usize;
            let take = room.min(data.len());
            self.block.update(&data[..take]);
            self.block_filled += take as u64;
            self.seen += take as u64;
            data = &data[take..];
            if self.block_filled == self.layout.block_size && self.seen < self.layout.size {
                // A full block that is not the file's last: close its subtree.
                self.cvs.push(self.block.finalize_non_root());
                self.block = blake3::Hasher::new();
                self.block.set_input_offset(self.seen);
                self.block_filled = 0;
            }
        }
    }

    pub fn finish(mut self) -> Result<BlockHashes, ContentError> {
        if self.seen != self.layout.size {
            return Err(ContentError::SizeChanged {
                expected: self.layout.size,
                got: self.seen,
            });
        }
        let root = if self.layout.is_single_block() {
            self.cvs.clear();
            ContentHash::from(self.block.finalize())
        } else {
            self.cvs.push(self.block.finalize_non_root());
            root_of(&self.cvs)
        };
        Ok(BlockHashes {
            root,
            layout: self.layout,
            cvs: self.cvs,
        })
    }
}

/// Hashes an in-memory buffer; handy for tests and small files.
pub fn hash_bytes(data: &[u8]) -> BlockHashes {
    let mut hasher = FileHasher::new(data.len() as u64);
    hasher.update(data);
    hasher.finish().expect("size matches the buffer")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn patterned(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    const K: usize = MIN_BLOCK_SIZE as usize;
    const SIZES: &[usize] = &[
        0,
        1,
        1023,
        1024,
        1025,
        K - 1,
        K,
        K + 1,
        2 * K,
        3 * K + 5,
        5 * K,
        8 * K + 1024,
        17 * K - 3,
    ];

    #[test]
    fn root_equals_plain_blake3_at_boundaries() {
        for &len in SIZES {
            let data = patterned(len);
            assert_eq!(hash_bytes(&data).root(), ContentHash::of(&data), "size {len}");
        }
    }

    /// Reference values printed by `b3sum --no-names` (b3sum 1.2.0) for the
    /// same patterned files, so "the hash b3sum gives" is checked without
    /// needing b3sum at test time.
    #[test]
    fn root_matches_b3sum_known_answers() {
        let known = [
            (
                0,
                "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
            ),
            (
                1,
                "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213",
            ),
            (
                65535,
                "a6cdc308e50dbe335704b9f105129b4acb31cdc241d2bda4a8824c8505949ab1",
            ),
            (
                65536,
                "41f346d59742824f0994ddec8e9ef409b79edc89383484265b3c0328c07b1ba2",
            ),
            (
                65537,
                "7f5854cbbe70aec683ccf770058d23ce2a7e47b434b486ef1204e2d2ec00a976",
            ),
            (
                196613,
                "4b98cb2e8781d9a810b2e58ac304928cb3089abdf487614b4e195c18f77874fd",
            ),
            (
                3145745,
                "d6a005d47e089167ba8b44a0767ec9d1ee4de8ccceeebe81dc8a3b7ee0fae241",
            ),
        ];
        for (len, b3sum) in known {
            assert_eq!(hash_bytes(&patterned(len)).root().to_hex(), b3sum, "size {len}");
        }
    }

    #[test]
    fn every_block_verifies_and_one_flipped_byte_is_caught() {
        for &len in SIZES {
            let data = patterned(len);
            let hashes = hash_bytes(&data);
            let received = BlockHashes::verify(hashes.root(), len as u64, &hashes.layer_bytes())
                .expect("honest layer verifies");
            let layout = received.layout();
            for index in 0..layout.block_count() {
                let range = layout.block_range(index);
                let block = &data[range.start as usize..range.end as usize];
                received.verify_block(index, block).unwrap();
                if !block.is_empty() {
                    let mut bad = block.to_vec();
                    bad[block.len() / 2] ^= 1;
                    assert_eq!(
                        received.verify_block(index, &bad),
                        Err(ContentError::BlockMismatch { index })
                    );
                }
            }
        }
    }

    #[test]
    fn forged_layer_or_size_is_rejected() {
        let data = patterned(5 * K + 7);
        let hashes = hash_bytes(&data);
        let mut layer = hashes.layer_bytes();
        layer[40] ^= 0x80;
        assert_eq!(
            BlockHashes::verify(hashes.root(), data.len() as u64, &layer),
            Err(ContentError::LayerMismatch)
        );
        // Same block count, different claimed size: the layer alone cannot
        // tell, but no bytes of the claimed length match the last block's CV.
        let honest = hashes.layer_bytes();
        let lying = BlockHashes::verify(hashes.root(), data.len() as u64 + 1, &honest).unwrap();
        let last = lying.layout().block_count() - 1;
        let range = lying.layout().block_range(last);
        let mut padded = data[range.start as usize..].to_vec();
        padded.push(0);
        assert_eq!(
            lying.verify_block(last, &padded),
            Err(ContentError::BlockMismatch { index: last })
        );
        // A different block count changes the expected layer length.
        assert!(matches!(
            BlockHashes::verify(hashes.root(), 9 * K as u64, &honest),
            Err(ContentError::LayerLength { .. })
        ));
    }

    #[test]
    fn blocks_are_checked_for_length_and_index() {
        let data = patterned(2 * K + 1);
        let hashes = hash_bytes(&data);
        assert!(matches!(
            hashes.verify_block(3, &[]),
            Err(ContentError::BlockIndex { index: 3, count: 3 })
        ));
        assert!(matches!(
            hashes.verify_block(2, &[0, 0]),
            Err(ContentError::BlockLength { .. })
        ));
    }

    #[test]
    fn layout_bounds_the_layer() {
        let gib = 1u64 << 30;
        assert_eq!(BlockLayout::for_size(gib).block_size(), MIN_BLOCK_SIZE);
        assert_eq!(BlockLayout::for_size(gib).block_count(), 16384);
        assert_eq!(BlockLayout::for_size(gib + 1).block_size(), 2 * MIN_BLOCK_SIZE);
        let huge = BlockLayout::for_size(u64::MAX / 2);
        assert!(u64::from(huge.block_count()) <= MAX_BLOCKS);
        assert!(huge.layer_len() <= MAX_BLOCKS as usize * CV_LEN);
        assert_eq!(BlockLayout::for_size(0).block_count(), 1);
        assert_eq!(BlockLayout::for_size(0).block_range(0), 0..0);
    }

    #[test]
    fn size_change_while_hashing_is_reported() {
        let mut hasher = FileHasher::new(10);
        hasher.update(b"12345");
        assert_eq!(
            hasher.finish(),
            Err(ContentError::SizeChanged { expected: 10, got: 5 })
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn streamed_hash_equals_blake3(len in 0usize..600_000, split in 1usize..70_000) {
            let data = patterned(len);
            let mut hasher = FileHasher::new(len as u64);
            for piece in data.chunks(split) {
                hasher.update(piece);
            }
            let hashes = hasher.finish().unwrap();
            prop_assert_eq!(hashes.root(), ContentHash::of(&data));
            prop_assert!(BlockHashes::verify(hashes.root(), len as u64, &hashes.layer_bytes()).is_ok());
        }
    }
}
