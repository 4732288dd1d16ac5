//! SCRAM-SHA-256 (RFC 5802, RFC 7677) for SMTP AUTH, server side, sans-IO.
//!
//! The SMTP layer base64-decodes each SASL message and hands the text to
//! [`client_first`] and then [`ScramServer::client_final`]; what they return
//! is base64-encoded back into `334` / `235` replies. Nothing here reads or
//! writes a socket.
//!
//! Threat model: the stored credential ([`ScramSecret`]) is never the
//! password, and it is salted and stretched with PBKDF2 so a leaked users
//! file costs an attacker as much per guess as the iteration count says. An
//! unknown user gets a deterministic fake secret ([`ScramSecret::fake`]) so
//! the exchange looks the same and fails only at the proof: no user
//! enumeration. The proof is compared in constant time. Every message is
//! bounded ([`MAX_MESSAGE_LEN`]) and parsed strictly in the RFC 5802 §7
//! attribute order; parsing never panics. Channel binding
//! (SCRAM-SHA-256-PLUS) is not offered.
//!
//! Usernames and passwords go through SASLprep (RFC 4013, the `stringprep`
//! crate), as RFC 5802 §2.2 and §5.1 ask.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::{digest, hmac, pbkdf2};
use std::fmt;
use std::num::NonZeroU32;
use subtle::ConstantTimeEq as _;

/// Default PBKDF2 iteration count for new secrets. RFC 7677 §4 asks for at
/// least 4096; we use more so the stored secret is not the weak point next
/// to the argon2id hash of the same password.
pub const DEFAULT_ITERATIONS: u32 = 100_000;

/// The smallest iteration count accepted when deriving or parsing a secret
/// (RFC 7677 §4).
pub const MIN_ITERATIONS: u32 = 4096;

/// The longest client message, in bytes, that is parsed at all; longer
/// messages are [`ScramError::Malformed`]. Keeps the exchange cheap.
pub const MAX_MESSAGE_LEN: usize = 4096;

/// The prefix of the [`fmt::Display`] form of a [`ScramSecret`].
const SCHEME: &str = "SCRAM-SHA-256";

/// Length of the random salt of [`ScramSecret::derive`] and of the fake salt.
const SALT_LEN: usize = 16;

/// Random bytes in the server part of the nonce (base64-encoded on the wire).
const SERVER_NONCE_BYTES: usize = 24;

