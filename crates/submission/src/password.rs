//! Password hashing and verification: argon2id with the crate's default
//! parameters (RFC 9106 §4's second recommendation: m = 19 MiB, t = 2,
//! p = 1), PHC strings.
//!
//! The server verifies into [`HashMemory`] it keeps and reuses: argon2's 19
//! MiB working memory is allocated once per hashing slot instead of once
//! per attempt. Freed per attempt, the blocks stay resident in the
//! allocator's per-thread arenas (glibc keeps up to twice its dynamic mmap
//! threshold per arena before trimming): measured here, 500 attempts with
//! two checks at a time left 700 MiB resident.

use argon2::password_hash::{Output, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// Hashes `password` with argon2id (default parameters, random 16-byte
/// salt) into a PHC string; an error says why argon2 refused.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt).map_err(|e| format!("salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("argon2: {e}"))
}

/// True when `password` matches the PHC string `phc` (any argon2 variant
/// the string names; a malformed string never matches).
pub fn verify_password(phc: &str, password: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok(),
        Err(_) => false,
    }
}

/// Working memory for argon2 checks, reused from one check to the next
/// (see the module doc). Empty until the first check; then as large as the
/// default parameters need (19 MiB). A hash with larger parameters is
/// checked in memory of its own, freed afterwards, so this stays at its
/// size.
#[derive(Default)]
pub struct HashMemory {
    blocks: Vec<Block>,
}

impl std::fmt::Debug for HashMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashMemory")
            .field("blocks", &self.blocks.len())
            .finish()
    }
}

impl HashMemory {
    /// Empty memory (allocated at the first check).
    pub fn new() -> HashMemory {
        HashMemory::default()
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.blocks.len() * Block::SIZE
    }
}

/// [`verify_password`] computed in `memory`: true when `password` matches
/// the PHC string `phc` (argon2id, argon2i or argon2d, any version and
/// parameters it names; a malformed string never matches). The comparison
/// of the outputs is constant-time.
pub fn verify_password_in(phc: &str, password: &str, memory: &mut HashMemory) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let (Ok(params), Some(salt), Some(expected)) = (Params::try_from(&hash), hash.salt, hash.hash)
    else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let argon2 = Argon2::new(algorithm, version, params);
    let needed = argon2.params().block_count();
    let default_blocks = Params::DEFAULT.block_count();
    let mut own = Vec::new();
    let blocks = if needed <= default_blocks {
        if memory.blocks.len() < default_blocks {
            memory.blocks = vec![Block::default(); default_blocks];
        }
        &mut memory.blocks[..]
    } else {
        own.resize(needed, Block::default());
        &mut own[..]
    };
    let mut out = vec![0u8; expected.len()];
    if argon2
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, blocks)
        .is_err()
    {
        return false;
    }
    // `Output`'s equality is constant-time.
    Output::new(&out).is_ok_and(|computed| computed == expected)
}

/// True when `phc` parses as an argon2id PHC string.
pub(crate) fn is_argon2id(phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| h.algorithm.as_str() == "argon2id")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(is_argon2id(&h));
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "wrong"));
        assert!(!verify_password("not a hash", "correct horse"));
        assert_ne!(h, hash_password("correct horse").unwrap(), "salted");
    }

    /// Verifying in reused memory gives the same answers as argon2's own
    /// verification, for our hashes and for other variants, versions and
    /// parameters; the memory is allocated once and keeps its size.
    #[test]
    fn verify_in_reused_memory_agrees_with_argon2() {
        use argon2::password_hash::PasswordHasher;
        let mut memory = HashMemory::new();
        assert_eq!(memory.bytes(), 0);
        let ours = hash_password("correct horse").unwrap();
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let small = Params::new(64, 3, 2, Some(24)).unwrap();
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x10, small.clone())
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        let big = Params::new(Params::DEFAULT_M_COST * 2, 1, 1, None).unwrap();
        let bigger = Argon2::new(Algorithm::Argon2id, Version::V0x13, big)
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        let cases = [
            (ours.as_str(), "correct horse", true),
            (ours.as_str(), "correct horsf", false),
            (argon2i.as_str(), "pw", true),
            (argon2i.as_str(), "px", false),
            (bigger.as_str(), "pw", true),
            (bigger.as_str(), "", false),
            ("not a hash", "pw", false),
            ("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ", "pw", false),
            ("$scrypt$ln=1,r=8,p=1$c2FsdHNhbHQ$aGFzaA", "pw", false),
        ];
        for (phc, password, want) in cases {
            assert_eq!(
                verify_password_in(phc, password, &mut memory),
                want,
                "{phc} {password:?}"
            );
            assert_eq!(verify_password(phc, password), want, "{phc} {password:?}");
        }
        assert_eq!(
            memory.bytes(),
            19 * 1024 * 1024,
            "allocated once, default size"
        );
    }
}
