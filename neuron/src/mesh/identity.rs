//! Who a neuron is on the mesh: the fleet CA that `cortex init` makes, the node certificates
//! that `cortex cert issue` signs with it, and loading them back for the transport.
//!
//! A directory holds `ca.crt`/`ca.key` and one `NAME.crt`/`NAME.key` pair per node, all PEM.
//! Private keys are created with mode 0600 (never widened and narrowed afterwards) and are
//! never printed. Files are written next to their final name and renamed into place, so a
//! reader never sees half a key.

use std::fmt;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

/// How long a fleet CA made by `cortex init` stays valid.
pub const CA_VALIDITY_DAYS: u32 = 3650;
/// How long a node certificate stays valid unless `--days` says otherwise.
pub const DEFAULT_CERT_DAYS: u32 = 365;
/// How far back a new certificate's validity starts, so that peers whose clocks lag a little
/// accept it at once.
const CLOCK_SKEW: Duration = Duration::hours(1);
/// The longest node name (a DNS name's limit).
const MAX_NAME_LEN: usize = 253;

/// Why an identity could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A node name (or an extra `--dns` name) is not a lowercase DNS-style name.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `init_ca` found a CA already there and was not told to replace it.
    #[error("a fleet CA already exists in {} (--force replaces it; nodes it signed lose trust)", dir.display())]
    CaExists {
        /// The directory holding it.
        dir: PathBuf,
    },
    /// There is no fleet CA (`ca.crt` and `ca.key`) in the directory.
    #[error("no fleet CA in {} (run `cortex init` first)", dir.display())]
    MissingCa {
        /// The directory searched.
        dir: PathBuf,
    },
    /// A certificate must be valid for at least one day.
    #[error("a certificate must be valid for at least one day")]
    InvalidDays,
    /// A file could not be read, written or created.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying failure.
        source: std::io::Error,
    },
    /// A file holds no usable PEM certificate or key.
    #[error("{}: {detail}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        detail: String,
    },
    /// A certificate does not carry the node name it is filed under.
    #[error("{}: certificate is for {found:?}, not {name:?}", path.display())]
    NameMismatch {
        /// The certificate file.
        path: PathBuf,
        /// The node name asked for.
        name: String,
        /// The certificate's first DNS name, if any.
        found: Option<String>,
    },
    /// Generating a key or signing a certificate failed.
    #[error("generating certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A node's credentials for the mesh, as `load` reads them from disk.
pub struct NodeIdentity {
    /// The node name: the first DNS name of its certificate.
    pub name: String,
    /// The node certificate, then any intermediates.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The node's private key.
    pub key: PrivateKeyDer<'static>,
    /// The fleet CA that peers' certificates must chain to.
    pub ca: CertificateDer<'static>,
}

impl fmt::Debug for NodeIdentity {
    // The key stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("name", &self.name)
            .field("cert_chain", &self.cert_chain.len())
            .finish_non_exhaustive()
    }
}

impl NodeIdentity {
    /// Reads `dir/NAME.crt`, `dir/NAME.key` and `dir/ca.crt`, and checks that the certificate
    /// names the node.
    pub fn load(dir: &Path, name: &str) -> Result<NodeIdentity, IdentityError> {
        validate_name(name)?;
        let (cert_path, key_path) = node_files(dir, name);
        let (ca_path, _) = ca_files(dir);
        if !ca_path.exists() {
            return Err(IdentityError::MissingCa { dir: dir.to_path_buf() });
        }
        let cert_chain = read_certs(&cert_path)?;
        let found = cert_chain.first().and_then(node_name);
        if found.as_deref() != Some(name) {
            return Err(IdentityError::NameMismatch { path: cert_path, name: name.to_owned(), found });
        }
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| pem_error(&key_path, e))?;
        let ca = read_certs(&ca_path)?.swap_remove(0);
        Ok(NodeIdentity { name: name.to_owned(), cert_chain, key, ca })
    }
}

/// The node name a certificate carries: its first DNS subject alternative name.
pub fn node_name(cert: &CertificateDer<'_>) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    let name = cert.valid_dns_names().next()?;
    Some(name.to_owned())
}

/// `dir/ca.crt` and `dir/ca.key`.
pub fn ca_files(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("ca.crt"), dir.join("ca.key"))
}

/// `dir/NAME.crt` and `dir/NAME.key`.
pub fn node_files(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")))
}

