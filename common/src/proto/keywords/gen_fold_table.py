#!/usr/bin/env python3
# Regenerates fold_table.rs (next to this script) from tantivy's ASCII
# folding filter, so keyword routing folds exactly as the index does:
#   python3 common/src/proto/keywords/gen_fold_table.py
# Reads tantivy 0.27 from the cargo registry; change the glob on upgrade.
import os, re, glob
src=open(glob.glob('/root/.cargo/registry/src/*/tantivy-0.27.0/src/tokenizer/ascii_folding_filter.rs')[0]).read()
body=src[src.index('fn fold_non_ascii_char'):src.index('fn to_ascii(')]
pending=[];table={}
for line in body.splitlines():
    for m in re.finditer(r"'\\u\{([0-9A-Fa-f]+)\}'",line.split('//')[0]):
        pending.append(int(m.group(1),16))
    m=re.search(r'=> Some\("((?:[^"\\]|\\.)*)"\)',line)
    if m:
        out=m.group(1)
        for c in pending:
            assert c not in table; table[c]=out
        pending=[]
assert not pending
items=sorted(table.items())
print(len(items), 'entries')
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)),'fold_table.rs'),'w') as f:
    f.write('''//! The ASCII folding table of the supernode's index, as data.
//!
//! GENERATED from tantivy 0.27 `src/tokenizer/ascii_folding_filter.rs`
//! (`fold_non_ascii_char`, itself Lucene's `ASCIIFoldingFilter`) by
//! `gen_fold_table.py` next to this file; do not edit by hand. It must stay equal
//! to the index's table, or a keyword routing table could miss a file the
//! index would find; `supernode`'s `keyword_normalisation_matches_the_index`
//! test (next session) compares the two on every entry.

/// `(character, folded text)`, sorted by character for binary search.
pub(crate) const FOLDS: &[(char, &str)] = &[
''')
    for c,o in items:
        f.write("    ('\\u{%04X}', \"%s\"),\n"%(c,o))
    f.write('];\n')
