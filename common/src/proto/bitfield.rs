//! Which blocks of a file a peer holds, one bit per block.

use serde::{Deserialize, Serialize};

/// A fixed-length set of block indices.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bitfield {
    words: Vec<u64>,
    len: u32,
}

/// A bitfield as it travels: `ceil(len / 8)` bytes, block 0 in the lowest
/// bit of the first byte. The length is not sent: both sides know it from
/// the file's layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireBitfield(pub Vec<u8>);

impl Bitfield {
    pub fn new(len: u32) -> Self {
        Bitfield {
            words: vec![0; (len as usize).div_ceil(64)],
            len,
        }
    }

    pub fn full(len: u32) -> Self {
        let mut bits = Bitfield::new(len);
        for index in 0..len {
            bits.set(index);
        }
        bits
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, index: u32) -> bool {
        index < self.len && self.words[(index / 64) as usize] & (1 << (index % 64)) != 0
    }

    pub fn set(&mut self, index: u32) {
        if index < self.len {
            self.words[(index / 64) as usize] |= 1 << (index % 64);
        }
    }

    pub fn clear(&mut self, index: u32) {
        if index < self.len {
            self.words[(index / 64) as usize] &= !(1 << (index % 64));
        }
    }

    /// Number of set bits.
    pub fn count(&self) -> u32 {
        self.words.iter().map(|word| word.count_ones()).sum()
    }

    pub fn is_full(&self) -> bool {
        self.count() == self.len
    }

    /// Indices of the set bits, in order.
    pub fn ones(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|&index| self.get(index))
    }

    pub fn to_wire(&self) -> WireBitfield {
        let mut bytes = vec![0u8; (self.len as usize).div_ceil(8)];
        for index in self.ones() {
            bytes[(index / 8) as usize] |= 1 << (index % 8);
        }
        WireBitfield(bytes)
    }

    /// Reads a bitfield of `len` bits; `None` if the byte count is wrong or
    /// bits past the end are set (a peer claiming blocks that do not exist).
    pub fn from_wire(wire: &WireBitfield, len: u32) -> Option<Self> {
        if wire.0.len() != (len as usize).div_ceil(8) {
            return None;
        }
        let mut bits = Bitfield::new(len);
        for (byte_index, &byte) in wire.0.iter().enumerate() {
            for bit in 0..8 {
                if byte & (1 << bit) != 0 {
                    let index = byte_index as u32 * 8 + bit;
                    if index >= len {
                        return None;
                    }
                    bits.set(index);
                }
            }
        }
        Some(bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn wire_round_trips(len in 0u32..3000, picks in proptest::collection::vec(any::<u32>(), 0..200)) {
            let mut bits = Bitfield::new(len);
            for pick in picks {
                if len > 0 {
                    bits.set(pick % len);
                }
            }
            let back = Bitfield::from_wire(&bits.to_wire(), len).unwrap();
            prop_assert_eq!(&back, &bits);
            prop_assert_eq!(back.count() as usize, bits.ones().count());
        }
    }

    #[test]
    fn claims_past_the_end_are_refused() {
        assert!(Bitfield::from_wire(&WireBitfield(vec![0b1000_0000]), 7).is_none());
        assert!(Bitfield::from_wire(&WireBitfield(vec![0b0100_0000]), 7).is_some());
        assert!(Bitfield::from_wire(&WireBitfield(vec![0, 0]), 7).is_none());
    }

    #[test]
    fn full_and_count() {
        let mut bits = Bitfield::full(130);
        assert!(bits.is_full());
        bits.clear(64);
        assert_eq!(bits.count(), 129);
        assert!(!bits.get(64) && bits.get(65) && !bits.get(500));
    }
}