/// The stored SCRAM-SHA-256 credential (RFC 5802 §3): iteration count, salt,
/// `StoredKey` and `ServerKey`. Never the password, and the password cannot
/// be recovered from it without guessing.
///
/// Its [`fmt::Display`] form,
/// `SCRAM-SHA-256$<iterations>$<salt b64>$<StoredKey b64>$<ServerKey b64>`
/// (standard base64 with padding), contains no `:` and no whitespace, so it
/// can be a field of a colon-separated users file; [`ScramSecret::parse`]
/// reads it back. [`fmt::Debug`] shows the iteration count only.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl ScramSecret {
    /// Derives the secret for `password` with a random 16-byte salt and
    /// `iterations` rounds of PBKDF2-HMAC-SHA256, after SASLprep. Errors
    /// (with the reason) for fewer than [`MIN_ITERATIONS`] iterations, a
    /// password SASLprep refuses, or an empty password.
    pub fn derive(password: &str, iterations: u32) -> Result<ScramSecret, String> {
        let salt: [u8; SALT_LEN] = rand::random();
        Self::derive_with_salt(password, &salt, iterations)
    }

    /// As [`ScramSecret::derive`] with the given salt (which must not be
    /// empty). Deterministic: for tests and test vectors.
    pub fn derive_with_salt(
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Result<ScramSecret, String> {
        if iterations < MIN_ITERATIONS {
            return Err(format!(
                "SCRAM iteration count {iterations} is below the minimum {MIN_ITERATIONS}"
            ));
        }
        let rounds = NonZeroU32::new(iterations)
            .ok_or_else(|| "SCRAM iteration count must not be zero".to_string())?;
        if salt.is_empty() {
            return Err("SCRAM salt must not be empty".to_string());
        }
        // RFC 5802 §2.2: Hi(Normalize(password), salt, i).
        let password = stringprep::saslprep(password)
            .map_err(|e| format!("password refused by SASLprep (RFC 4013): {e}"))?;
        if password.is_empty() {
            return Err("password must not be empty".to_string());
        }
        let mut salted = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            rounds,
            salt,
            password.as_bytes(),
            &mut salted,
        );
        // RFC 5802 §3: ClientKey, StoredKey := H(ClientKey), ServerKey.
        let client_key = hmac_sha256(&salted, &[b"Client Key"]);
        Ok(ScramSecret {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac_sha256(&salted, &[b"Server Key"]),
        })
    }

    /// Parses the [`fmt::Display`] form. Strict: exactly five `$`-separated
    /// fields, the scheme `SCRAM-SHA-256`, a decimal iteration count of at
    /// least [`MIN_ITERATIONS`], a non-empty salt and 32-byte keys in
    /// canonical standard base64. The error says which field is wrong.
    pub fn parse(text: &str) -> Result<ScramSecret, String> {
        let fields: Vec<&str> = text.split('$').collect();
        let [scheme, iterations, salt, stored_key, server_key] = fields[..] else {
            return Err(format!(
                "SCRAM secret must have 5 '$'-separated fields, found {}",
                fields.len()
            ));
        };
        if scheme != SCHEME {
            return Err(format!("SCRAM secret must start with {SCHEME}$"));
        }
        if iterations.is_empty() || !iterations.bytes().all(|b| b.is_ascii_digit()) {
            return Err("SCRAM iteration count is not a decimal number".to_string());
        }
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| "SCRAM iteration count is out of range".to_string())?;
        if iterations < MIN_ITERATIONS {
            return Err(format!(
                "SCRAM iteration count {iterations} is below the minimum {MIN_ITERATIONS}"
            ));
        }
        let salt = B64
            .decode(salt)
            .map_err(|e| format!("SCRAM salt is not base64: {e}"))?;
        if salt.is_empty() {
            return Err("SCRAM salt must not be empty".to_string());
        }
        Ok(ScramSecret {
            iterations,
            salt,
            stored_key: decode_key(stored_key, "StoredKey")?,
            server_key: decode_key(server_key, "ServerKey")?,
        })
    }

    /// A deterministic fake secret for an unknown user: the salt and keys
    /// are HMAC-SHA256 of `username` under `key` (a server-side secret that
    /// should be random per process or per installation), the iteration
    /// count is [`DEFAULT_ITERATIONS`]. The same user always gets the same
    /// salt, different users get different ones, and no password matches
    /// (that would need a SHA-256 preimage), so the exchange looks like a
    /// real one and fails only at the proof: no user enumeration. Use the
    /// same iteration count for real users, or the count gives them away.
    pub fn fake(username: &str, key: &[u8]) -> ScramSecret {
        let mac = |label: &[u8]| hmac_sha256(key, &[label, username.as_bytes()]);
        let salt = mac(b"portcullis scram fake salt\0");
        ScramSecret {
            iterations: DEFAULT_ITERATIONS,
            salt: salt[..SALT_LEN].to_vec(),
            stored_key: mac(b"portcullis scram fake stored key\0"),
            server_key: mac(b"portcullis scram fake server key\0"),
        }
    }

    /// The PBKDF2 iteration count the secret was derived with.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }
}

impl fmt::Display for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}${}${}${}${}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// Why a SCRAM exchange failed. Every variant means authentication failed;
/// they differ only in what to log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// Malformed message (says what), e.g. missing attribute, bad base64,
    /// extensions "m=" (RFC 5802 says reject), bad gs2 header, non-printable
    /// nonce, a message longer than [`MAX_MESSAGE_LEN`].
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client asked for channel binding ("p=..."): we do not offer
    /// SCRAM-SHA-256-PLUS.
    #[error("channel binding not supported")]
    ChannelBinding,
    /// Nonce or channel-binding echo do not match.
    #[error("SCRAM exchange does not match")]
    Mismatch,
    /// Wrong password (proof did not verify).
    #[error("SCRAM proof invalid")]
    BadProof,
}

/// The client-first-message, parsed (RFC 5802 §7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The gs2 header exactly as sent, e.g. `n,,` (echoed in `c=` later).
    gs2_header: String,
    /// Decoded and SASLprep'd.
    username: String,
    /// Decoded `a=` of the gs2 header.
    authzid: Option<String>,
    /// `r=` of the client.
    client_nonce: String,
    /// client-first-message-bare, exactly as sent (part of AuthMessage).
    bare: String,
}

