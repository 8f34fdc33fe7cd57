//! The cluster's certificates: one CA, a certificate per node and per client.
//!
//! Used by `node certs` and the control process to provision a cluster, and by
//! every endpoint to load its identity. Node certificates carry both
//! ServerAuth and ClientAuth (a node accepts connections and also dials its
//! peers; rustls refuses a ServerAuth-only certificate from a client), and
//! their subject alternative names are the node's name and IP addresses.
//! Client certificates carry ClientAuth only. The first DNS name in a
//! certificate is the identity the transport reports for its holder.
//!
//! Files in a directory: `ca.pem` (the CA certificate, shipped everywhere),
//! `ca.key` (the CA's key, kept by whoever issues; never shipped to nodes),
//! `<name>.pem` and `<name>.key` per holder.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Common name of the CA certificate.
const CA_COMMON_NAME: &str = "raftjepsen cluster CA";

/// Errors from making, writing or loading certificates; each names the file
/// or the name involved.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{name:?} is not a valid DNS name for a certificate")]
    InvalidName { name: String },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no certificate found in PEM file")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no private key found in PEM file")]
    NoPrivateKey { path: PathBuf },
    #[error("{path}: certificate has no DNS name in its subject alternative names")]
    NoName { path: PathBuf },
    #[error("{path}: CA certificate rejected: {reason}")]
    BadCa { path: PathBuf, reason: String },
}

/// A CA able to issue certificates.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// The CA certificate in PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate as the trust roots an endpoint verifies against.
    pub fn roots(&self) -> Result<rustls::RootCertStore, CertError> {
        roots_from_pem(self.cert_pem.as_bytes(), Path::new("<in-memory CA>"))
    }
}