/// Makes a new fleet CA in `dir` (created if missing). An existing CA is replaced only with
/// `force`.
pub fn init_ca(dir: &Path, force: bool) -> Result<(), IdentityError> {
    let (cert_path, key_path) = ca_files(dir);
    if !force && (cert_path.exists() || key_path.exists()) {
        return Err(IdentityError::CaExists { dir: dir.to_path_buf() });
    }
    let mut params = CertificateParams::default();
    // A name of its own per fleet, so that two fleets' CAs are never confused for each other.
    params.distinguished_name = distinguished_name(&format!("cortex fleet CA {:08x}", rand::random::<u32>()));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + Duration::days(CA_VALIDITY_DAYS.into());
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;

    create_dir(dir)?;
    write_file(&key_path, key.serialize_pem().as_bytes(), true)?;
    write_file(&cert_path, cert.pem().as_bytes(), false)
}

/// Signs a certificate for node `name` with the fleet CA in `dir`, valid for `days` days for
/// both serving and dialling, with `name` as its first DNS name plus `dns` and `ips`. Writes
/// `dir/NAME.crt` and `dir/NAME.key`, replacing an earlier pair (renewal).
pub fn issue(dir: &Path, name: &str, dns: &[String], ips: &[IpAddr], days: u32) -> Result<(), IdentityError> {
    if days == 0 {
        return Err(IdentityError::InvalidDays);
    }
    let now = OffsetDateTime::now_utc();
    issue_with_validity(dir, name, dns, ips, now - CLOCK_SKEW, now + Duration::days(days.into()))
}

/// `issue` with an explicit validity period; tests use it to make expired certificates.
pub(crate) fn issue_with_validity(
    dir: &Path,
    name: &str,
    dns: &[String],
    ips: &[IpAddr],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<(), IdentityError> {
    validate_name(name)?;
    for extra in dns {
        validate_name(extra)?;
    }
    let issuer = load_issuer(dir)?;

    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(name);
    params.subject_alt_names.push(SanType::DnsName(name.try_into()?));
    for extra in dns.iter().filter(|d| *d != name) {
        params.subject_alt_names.push(SanType::DnsName(extra.as_str().try_into()?));
    }
    params.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;

    let (cert_path, key_path) = node_files(dir, name);
    write_file(&key_path, key.serialize_pem().as_bytes(), true)?;
    write_file(&cert_path, cert.pem().as_bytes(), false)
}

/// Checks that `name` is a lowercase DNS-style name: labels of lowercase letters, digits and
/// '-' (not at either end), separated by single dots, not ending in an all-digit label (which
/// reads as an IP address).
pub fn validate_name(name: &str) -> Result<(), IdentityError> {
    let invalid = |reason| Err(IdentityError::InvalidName { name: name.to_owned(), reason });
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return invalid("it is longer than 253 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.') {
        return invalid("use only lowercase letters, digits, '-' and '.'");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return invalid("it has an empty label (a leading, trailing or double '.')");
        }
        if label.len() > 63 {
            return invalid("a label is longer than 63 characters");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return invalid("a label starts or ends with '-'");
        }
    }
    if name.rsplit('.').next().is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit())) {
        return invalid("its last label is all digits, like an IP address");
    }
    Ok(())
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn load_issuer(dir: &Path) -> Result<Issuer<'static, KeyPair>, IdentityError> {
    let (cert_path, key_path) = ca_files(dir);
    if !cert_path.exists() || !key_path.exists() {
        return Err(IdentityError::MissingCa { dir: dir.to_path_buf() });
    }
    let key_pem = read_to_string(&key_path)?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| IdentityError::Pem { path: key_path, detail: e.to_string() })?;
    let cert = read_certs(&cert_path)?.swap_remove(0);
    Issuer::from_ca_cert_der(&cert, key).map_err(|e| IdentityError::Pem { path: cert_path, detail: e.to_string() })
}

fn read_to_string(path: &Path) -> Result<String, IdentityError> {
    fs::read_to_string(path).map_err(|source| IdentityError::Io { path: path.to_path_buf(), source })
}

/// Every certificate in a PEM file; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(IdentityError::Pem { path: path.to_path_buf(), detail: "no certificate in the file".into() });
    }
    Ok(certs)
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> IdentityError {
    match e {
        rustls::pki_types::pem::Error::Io(source) => IdentityError::Io { path: path.to_path_buf(), source },
        e => IdentityError::Pem { path: path.to_path_buf(), detail: e.to_string() },
    }
}

