//! Arbitrary splits of the input, shared by the targets: the first octet
//! seeds the chunk sizes, the rest is the input.

/// Splits `data` into (seed, chunks of 1..=32 octets chosen by the seed).
pub fn chunks(data: &[u8]) -> Vec<&[u8]> {
    let Some((&seed, mut rest)) = data.split_first() else {
        return Vec::new();
    };
    let mut state = u32::from(seed) | 0x100;
    let mut out = Vec::new();
    while !rest.is_empty() {
        // xorshift32: cheap, deterministic, any seed but zero.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state % 32 + 1) as usize;
        let (head, tail) = rest.split_at(n.min(rest.len()));
        out.push(head);
        rest = tail;
    }
    out
}