/// Parses a client-first-message (RFC 5802 §7):
/// `gs2-header [m=…,] n=<user>,r=<nonce>[,extensions]`.
///
/// The gs2 channel-binding flag may be `n` or `y` (the client supports
/// channel binding but thinks we do not, which is true); `p=` is
/// [`ScramError::ChannelBinding`]. The reserved `m=` extension is
/// [`ScramError::Malformed`] (RFC 5802 §5.1); other well-formed extensions
/// after the nonce are ignored. The username must be non-empty after
/// decoding `=2C` / `=3D` and SASLprep. Never panics.
pub fn client_first(message: &str) -> Result<ClientFirst, ScramError> {
    use ScramError::Malformed;
    if message.len() > MAX_MESSAGE_LEN {
        return Err(Malformed("message too long"));
    }
    let (flag, rest) = message
        .split_once(',')
        .ok_or(Malformed("missing gs2 header"))?;
    match flag {
        "n" | "y" => {}
        _ if flag.starts_with("p=") => return Err(ScramError::ChannelBinding),
        _ => return Err(Malformed("bad gs2 channel-binding flag")),
    }
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or(Malformed("missing gs2 header"))?;
    let authzid = if authzid.is_empty() {
        None
    } else {
        let name = authzid
            .strip_prefix("a=")
            .ok_or(Malformed("bad authzid in gs2 header"))?;
        Some(decode_saslname(name)?)
    };
    let gs2_header = &message[..message.len() - bare.len()];

    let mut attrs = bare.split(',');
    let first = attrs.next().unwrap_or_default();
    if first.starts_with("m=") {
        // RFC 5802 §5.1: a mandatory extension we do not know fails.
        return Err(Malformed("unsupported mandatory extension m="));
    }
    let username = first
        .strip_prefix("n=")
        .ok_or(Malformed("missing username n="))?;
    let username = decode_saslname(username)?;
    // RFC 5802 §5.1: the server SASLpreps the username too and aborts when
    // that fails or leaves nothing.
    let username = stringprep::saslprep(&username)
        .map_err(|_| Malformed("username refused by SASLprep"))?
        .into_owned();
    if username.is_empty() {
        return Err(Malformed("empty username"));
    }
    let client_nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or(Malformed("missing nonce r="))?;
    if !is_printable(client_nonce) {
        return Err(Malformed("nonce is empty or not printable"));
    }
    for extension in attrs {
        check_extension(extension)?;
    }
    Ok(ClientFirst {
        gs2_header: gs2_header.to_string(),
        username,
        authzid,
        client_nonce: client_nonce.to_string(),
        bare: bare.to_string(),
    })
}

impl ClientFirst {
    /// The username: `=2C` / `=3D` decoded and SASLprep'd; non-empty, valid
    /// UTF-8. Look the user up by this name.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The authorization identity (`a=` of the gs2 header, decoded), if the
    /// client sent one.
    pub fn authzid(&self) -> Option<&str> {
        self.authzid.as_deref()
    }

    /// The server-first-message `r=<nonce>,s=<salt>,i=<iterations>` for
    /// `secret` (a real one, or [`ScramSecret::fake`] for an unknown user),
    /// with a fresh random server nonce (24 random bytes, base64: printable,
    /// no `,`) appended to the client's, and the state for the final step.
    pub fn server_first(self, secret: &ScramSecret) -> (ScramServer, String) {
        let random: [u8; SERVER_NONCE_BYTES] = rand::random();
        let server_nonce = B64.encode(random);
        self.server_first_with_nonce(secret, &server_nonce)
    }

    /// As [`ClientFirst::server_first`] with the given server nonce part,
    /// for tests and the RFC vector. The caller promises `server_nonce` is
    /// non-empty printable ASCII without `,` (RFC 5802 §7 `printable`); it
    /// is not checked.
    pub fn server_first_with_nonce(
        self,
        secret: &ScramSecret,
        server_nonce: &str,
    ) -> (ScramServer, String) {
        let nonce = format!("{}{server_nonce}", self.client_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&secret.salt),
            secret.iterations
        );
        let auth_message_prefix = format!("{},{server_first},", self.bare);
        let server = ScramServer {
            gs2_header: self.gs2_header,
            username: self.username,
            authzid: self.authzid,
            nonce,
            auth_message_prefix,
            stored_key: secret.stored_key,
            server_key: secret.server_key,
        };
        (server, server_first)
    }
}