/// Creates `dir` (and its parents), readable only by its owner when it is new.
fn create_dir(dir: &Path) -> Result<(), IdentityError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| IdentityError::Io { path: dir.to_path_buf(), source })
}

/// Writes `bytes` to a new file beside `path` (mode 0600 from its creation when `private`)
/// and renames it over `path`.
fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), IdentityError> {
    let io = |source| IdentityError::Io { path: path.to_path_buf(), source };
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = fs::remove_file(&tmp);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, if private { 0o600 } else { 0o644 });
    #[cfg(not(unix))]
    let _ = private;
    let written = options.open(&tmp).and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()));
    if let Err(e) = written.and_then(|_| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::tests::TempDir;

    #[test]
    fn names_are_lowercase_dns_labels() {
        for good in ["node-a", "a", "gpu-1.rack-2.example", "n0", "1node"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Bad_Name", "Node", "a..b", ".a", "a.", "-a", "a-", "a b", "10.0.0.1", "x.123", "é"] {
            assert!(matches!(validate_name(bad), Err(IdentityError::InvalidName { .. })), "{bad:?}");
        }
        assert!(validate_name(&"a".repeat(64)).is_err());
    }

    #[test]
    fn issue_refuses_a_bad_name_and_writes_nothing() {
        let dir = TempDir::new("bad-name");
        init_ca(dir.path(), false).unwrap();
        let err = issue(dir.path(), "Bad_Name", &[], &[], 30).unwrap_err();
        assert!(matches!(err, IdentityError::InvalidName { .. }), "{err}");
        let err = issue(dir.path(), "ok", &["Not Ok".into()], &[], 30).unwrap_err();
        assert!(matches!(err, IdentityError::InvalidName { .. }), "{err}");
        let mut files: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        files.sort();
        assert_eq!(files, ["ca.crt", "ca.key"]);
    }

    #[test]
    fn issue_without_a_ca_says_so() {
        let dir = TempDir::new("no-ca");
        let err = issue(dir.path(), "node-a", &[], &[], 30).unwrap_err();
        assert!(matches!(err, IdentityError::MissingCa { .. }), "{err}");
    }

    #[test]
    fn an_existing_ca_is_replaced_only_when_forced() {
        let dir = TempDir::new("force");
        init_ca(dir.path(), false).unwrap();
        let before = fs::read(dir.path().join("ca.crt")).unwrap();
        let err = init_ca(dir.path(), false).unwrap_err();
        assert!(matches!(err, IdentityError::CaExists { .. }), "{err}");
        assert_eq!(fs::read(dir.path().join("ca.crt")).unwrap(), before);
        init_ca(dir.path(), true).unwrap();
        assert_ne!(fs::read(dir.path().join("ca.crt")).unwrap(), before);
    }

    #[cfg(unix)]
    #[test]
    fn private_keys_are_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("mode");
        init_ca(dir.path(), false).unwrap();
        issue(dir.path(), "node-a", &[], &[], 30).unwrap();
        for key in ["ca.key", "node-a.key"] {
            let mode = fs::metadata(dir.path().join(key)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{key}");
        }
    }

    #[test]
    fn a_loaded_identity_carries_its_name_and_extra_names() {
        let dir = TempDir::new("load");
        init_ca(dir.path(), false).unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        issue(dir.path(), "node-a", &["a.example".into()], &[ip], 30).unwrap();
        let id = NodeIdentity::load(dir.path(), "node-a").unwrap();
        assert_eq!(id.name, "node-a");
        assert_eq!(node_name(&id.cert_chain[0]).as_deref(), Some("node-a"));
        let cert = webpki::EndEntityCert::try_from(&id.cert_chain[0]).unwrap();
        assert_eq!(cert.valid_dns_names().collect::<Vec<_>>(), ["node-a", "a.example"]);
        assert!(!format!("{id:?}").contains("PRIVATE"));

        // A certificate filed under another node's name is not that node.
        fs::copy(dir.path().join("node-a.crt"), dir.path().join("node-b.crt")).unwrap();
        fs::copy(dir.path().join("node-a.key"), dir.path().join("node-b.key")).unwrap();
        let err = NodeIdentity::load(dir.path(), "node-b").unwrap_err();
        assert!(matches!(err, IdentityError::NameMismatch { .. }), "{err}");
    }
}
