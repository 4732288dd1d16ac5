//! An independent SCRAM-SHA-256 client (RFC 5802, RFC 7677) for end-to-end
//! tests of SMTP `AUTH SCRAM-SHA-256`. Written from the RFC with `ring`, not
//! on top of the server's `portcullis_submission::scram`, so a shared
//! misreading of the RFC cannot make both sides agree.
//!
//! Messages are the decoded SASL text; the SMTP layer base64-encodes them.
//! No channel binding (`n,,`), no authzid. Passwords are used as given,
//! without SASLprep (RFC 4013): that is the same for ASCII passwords, which
//! is all the tests need.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::rand::SecureRandom as _;
use ring::{digest, hmac, pbkdf2};
use std::num::NonZeroU32;

/// The gs2 header of every exchange: no channel binding, no authzid.
const GS2_HEADER: &str = "n,,";

/// The client side of one SCRAM-SHA-256 exchange.
pub struct ScramClient {
    password: String,
    nonce: String,
    /// client-first-message-bare.
    first_bare: String,
    /// The ServerSignature we expect, once `client_final` has run.
    expected_server_signature: Option<[u8; 32]>,
}

impl ScramClient {
    /// A client with a random nonce (24 random bytes, base64). ASCII
    /// passwords only: no SASLprep is applied. Panics if the system random
    /// source fails.
    pub fn new(username: &str, password: &str) -> ScramClient {
        let mut random = [0u8; 24];
        ring::rand::SystemRandom::new()
            .fill(&mut random)
            .expect("system random source");
        Self::with_nonce(username, password, &B64.encode(random))
    }

    /// A client with the given nonce (RFC 5802 `printable`: no `,`, not
    /// checked), for test vectors and for sending a deliberately bad one.
    pub fn with_nonce(username: &str, password: &str, nonce: &str) -> ScramClient {
        let username = username.replace('=', "=3D").replace(',', "=2C");
        ScramClient {
            password: password.to_string(),
            nonce: nonce.to_string(),
            first_bare: format!("n={username},r={nonce}"),
            expected_server_signature: None,
        }
    }

    /// The client-first-message `n,,n=<user>,r=<nonce>`, with `,` and `=`
    /// in the username escaped as `=2C` and `=3D`.
    pub fn client_first(&self) -> String {
        format!("{GS2_HEADER}{}", self.first_bare)
    }

    /// Reads the server-first-message `r=<nonce>,s=<salt>,i=<iterations>`,
    /// checks that the server nonce extends ours, and returns the
    /// client-final-message `c=biws,r=<nonce>,p=<proof>`. Errors say what
    /// was wrong with the server's message.
    pub fn client_final(&mut self, server_first: &str) -> Result<String, String> {
        let mut attrs = server_first.split(',');
        let mut attr = |name: &str| {
            let part = attrs.next().unwrap_or_default();
            part.strip_prefix(name)
                .map(str::to_string)
                .ok_or_else(|| format!("server-first {server_first:?}: expected {name}"))
        };
        let nonce = attr("r=")?;
        let salt = attr("s=")?;
        let iterations = attr("i=")?;
        if nonce.len() <= self.nonce.len() || !nonce.starts_with(&self.nonce) {
            return Err(format!(
                "server nonce {nonce:?} does not extend ours {:?}",
                self.nonce
            ));
        }
        let salt = B64
            .decode(&salt)
            .map_err(|e| format!("salt {salt:?} is not base64: {e}"))?;
        let iterations = iterations
            .parse::<u32>()
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(|| format!("bad iteration count {iterations:?}"))?;

        let mut salted_password = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            &salt,
            self.password.as_bytes(),
            &mut salted_password,
        );
        let client_key = hmac_sha256(&salted_password, b"Client Key");
        let stored_key = digest::digest(&digest::SHA256, &client_key);
        let server_key = hmac_sha256(&salted_password, b"Server Key");

        let without_proof = format!("c={},r={nonce}", B64.encode(GS2_HEADER));
        let auth_message = format!("{},{server_first},{without_proof}", self.first_bare);
        let client_signature = hmac_sha256(stored_key.as_ref(), auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(client_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        self.expected_server_signature = Some(hmac_sha256(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server-final-message `v=<ServerSignature>` against the one
    /// computed in [`ScramClient::client_final`]; `e=<error>` and anything
    /// else are errors, as is calling this before `client_final`.
    pub fn verify_server_final(&self, server_final: &str) -> Result<(), String> {
        let expected = self
            .expected_server_signature
            .ok_or_else(|| "verify_server_final before client_final".to_string())?;
        if let Some(error) = server_final.strip_prefix("e=") {
            return Err(format!("server error: {error}"));
        }
        let signature = server_final
            .strip_prefix("v=")
            .ok_or_else(|| format!("server-final {server_final:?}: expected v="))?;
        let signature = B64
            .decode(signature)
            .map_err(|e| format!("v= {signature:?} is not base64: {e}"))?;
        if signature != expected {
            return Err("server signature does not verify".to_string());
        }
        Ok(())
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677 §3.
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";

    #[test]
    fn scram_client_rfc7677_example() {
        let mut client = ScramClient::with_nonce("user", "pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(client.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        assert!(
            client
                .verify_server_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
                .is_err(),
            "before client_final"
        );
        assert_eq!(
            client.client_final(SERVER_FIRST).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        client
            .verify_server_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert!(
            client
                .verify_server_final("v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
                .is_err()
        );
        assert!(client.verify_server_final("e=invalid-proof").is_err());
    }

    #[test]
    fn scram_client_checks_server_first() {
        let mut client = ScramClient::with_nonce("user", "pencil", "rOprNGfwEbeRWgbNEkqO");
        for bad in [
            "",
            "r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "r=XOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "r=rOprNGfwEbeRWgbNEkqOabc,s=***,i=4096",
            "r=rOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",
            "r=rOprNGfwEbeRWgbNEkqOabc,i=4096,s=W22ZaJ0SNY7soEsUEjb6gQ==",
            "m=x,r=rOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        ] {
            assert!(client.client_final(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scram_client_escapes_username() {
        let client = ScramClient::with_nonce("a,b=c", "pw", "xyz");
        assert_eq!(client.client_first(), "n,,n=a=2Cb=3Dc,r=xyz");
        let random = ScramClient::new("u", "pw").client_first();
        assert!(random.starts_with("n,,n=u,r="), "{random}");
        assert!(random.len() > "n,,n=u,r=".len() + 24, "{random}");
    }
}