/// The server's state between server-first-message and
/// client-final-message. [`fmt::Debug`] shows the username only.
#[derive(Clone)]
pub struct ScramServer {
    gs2_header: String,
    username: String,
    authzid: Option<String>,
    /// Client nonce + server nonce.
    nonce: String,
    /// client-first-message-bare "," server-first-message ",".
    auth_message_prefix: String,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl ScramServer {
    /// Checks client-final-message (channel binding echo "c=" must equal
    /// base64 of the gs2 header, nonce must equal ours, proof verified in
    /// constant time) and returns server-final-message "v=<ServerSignature
    /// b64>". Only on `Ok` is the user authenticated. Syntax is checked
    /// before anything is compared; the reserved `m=` extension is
    /// [`ScramError::Malformed`], other well-formed extensions between the
    /// nonce and the proof are ignored. Never panics.
    pub fn client_final(&self, message: &str) -> Result<String, ScramError> {
        use ScramError::Malformed;
        if message.len() > MAX_MESSAGE_LEN {
            return Err(Malformed("message too long"));
        }
        // client-final-message = client-final-message-without-proof "," proof
        let (without_proof, proof) = message
            .rsplit_once(',')
            .ok_or(Malformed("missing proof p="))?;
        let proof = proof
            .strip_prefix("p=")
            .ok_or(Malformed("missing proof p="))?;
        let mut attrs = without_proof.split(',');
        let channel_binding = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(Malformed("missing channel binding c="))?;
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(Malformed("missing nonce r="))?;
        for extension in attrs {
            check_extension(extension)?;
        }
        let channel_binding = B64
            .decode(channel_binding)
            .map_err(|_| Malformed("c= is not base64"))?;
        let proof: [u8; 32] = B64
            .decode(proof)
            .map_err(|_| Malformed("p= is not base64"))?
            .try_into()
            .map_err(|_| Malformed("p= is not 32 bytes"))?;

        // RFC 5802 §7: without channel binding, c= is the base64 of the gs2
        // header exactly as the client sent it.
        if channel_binding != self.gs2_header.as_bytes() {
            return Err(ScramError::Mismatch);
        }
        if nonce != self.nonce {
            return Err(ScramError::Mismatch);
        }

        // RFC 5802 §3: ClientSignature := HMAC(StoredKey, AuthMessage);
        // ClientKey := ClientProof XOR ClientSignature; H(ClientKey) must
        // be StoredKey.
        let auth_message = [
            self.auth_message_prefix.as_bytes(),
            without_proof.as_bytes(),
        ];
        let client_signature = hmac_sha256(&self.stored_key, &auth_message);
        let mut client_key = proof;
        for (k, s) in client_key.iter_mut().zip(client_signature) {
            *k ^= s;
        }
        if !bool::from(sha256(&client_key).ct_eq(&self.stored_key)) {
            return Err(ScramError::BadProof);
        }
        let server_signature = hmac_sha256(&self.server_key, &auth_message);
        Ok(format!("v={}", B64.encode(server_signature)))
    }

    /// The username of the exchange, as [`ClientFirst::username`].
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The authorization identity, as [`ClientFirst::authzid`].
    pub fn authzid(&self) -> Option<&str> {
        self.authzid.as_deref()
    }
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramServer")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// HMAC-SHA256 of the concatenation of `parts` under `key`.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut context = hmac::Context::with_key(&key);
    for part in parts {
        context.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(context.sign().as_ref());
    out
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}

fn decode_key(text: &str, what: &str) -> Result<[u8; 32], String> {
    B64.decode(text)
        .map_err(|e| format!("SCRAM {what} is not base64: {e}"))?
        .try_into()
        .map_err(|_| format!("SCRAM {what} is not 32 bytes"))
}

/// RFC 5802 §7 `printable`: non-empty, %x21-2B / %x2D-7E.
fn is_printable(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| matches!(b, 0x21..=0x2b | 0x2d..=0x7e))
}

/// RFC 5802 §7 `saslname`: non-empty, `,` written `=2C`, `=` written `=3D`
/// (ABNF strings, so either case of the hex digits), no NUL.
fn decode_saslname(s: &str) -> Result<String, ScramError> {
    if s.is_empty() {
        return Err(ScramError::Malformed("empty name"));
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(['=', '\0']) {
        out.push_str(&rest[..i]);
        let escape = rest.get(i..i + 3).unwrap_or_default();
        if escape.eq_ignore_ascii_case("=2C") {
            out.push(',');
        } else if escape.eq_ignore_ascii_case("=3D") {
            out.push('=');
        } else {
            return Err(ScramError::Malformed("bad character or escape in name"));
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// RFC 5802 §7 `attr-val` in an extension position: `ALPHA "=" 1*value-char`
/// (no NUL). The reserved `m=` is refused (§5.1); anything else is ignored.
fn check_extension(extension: &str) -> Result<(), ScramError> {
    let mut chars = extension.chars();
    let name = chars.next();
    let eq = chars.next();
    let value = chars.as_str();
    match (name, eq) {
        (Some('m'), Some('=')) => Err(ScramError::Malformed("unsupported mandatory extension m=")),
        (Some(c), Some('='))
            if c.is_ascii_alphabetic() && !value.is_empty() && !value.contains('\0') =>
        {
            Ok(())
        }
        _ => Err(ScramError::Malformed("malformed attribute")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677 §3.
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const NONCE: &str = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_secret(password: &str) -> ScramSecret {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        ScramSecret::derive_with_salt(password, &salt, 4096).unwrap()
    }

    fn rfc_server(password: &str) -> ScramServer {
        let first = client_first(CLIENT_FIRST).unwrap();
        let (server, server_first) =
            first.server_first_with_nonce(&rfc_secret(password), SERVER_NONCE);
        assert_eq!(server_first, SERVER_FIRST);
        server
    }

    #[test]
    fn rfc7677_example_exchange() {
        let first = client_first(CLIENT_FIRST).unwrap();
        assert_eq!(first.username(), "user");
        assert_eq!(first.authzid(), None);
        let (server, server_first) =
            first.server_first_with_nonce(&rfc_secret("pencil"), SERVER_NONCE);
        assert_eq!(server_first, SERVER_FIRST);
        assert_eq!(server.username(), "user");
        assert_eq!(server.client_final(CLIENT_FINAL).unwrap(), SERVER_FINAL);
    }

    #[test]
    fn wrong_password_is_bad_proof() {
        let server = rfc_server("pencil2");
        assert_eq!(server.client_final(CLIENT_FINAL), Err(ScramError::BadProof));
    }

    #[test]
    fn tampered_proof_is_bad_proof() {
        let server = rfc_server("pencil");
        let tampered = CLIENT_FINAL.replace("p=dHzb", "p=dHzc");
        assert_eq!(server.client_final(&tampered), Err(ScramError::BadProof));
    }

    #[test]
    fn tampered_nonce_or_channel_binding_is_mismatch() {
        let server = rfc_server("pencil");
        for message in [
            // Nonce changed, shortened, extended.
            CLIENT_FINAL.replace("%hvY", "%hvZ"),
            CLIENT_FINAL.replace("$k0,", "$k,"),
            CLIENT_FINAL.replace("$k0,", "$k0x,"),
            // Client nonce only (server part dropped).
            CLIENT_FINAL.replace(SERVER_NONCE, ""),
            // c= of "y,," and of an authzid header instead of "n,,".
            CLIENT_FINAL.replace("c=biws", &format!("c={}", B64.encode("y,,"))),
            CLIENT_FINAL.replace("c=biws", &format!("c={}", B64.encode("n,a=user,"))),
            CLIENT_FINAL.replace("c=biws", "c="),
        ] {
            assert_eq!(
                server.client_final(&message),
                Err(ScramError::Mismatch),
                "{message}"
            );
        }
    }

    #[test]
    fn y_flag_and_authzid_are_accepted_and_echoed() {
        let secret = rfc_secret("pencil");
        for header in ["y,,", "n,a=adm=2Cin,"] {
            let first = client_first(&format!("{header}n=user,r=abc")).unwrap();
            let (server, _) = first.server_first_with_nonce(&secret, "def");
            // Right header echo, wrong proof: gets past the echo check.
            let message = format!(
                "c={},r=abcdef,p={}",
                B64.encode(header),
                B64.encode([0u8; 32])
            );
            assert_eq!(server.client_final(&message), Err(ScramError::BadProof));
        }
        let first = client_first("n,a=adm=2Cin,n=user,r=abc").unwrap();
        assert_eq!(first.authzid(), Some("adm,in"));
    }

    #[test]
    fn channel_binding_request_is_refused() {
        assert_eq!(
            client_first("p=tls-exporter,,n=user,r=abc"),
            Err(ScramError::ChannelBinding)
        );
        assert_eq!(
            client_first("p=tls-unique,a=x,n=user,r=abc"),
            Err(ScramError::ChannelBinding)
        );
    }

    #[test]
    fn username_escapes_are_decoded() {
        let first = client_first("n,,n=a=2Cb=3Dc,r=abc").unwrap();
        assert_eq!(first.username(), "a,b=c");
        let first = client_first("n,,n=a=2cb,r=abc").unwrap();
        assert_eq!(first.username(), "a,b");
    }

    #[test]
    fn username_is_saslprepped() {
        // RFC 4013 §3: U+00A0 (no-break space) maps to a space, U+00AD is
        // mapped to nothing.
        let first = client_first("n,,n=us\u{ad}er\u{a0}x,r=abc").unwrap();
        assert_eq!(first.username(), "user x");
    }

    #[test]
    fn extensions_after_nonce_are_ignored() {
        let first = client_first("n,,n=user,r=abc,x=whatever").unwrap();
        assert_eq!(first.username(), "user");
    }

    /// One row per malformed input: the message and the error.
    #[track_caller]
    fn malformed_first(message: &str, why: &'static str) {
        assert_eq!(
            client_first(message),
            Err(ScramError::Malformed(why)),
            "{message:?}"
        );
    }

    #[test]
    fn malformed_client_first_messages() {
        malformed_first("", "missing gs2 header");
        malformed_first("n", "missing gs2 header");
        malformed_first("n,", "missing gs2 header");
        malformed_first("x,,n=user,r=abc", "bad gs2 channel-binding flag");
        malformed_first(",,n=user,r=abc", "bad gs2 channel-binding flag");
        malformed_first("N,,n=user,r=abc", "bad gs2 channel-binding flag");
        malformed_first("n,user,n=user,r=abc", "bad authzid in gs2 header");
        malformed_first("n,a=,n=user,r=abc", "empty name");
        malformed_first("n,a=x=41,n=user,r=abc", "bad character or escape in name");
        malformed_first(
            "n,,m=ext,n=user,r=abc",
            "unsupported mandatory extension m=",
        );
        malformed_first("n,,", "missing username n=");
        malformed_first("n,,r=abc,n=user", "missing username n=");
        malformed_first("n,,n=,r=abc", "empty name");
        malformed_first("n,,n=us=er,r=abc", "bad character or escape in name");
        malformed_first("n,,n=user=,r=abc", "bad character or escape in name");
        malformed_first("n,,n=user=2,r=abc", "bad character or escape in name");
        malformed_first("n,,n=us\0er,r=abc", "bad character or escape in name");
        malformed_first("n,,n=\u{ad},r=abc", "empty username");
        malformed_first("n,,n=a\u{7}b,r=abc", "username refused by SASLprep");
        malformed_first("n,,n=user", "missing nonce r=");
        malformed_first("n,,n=user,", "missing nonce r=");
        malformed_first("n,,n=user,x=abc", "missing nonce r=");
        malformed_first("n,,n=user,r=", "nonce is empty or not printable");
        malformed_first("n,,n=user,r=a b", "nonce is empty or not printable");
        malformed_first("n,,n=user,r=ab\u{e9}", "nonce is empty or not printable");
        malformed_first("n,,n=user,r=abc,m=x", "unsupported mandatory extension m=");
        malformed_first("n,,n=user,r=abc,", "malformed attribute");
        malformed_first("n,,n=user,r=abc,x", "malformed attribute");
        malformed_first("n,,n=user,r=abc,x=", "malformed attribute");
        malformed_first("n,,n=user,r=abc,1=a", "malformed attribute");
        malformed_first("n,,n=user,r=abc,xy=a", "malformed attribute");
        malformed_first(
            &format!("n,,n=user,r={}", "a".repeat(MAX_MESSAGE_LEN)),
            "message too long",
        );
    }

    #[track_caller]
    fn malformed_final(server: &ScramServer, message: &str, why: &'static str) {
        assert_eq!(
            server.client_final(message),
            Err(ScramError::Malformed(why)),
            "{message:?}"
        );
    }

    #[test]
    fn malformed_client_final_messages() {
        let s = &rfc_server("pencil");
        let p = "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        malformed_final(s, "", "missing proof p=");
        malformed_final(s, "c=biws", "missing proof p=");
        malformed_final(s, &format!("c=biws,r={NONCE}"), "missing proof p=");
        malformed_final(s, &format!("c=biws,r={NONCE},"), "missing proof p=");
        malformed_final(s, &format!("c=biws,r={NONCE},{p},x=y"), "missing proof p=");
        malformed_final(
            s,
            &format!("r={NONCE},c=biws,{p}"),
            "missing channel binding c=",
        );
        malformed_final(s, &format!(",r={NONCE},{p}"), "missing channel binding c=");
        malformed_final(s, &format!("c=biws,{p}"), "missing nonce r=");
        malformed_final(s, &format!("c=biws,x={NONCE},{p}"), "missing nonce r=");
        malformed_final(
            s,
            &format!("c=biws,r={NONCE},m=ext,{p}"),
            "unsupported mandatory extension m=",
        );
        malformed_final(
            s,
            &format!("c=biws,r={NONCE},=x,{p}"),
            "malformed attribute",
        );
        malformed_final(s, &format!("c=biws,r={NONCE},,{p}"), "malformed attribute");
        malformed_final(s, &format!("c=bi?s,r={NONCE},{p}"), "c= is not base64");
        malformed_final(s, &format!("c=biw,r={NONCE},{p}"), "c= is not base64");
        malformed_final(s, &format!("c=biws,r={NONCE},p=dHzb*"), "p= is not base64");
        malformed_final(s, &format!("c=biws,r={NONCE},p="), "p= is not 32 bytes");
        malformed_final(s, &format!("c=biws,r={NONCE},p=dHzb"), "p= is not 32 bytes");
        malformed_final(
            s,
            &format!("c=biws,r={NONCE},p={}", B64.encode([0u8; 33])),
            "p= is not 32 bytes",
        );
        malformed_final(
            s,
            &format!("c=biws,r={}{NONCE},{p}", "a".repeat(MAX_MESSAGE_LEN)),
            "message too long",
        );
    }

    #[test]
    fn unknown_extension_in_client_final_is_ignored_but_part_of_auth_message() {
        // The RFC proof was computed without the extension, so with it the
        // exchange gets past parsing and fails at the proof.
        let server = rfc_server("pencil");
        let message = CLIENT_FINAL.replace(",p=", ",x=ext,p=");
        assert_eq!(server.client_final(&message), Err(ScramError::BadProof));
    }

    /// Every prefix and every one-byte change of valid messages parses
    /// without panicking.
    #[test]
    fn mutated_messages_never_panic() {
        let server = rfc_server("pencil");
        let replacements = [
            b'\0', b',', b'=', b'a', b'm', b'p', b'n', b'r', b'c', 0xc3, 0xff,
        ];
        for valid in [CLIENT_FIRST, "y,a=x=3D,n=u=2Cser,r=abc,x=y", CLIENT_FINAL] {
            let bytes = valid.as_bytes();
            for end in 0..=bytes.len() {
                let text = String::from_utf8_lossy(&bytes[..end]);
                let _ = client_first(&text);
                let _ = server.client_final(&text);
            }
            for i in 0..bytes.len() {
                for &b in &replacements {
                    let mut mutated = bytes.to_vec();
                    mutated[i] = b;
                    let text = String::from_utf8_lossy(&mutated);
                    let _ = client_first(&text);
                    let _ = server.client_final(&text);
                    mutated.remove(i);
                    let text = String::from_utf8_lossy(&mutated);
                    let _ = client_first(&text);
                    let _ = server.client_final(&text);
                }
            }
        }
    }

    #[test]
    fn secret_display_parse_round_trip() {
        let secret = ScramSecret::derive("pencil", 4096).unwrap();
        let text = secret.to_string();
        assert!(text.starts_with("SCRAM-SHA-256$4096$"), "{text}");
        assert!(!text.contains(':'), "{text}");
        assert!(!text.chars().any(char::is_whitespace), "{text}");
        assert_eq!(ScramSecret::parse(&text).unwrap(), secret);
        assert_eq!(secret.iterations(), 4096);

        let rfc = rfc_secret("pencil");
        assert_eq!(ScramSecret::parse(&rfc.to_string()).unwrap(), rfc);
        assert!(
            rfc.to_string()
                .starts_with("SCRAM-SHA-256$4096$W22ZaJ0SNY7soEsUEjb6gQ==$")
        );
    }

    #[test]
    fn secret_debug_hides_keys() {
        let secret = rfc_secret("pencil");
        let debug = format!("{secret:?}");
        assert_eq!(debug, "ScramSecret { iterations: 4096, .. }");
        let (server, _) = client_first(CLIENT_FIRST)
            .unwrap()
            .server_first_with_nonce(&secret, SERVER_NONCE);
        assert_eq!(
            format!("{server:?}"),
            "ScramServer { username: \"user\", .. }"
        );
    }

    #[test]
    fn secret_parse_rejects_bad_text() {
        let good = rfc_secret("pencil").to_string();
        let fields: Vec<&str> = good.split('$').collect();
        let with = |i: usize, value: &str| {
            let mut f = fields.clone();
            f[i] = value;
            f.join("$")
        };
        for bad in [
            String::new(),
            "SCRAM-SHA-256".to_string(),
            format!("{good}$"),
            good.replacen("$", "$$", 1),
            with(0, "SCRAM-SHA-1"),
            with(1, ""),
            with(1, "+4096"),
            with(1, "4095"),
            with(1, "99999999999"),
            with(2, ""),
            with(2, "not base64!"),
            with(3, "AAAA"),
            with(4, &B64.encode([0u8; 33])),
            with(4, "%%%"),
        ] {
            assert!(ScramSecret::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn derive_rejects_weak_or_unusable_input() {
        assert!(ScramSecret::derive("pencil", 4095).is_err());
        assert!(ScramSecret::derive("pencil", 0).is_err());
        assert!(ScramSecret::derive("", 4096).is_err());
        // RFC 4013 §3: prohibited output (a control character).
        assert!(ScramSecret::derive("pen\u{7}cil", 4096).is_err());
        assert!(ScramSecret::derive_with_salt("pencil", &[], 4096).is_err());
        assert_eq!(
            ScramSecret::derive("pencil", 4096).unwrap().iterations(),
            4096
        );
        assert_ne!(
            ScramSecret::derive("pencil", 4096).unwrap(),
            ScramSecret::derive("pencil", 4096).unwrap(),
            "random salt"
        );
    }

    #[test]
    fn password_is_saslprepped() {
        // RFC 4013 §3: U+00AD is mapped to nothing, so "pen<SHY>cil" is the
        // RFC vector's "pencil".
        let server = {
            let first = client_first(CLIENT_FIRST).unwrap();
            first
                .server_first_with_nonce(&rfc_secret("pen\u{ad}cil"), SERVER_NONCE)
                .0
        };
        assert_eq!(server.client_final(CLIENT_FINAL).unwrap(), SERVER_FINAL);
    }

    #[test]
    fn fake_secret_is_deterministic_per_user() {
        let key = b"server key";
        let a = ScramSecret::fake("alice", key);
        assert_eq!(a, ScramSecret::fake("alice", key));
        assert_ne!(a, ScramSecret::fake("bob", key));
        assert_ne!(a, ScramSecret::fake("alice", b"other key"));
        assert_eq!(a.iterations(), DEFAULT_ITERATIONS);
        assert_eq!(a.salt.len(), SALT_LEN);
        assert_eq!(ScramSecret::parse(&a.to_string()).unwrap(), a);

        // The exchange runs as usual and fails at the proof.
        let (server, server_first) = client_first("n,,n=alice,r=abc").unwrap().server_first(&a);
        assert!(server_first.starts_with("r=abc"), "{server_first}");
        assert!(server_first.ends_with(&format!(",i={DEFAULT_ITERATIONS}")));
        let nonce = server_first
            .split(',')
            .next()
            .and_then(|r| r.strip_prefix("r="))
            .unwrap();
        let message = format!("c=biws,r={nonce},p={}", B64.encode([7u8; 32]));
        assert_eq!(server.client_final(&message), Err(ScramError::BadProof));
    }

    #[test]
    fn server_nonce_is_fresh_and_printable() {
        let secret = rfc_secret("pencil");
        let nonce = |first: ClientFirst| {
            let (_, server_first) = first.server_first(&secret);
            let r = server_first.split(',').next().unwrap();
            r.strip_prefix("r=abc").unwrap().to_string()
        };
        let a = nonce(client_first("n,,n=user,r=abc").unwrap());
        let b = nonce(client_first("n,,n=user,r=abc").unwrap());
        assert_ne!(a, b);
        assert!(a.len() >= 24, "{a}");
        assert!(is_printable(&a), "{a}");
    }
}