/// A certificate and its private key, as issued.
#[derive(Clone)]
pub struct IssuedCert {
    /// The holder's name (first DNS SAN and common name).
    pub name: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl IssuedCert {
    /// The loaded form, without a round trip through files.
    pub fn identity(&self) -> Result<Identity, CertError> {
        identity_from_pem(
            self.cert_pem.as_bytes(),
            self.key_pem.as_bytes(),
            Path::new("<in-memory certificate>"),
        )
    }
}

/// What an endpoint presents: its certificate chain, private key and name.
pub struct Identity {
    pub name: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            name: self.name.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Makes a new self-signed cluster CA.
pub fn generate_ca() -> Result<CertificateAuthority, CertError> {
    let key = KeyPair::generate()?;
    let params = ca_params();
    let cert = params.self_signed(&key)?;
    let key_pem = key.serialize_pem();
    Ok(CertificateAuthority {
        cert_pem: cert.pem(),
        key_pem,
        issuer: Issuer::new(params, key),
    })
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// Issues a node certificate: ServerAuth + ClientAuth, SANs = `name` and `ips`.
pub fn issue_node_cert(
    ca: &CertificateAuthority,
    name: &str,
    ips: &[IpAddr],
) -> Result<IssuedCert, CertError> {
    issue(
        ca,
        name,
        ips,
        &[
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    )
}

/// Issues a client certificate: ClientAuth only, SAN = `name`.
pub fn issue_client_cert(ca: &CertificateAuthority, name: &str) -> Result<IssuedCert, CertError> {
    issue(ca, name, &[], &[ExtendedKeyUsagePurpose::ClientAuth])
}

fn issue(
    ca: &CertificateAuthority,
    name: &str,
    ips: &[IpAddr],
    usages: &[ExtendedKeyUsagePurpose],
) -> Result<IssuedCert, CertError> {
    if rustls::pki_types::DnsName::try_from(name).is_err() || name.parse::<IpAddr>().is_ok() {
        return Err(CertError::InvalidName {
            name: name.to_string(),
        });
    }
    let mut sans = vec![name.to_string()];
    sans.extend(ips.iter().map(IpAddr::to_string));
    let mut params = CertificateParams::new(sans)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usages.to_vec();
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca.issuer)?;
    Ok(IssuedCert {
        name: name.to_string(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Writes `ca.pem` and, for each issued certificate, `<name>.pem` and
/// `<name>.key` (mode 0600) into `dir`, creating it if needed. The CA key is
/// not written: see [`write_ca_key`].
pub fn write_pem_files(
    dir: &Path,
    ca: &CertificateAuthority,
    issued: &[IssuedCert],
) -> Result<(), CertError> {
    fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    write_file(&dir.join("ca.pem"), ca.cert_pem.as_bytes(), false)?;
    for cert in issued {
        write_file(
            &dir.join(format!("{}.pem", cert.name)),
            cert.cert_pem.as_bytes(),
            false,
        )?;
        write_file(
            &dir.join(format!("{}.key", cert.name)),
            cert.key_pem.as_bytes(),
            true,
        )?;
    }
    Ok(())
}

/// Writes the CA's private key as `ca.key` (mode 0600), so more certificates
/// can be issued later with [`load_ca_for_issuing`].
pub fn write_ca_key(dir: &Path, ca: &CertificateAuthority) -> Result<(), CertError> {
    write_file(&dir.join("ca.key"), ca.key_pem.as_bytes(), true)
}

/// Loads a CA written by [`write_pem_files`] and [`write_ca_key`] to issue more.
pub fn load_ca_for_issuing(
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertificateAuthority, CertError> {
    let cert_pem = read_string(cert_path)?;
    let key_pem = read_string(key_path)?;
    let key = KeyPair::from_pem(&key_pem).map_err(|_| CertError::NoPrivateKey {
        path: key_path.to_path_buf(),
    })?;
    let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|error| CertError::BadCa {
        path: cert_path.to_path_buf(),
        reason: error.to_string(),
    })?;
    Ok(CertificateAuthority {
        issuer,
        cert_pem,
        key_pem,
    })
}

/// Loads an endpoint's identity from a certificate PEM and a key PEM.
pub fn load_identity(cert_path: &Path, key_path: &Path) -> Result<Identity, CertError> {
    let chain = certificates_from_pem(&read_bytes(cert_path)?, cert_path)?;
    let name = certificate_name(&chain[0]).ok_or_else(|| CertError::NoName {
        path: cert_path.to_path_buf(),
    })?;
    let key = private_key_from_pem(&read_bytes(key_path)?, key_path)?;
    Ok(Identity { name, chain, key })
}

/// Loads the CA certificate(s) an endpoint trusts.
pub fn load_ca(path: &Path) -> Result<rustls::RootCertStore, CertError> {
    roots_from_pem(&read_bytes(path)?, path)
}

fn identity_from_pem(cert_pem: &[u8], key_pem: &[u8], path: &Path) -> Result<Identity, CertError> {
    let chain = certificates_from_pem(cert_pem, path)?;
    let name = certificate_name(&chain[0]).ok_or_else(|| CertError::NoName {
        path: path.to_path_buf(),
    })?;
    let key = private_key_from_pem(key_pem, path)?;
    Ok(Identity { name, chain, key })
}

fn certificates_from_pem(
    pem: &[u8],
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let chain = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| CertError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

fn private_key_from_pem(pem: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|source| CertError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .ok_or_else(|| CertError::NoPrivateKey {
            path: path.to_path_buf(),
        })
}

fn roots_from_pem(pem: &[u8], path: &Path) -> Result<rustls::RootCertStore, CertError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates_from_pem(pem, path)? {
        roots.add(cert).map_err(|error| CertError::BadCa {
            path: path.to_path_buf(),
            reason: error.to_string(),
        })?;
    }
    Ok(roots)
}

/// The holder's name: the first DNS name among the certificate's subject
/// alternative names. `None` if the certificate does not parse or has none.
pub fn certificate_name(cert: &CertificateDer<'_>) -> Option<String> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    let name = parsed.valid_dns_names().next().map(str::to_string);
    name
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, CertError> {
    fs::read(path).map_err(|source| CertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_string(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), CertError> {
    let io_error = |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_error)?;
    file.write_all(contents).map_err(io_error)?;
    file.sync_all().map_err(io_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_cert_round_trips_through_files_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let ca = generate_ca().unwrap();
        let n1 = issue_node_cert(&ca, "n1", &["127.0.0.1".parse().unwrap()]).unwrap();
        let c1 = issue_client_cert(&ca, "client-1").unwrap();
        write_pem_files(dir.path(), &ca, &[n1, c1]).unwrap();
        let identity =
            load_identity(&dir.path().join("n1.pem"), &dir.path().join("n1.key")).unwrap();
        assert_eq!(identity.name, "n1");
        assert_eq!(identity.chain.len(), 1);
        let client = load_identity(
            &dir.path().join("client-1.pem"),
            &dir.path().join("client-1.key"),
        )
        .unwrap();
        assert_eq!(client.name, "client-1");
        assert_eq!(load_ca(&dir.path().join("ca.pem")).unwrap().len(), 1);
        assert!(!dir.path().join("ca.key").exists());
    }

    #[test]
    fn reloaded_ca_issues_certificates_that_chain_to_the_same_root() {
        let dir = tempfile::tempdir().unwrap();
        let ca = generate_ca().unwrap();
        write_pem_files(dir.path(), &ca, &[]).unwrap();
        write_ca_key(dir.path(), &ca).unwrap();
        let reloaded =
            load_ca_for_issuing(&dir.path().join("ca.pem"), &dir.path().join("ca.key")).unwrap();
        let issued = issue_node_cert(&reloaded, "n2", &[]).unwrap();
        let identity = issued.identity().unwrap();
        let roots = load_ca(&dir.path().join("ca.pem")).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let now = rustls::pki_types::UnixTime::now();
        verifier
            .verify_client_cert(&identity.chain[0], &[], now)
            .unwrap();
    }

    #[test]
    fn names_that_are_not_dns_names_are_refused() {
        let ca = generate_ca().unwrap();
        assert!(matches!(
            issue_client_cert(&ca, "bad name"),
            Err(CertError::InvalidName { .. })
        ));
        assert!(issue_client_cert(&ca, "10.0.0.1").is_err());
    }

    #[test]
    fn missing_files_name_the_path() {
        let error = load_ca(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
    }
}
