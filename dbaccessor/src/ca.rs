//! The controller CA and the certificates it signs: each controller's API server
//! certificate and its Dqlite node certificate.
//!
//! The CA is made once, by the controller that bootstraps, and kept in the controller's dir
//! beside controller.conf (`<data-dir>/agents/controller-<id>/ca.pem`, `ca.key` mode 0600).
//! A controller that joins gets the same files at provisioning (Juju puts the CA in
//! agent.conf; the simulator copies them), since its Dqlite node must present a
//! certificate of that CA before it can reach the database. The first controller also
//! writes the CA into the controller database (`controller_ca`, one row, guarded insert)
//! and the API servers take it from there. A production deployment would distribute the CA
//! key out of band rather than keep it in the replicated database.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The DNS name every Dqlite node certificate carries first.
pub const NODE_CERT_NAME: &str = "juju-dqlite";

/// The controller CA: certificate and private key, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ca {
    pub cert_pem: String,
    pub key_pem: String,
}

/// What can go wrong with certificates and their files.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot read the CA certificate: {0}")]
    CertPem(String),
    #[error("cannot {action} {path}: {source}")]
    File {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
}

/// The CA's parameters. Deterministic: an issuer is rebuilt from them and the key alone
/// (the subject and key identifier method must match the certificate's).
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Juju");
    name.push(DnType::CommonName, "juju-generated CA for the controller");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

impl Ca {
    /// A new CA (ECDSA P-256), valid from now for ten years.
    pub fn generate() -> Result<Ca, CaError> {
        let key = KeyPair::generate()?;
        let mut params = ca_params();
        let now = std::time::SystemTime::now();
        params.not_before = now.into();
        params.not_after = (now + std::time::Duration::from_secs(10 * 365 * 24 * 3600)).into();
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The CA certificate, DER, for trust stores.
    pub fn cert_der(&self) -> Result<CertificateDer<'static>, CaError> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .map_err(|e| CaError::CertPem(e.to_string()))
    }

    /// A server certificate for this controller, naming `ips` (and `localhost`), signed by
    /// the CA: the chain (leaf, CA) and the leaf's key.
    pub fn issue_server(
        &self,
        ips: &[IpAddr],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CaError> {
        let ca_key = KeyPair::from_pem(&self.key_pem)?;
        let issuer = Issuer::new(ca_params(), ca_key);
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "Juju");
        name.push(DnType::CommonName, "juju-apiserver");
        params.distinguished_name = name;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = std::time::SystemTime::now();
        params.not_before = (now - std::time::Duration::from_secs(300)).into();
        params.not_after = (now + std::time::Duration::from_secs(365 * 24 * 3600)).into();
        let cert = params.signed_by(&key, &issuer)?;
        let chain = vec![cert.der().clone(), self.cert_der()?];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((chain, key))
    }

    /// A Dqlite node certificate signed by the CA, good as a TLS server and client: its
    /// first name is the DNS name [`NODE_CERT_NAME`], which every node certificate shares
    /// (go-dqlite's shell checks the server against the first DNS name of its own
    /// certificate), then `ips` (a dialling node checks the IP it dialled). Returns the
    /// chain PEM (leaf, then the CA) and the leaf's key PEM.
    pub fn issue_node(&self, ips: &[IpAddr]) -> Result<(String, String), CaError> {
        let ca_key = KeyPair::from_pem(&self.key_pem)?;
        let issuer = Issuer::new(ca_params(), ca_key);
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![NODE_CERT_NAME.to_owned()])?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "Juju");
        name.push(DnType::CommonName, NODE_CERT_NAME);
        params.distinguished_name = name;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = std::time::SystemTime::now();
        params.not_before = (now - std::time::Duration::from_secs(300)).into();
        params.not_after = (now + std::time::Duration::from_secs(365 * 24 * 3600)).into();
        let cert = params.signed_by(&key, &issuer)?;
        let mut chain = cert.pem();
        chain.push_str(&self.cert_pem);
        Ok((chain, key.serialize_pem()))
    }

    /// Reads `ca.pem` and `ca.key` from `dir`; `None` when either is missing.
    pub fn load(dir: &Path) -> Result<Option<Ca>, CaError> {
        let read = |name: &str| match std::fs::read_to_string(dir.join(name)) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CaError::File {
                action: "read",
                path: dir.join(name).display().to_string(),
                source,
            }),
        };
        Ok(match (read("ca.pem")?, read("ca.key")?) {
            (Some(cert_pem), Some(key_pem)) => Some(Ca { cert_pem, key_pem }),
            _ => None,
        })
    }

    /// Writes `ca.pem` (0644) and `ca.key` (0600) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), CaError> {
        write_file(&dir.join("ca.pem"), self.cert_pem.as_bytes(), 0o644)?;
        write_file(&dir.join("ca.key"), self.key_pem.as_bytes(), 0o600)
    }
}

/// Writes `bytes` to `path` atomically (temp file created with `mode`, fsync, rename).
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    let error = |action: &'static str, source: std::io::Error| CaError::File {
        action,
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| error("create the dir of", e))?;
    }
    let temp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp)
        .map_err(|e| error("create", e))?;
    file.write_all(bytes).map_err(|e| error("write", e))?;
    file.sync_all().map_err(|e| error("sync", e))?;
    std::fs::rename(&temp, path).map_err(|e| error("rename into", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_certificate_verifies_against_its_ca_and_names_its_ips() {
        use rustls::client::danger::ServerCertVerifier;
        let ca = Ca::generate().expect("ca");
        let ip: IpAddr = "10.0.0.5".parse().expect("ip");
        let (chain, _key) = ca.issue_server(&[ip]).expect("server cert");
        assert_eq!(chain.len(), 2);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der().expect("der")).expect("root");
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider,
        )
        .build()
        .expect("verifier");
        let now = rustls::pki_types::UnixTime::now();
        let name = rustls::pki_types::ServerName::IpAddress(ip.into());
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &name, &[], now)
            .expect("verifies for its IP");
        let other = rustls::pki_types::ServerName::IpAddress(
            "10.0.0.6".parse::<IpAddr>().expect("ip").into(),
        );
        assert!(verifier
            .verify_server_cert(&chain[0], &chain[1..], &other, &[], now)
            .is_err());
        // Another CA's certificate does not verify.
        let (foreign, _) = Ca::generate()
            .expect("ca")
            .issue_server(&[ip])
            .expect("cert");
        assert!(verifier
            .verify_server_cert(&foreign[0], &foreign[1..], &name, &[], now)
            .is_err());
    }

    #[test]
    fn saved_cas_load_back_with_a_private_key_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(Ca::load(dir.path()).expect("load"), None);
        let ca = Ca::generate().expect("ca");
        ca.save(dir.path()).expect("save");
        assert_eq!(Ca::load(dir.path()).expect("load"), Some(ca));
        let mode = std::fs::metadata(dir.path().join("ca.key"))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
