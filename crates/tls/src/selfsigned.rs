//! The development default: a self-signed certificate kept in the data directory.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose,
};

use crate::TlsError;
use crate::pem;
use crate::summary::CertSummary;

/// File name of the self-signed certificate inside the data directory.
pub const CERT_FILE: &str = "cert.pem";
/// File name of the self-signed certificate's private key inside the data directory.
pub const KEY_FILE: &str = "key.pem";

/// How long a freshly generated development certificate is valid.
const VALIDITY: Duration = Duration::from_secs(2 * 365 * 24 * 3600);
/// Backdating of `not_before`, so that small clock differences do not matter.
const BACKDATE: Duration = Duration::from_secs(24 * 3600);

/// Makes sure `dir` holds a usable self-signed pair for `hostname` and returns
/// the paths of certificate and key.
///
/// An existing pair is reused when it is currently valid and names `hostname`;
/// an expired pair, a pair for another hostname or a half-written pair (one file
/// missing) is replaced. A file that cannot be parsed is reported, not overwritten.
pub(crate) fn ensure(dir: &Path, hostname: &str) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => {
            let certs = pem::load_certs(&cert_path)?;
            let summary = certs
                .first()
                .map(|leaf| CertSummary::from_der(&cert_path, leaf))
                .transpose()?;
            match summary {
                Some(s) if s.is_valid_at(SystemTime::now()) && s.covers(hostname) => {
                    return Ok((cert_path, key_path));
                }
                _ => tracing::warn!(
                    path = %cert_path.display(),
                    hostname,
                    "self-signed certificate is expired or for another hostname; generating a new one"
                ),
            }
        }
        (false, false) => {}
        _ => tracing::warn!(
            dir = %dir.display(),
            "only one of cert.pem / key.pem exists; generating a new self-signed pair"
        ),
    }
    generate(dir, hostname, &cert_path, &key_path)?;
    Ok((cert_path, key_path))
}

fn generate(dir: &Path, hostname: &str, cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    let generate_err = |source| TlsError::Generate {
        hostname: hostname.to_owned(),
        source,
    };
    let mut names = vec![hostname.to_owned()];
    if !hostname.eq_ignore_ascii_case("localhost") {
        names.push("localhost".to_owned());
    }
    let mut params = CertificateParams::new(names).map_err(generate_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, hostname);
    dn.push(DnType::OrganizationName, "Portcullis self-signed");
    params.distinguished_name = dn;
    // Expressed as epoch + offset, which needs no `std` feature of the `time` crate.
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + since_epoch.saturating_sub(BACKDATE);
    params.not_after = epoch + since_epoch + VALIDITY;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().map_err(generate_err)?;
    let cert = params.self_signed(&key).map_err(generate_err)?;

    fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    // The key first: a crash in between leaves "key without cert", which is regenerated.
    write_file(key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(cert_path, cert.pem().as_bytes(), 0o644)?;
    tracing::info!(path = %cert_path.display(), hostname, "generated a self-signed certificate");
    Ok(())
}

/// Writes `contents` to `path` atomically (temporary file, fsync, rename) with `mode` on Unix.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = (|| -> io::Result<()> {
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        let mut file = options.open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    })
}
