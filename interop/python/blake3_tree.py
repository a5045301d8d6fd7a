"""BLAKE3 in hash mode, written from the BLAKE3 specification as
docs/PROTOCOL.md section 7.3 summarises it, with what Canopy needs and the
usual bindings lack: the chaining value of a subtree that does not start at
chunk 0 (a block's CV), and merging CVs as parent nodes (verifying a block
layer). Pure Python, no dependencies; about 1 MB/s, plenty for an example.
"""

import struct

IV = (0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
      0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19)
PERM = (2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8)

CHUNK_START = 1
CHUNK_END = 2
PARENT = 4
ROOT = 8

CHUNK_LEN = 1024
BLOCK_LEN = 64
M32 = 0xFFFFFFFF

# The message word order of each of the 7 rounds: round r uses
# m[SCHEDULE[r][i]] where the spec permutes m between rounds.
SCHEDULE = []
_order = list(range(16))
for _ in range(7):
    SCHEDULE.append(tuple(_order))
    _order = [_order[p] for p in PERM]
del _order


def compress(cv, block, counter, block_len, flags):
    """The compression function; returns all 16 output words (the first 8
    are the next chaining value). `cv` is 8 words, `block` 64 bytes."""
    m = struct.unpack("<16I", block)
    v = [cv[0], cv[1], cv[2], cv[3], cv[4], cv[5], cv[6], cv[7],
         IV[0], IV[1], IV[2], IV[3],
         counter & M32, (counter >> 32) & M32, block_len, flags]

    def g(a, b, c, d, x, y):
        va = (v[a] + v[b] + x) & M32
        vd = v[d] ^ va
        vd = ((vd >> 16) | (vd << 16)) & M32
        vc = (v[c] + vd) & M32
        vb = v[b] ^ vc
        vb = ((vb >> 12) | (vb << 20)) & M32
        va = (va + vb + y) & M32
        vd = vd ^ va
        vd = ((vd >> 8) | (vd << 24)) & M32
        vc = (vc + vd) & M32
        vb = vb ^ vc
        vb = ((vb >> 7) | (vb << 25)) & M32
        v[a], v[b], v[c], v[d] = va, vb, vc, vd

    for s in SCHEDULE:
        g(0, 4, 8, 12, m[s[0]], m[s[1]])
        g(1, 5, 9, 13, m[s[2]], m[s[3]])
        g(2, 6, 10, 14, m[s[4]], m[s[5]])
        g(3, 7, 11, 15, m[s[6]], m[s[7]])
        g(0, 5, 10, 15, m[s[8]], m[s[9]])
        g(1, 6, 11, 12, m[s[10]], m[s[11]])
        g(2, 7, 8, 13, m[s[12]], m[s[13]])
        g(3, 4, 9, 14, m[s[14]], m[s[15]])
    return [v[i] ^ v[i + 8] for i in range(8)] + [v[i + 8] ^ cv[i] for i in range(8)]


def words_to_bytes(words):
    return struct.pack("<%dI" % len(words), *words)


def bytes_to_words(data):
    return list(struct.unpack("<8I", data))


def chunk_cv(data, counter, root=False, steps=None):
    """Chaining value of one chunk (at most 1,024 bytes) with its chunk
    counter, as 32 bytes. `root` adds ROOT to the last compression (a file
    of one chunk). `steps`, if a list, gets (flags, cv) after each block."""
    assert len(data) <= CHUNK_LEN
    blocks = [data[i:i + BLOCK_LEN] for i in range(0, len(data), BLOCK_LEN)] or [b""]
    cv = list(IV)
    for i, block in enumerate(blocks):
        flags = 0
        if i == 0:
            flags |= CHUNK_START
        if i == len(blocks) - 1:
            flags |= CHUNK_END
            if root:
                flags |= ROOT
        cv = compress(cv, block.ljust(BLOCK_LEN, b"\0"), counter, len(block), flags)[:8]
        if steps is not None:
            steps.append((flags, words_to_bytes(cv)))
    return words_to_bytes(cv)


def parent_cv(left, right, root=False):
    """A parent node's chaining value from its children's (32 bytes each)."""
    flags = PARENT | (ROOT if root else 0)
    return words_to_bytes(compress(list(IV), left + right, 0, BLOCK_LEN, flags)[:8])


def left_len(n):
    """Nodes in the left subtree of a tree over n >= 2 nodes: the largest
    power of two smaller than n."""
    p = 1
    while p * 2 < n:
        p *= 2
    return p


def merge(cvs, root):
    """Merges the chaining values of n >= 1 adjacent aligned subtrees with
    BLAKE3's tree rule; the top node gets ROOT if `root` (n >= 2)."""
    if len(cvs) == 1:
        assert not root, "a single node cannot be re-rooted from its CV"
        return cvs[0]
    k = left_len(len(cvs))
    return parent_cv(merge(cvs[:k], False), merge(cvs[k:], False), root)


def subtree_cv(data, first_chunk, root=False, nodes=None):
    """Chaining value of `data` taken as the subtree of chunks starting at
    chunk counter `first_chunk` (a Canopy block: a power of two of whole
    chunks at an aligned index, or the shorter last block). `root=True`
    gives the BLAKE3 hash of a whole file (first_chunk must be 0).
    `nodes`, if a dict, gets (first, last) -> CV for every node."""
    chunks = max(1, (len(data) + CHUNK_LEN - 1) // CHUNK_LEN)

    def rec(lo, count, is_root):
        if count == 1:
            cv = chunk_cv(data[lo * CHUNK_LEN:(lo + 1) * CHUNK_LEN], first_chunk + lo, is_root)
        else:
            k = left_len(count)
            cv = parent_cv(rec(lo, k, False), rec(lo + k, count - k, False), is_root)
        if nodes is not None:
            nodes[(first_chunk + lo, first_chunk + lo + count - 1)] = cv
        return cv

    return rec(0, chunks, root)


def blake3(data):
    """The ordinary BLAKE3 hash (32 bytes) - what b3sum prints."""
    return subtree_cv(data, 0, root=True)
