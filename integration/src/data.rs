//! Deterministic test content.

/// `len` bytes from a fast xorshift generator seeded by `seed`.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Content whose every 512-byte block is distinct and recognisable:
/// block `i` repeats `"<tag>-BLOCK-<i>-"`. Lets a test find one block's bytes
/// inside a datanode's file.
pub fn tagged_blocks(tag: &str, blocks: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks * 512);
    for i in 0..blocks {
        let unit = format!("{tag}-BLOCK-{i:08}-");
        let mut b = unit.repeat(512 / unit.len() + 1).into_bytes();
        b.truncate(512);
        out.extend_from_slice(&b);
    }
    out
}

/// Flips a byte inside every copy of `needle` in the file at `path`;
/// returns how many copies were damaged.
pub fn corrupt_in_file(path: &std::path::Path, needle: &[u8]) -> std::io::Result<usize> {
    let mut file = std::fs::read(path)?;
    let mut hits = 0;
    let mut at = 0;
    while let Some(p) = file[at..].windows(needle.len()).position(|w| w == needle) {
        let pos = at + p;
        file[pos + needle.len() / 2] ^= 0xff;
        hits += 1;
        at = pos + needle.len();
    }
    std::fs::write(path, file)?;
    Ok(hits)
}
