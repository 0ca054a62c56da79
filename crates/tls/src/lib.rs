//! TLS for Berth's listeners and clients: the server's certificate and key
//! from PEM files, clients trusting a given CA (`--ca`) or the system's
//! roots, and self-signed pairs for a first multi-host setup
//! (`berth cert`). rustls on ring only, so nothing links OpenSSL or builds
//! aws-lc; every crate that speaks TLS gets its configuration here.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

pub use rustls::{ClientConfig, ServerConfig};
pub use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("{0}")]
    Config(String),
}

fn file_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// ring's provider. rustls deprecates it for lacking post-quantum key
/// exchange; the provider that has it (aws-lc-rs) needs a C and CMake
/// build, which Berth keeps out of its build on purpose.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file, at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no CERTIFICATE in the file"));
    }
    Ok(certs)
}

/// A listener's configuration: its certificate chain and private key (PKCS#8,
/// PKCS#1 or SEC1), HTTP/1.1 only.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(format!("{}: {e}", cert.display())))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client's configuration: trusting the CA certificates in `ca` when
/// given, else the system's roots.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            for c in certificates(path)? {
                roots.add(c).map_err(|e| file_error(path, e))?;
            }
        }
        None => {
            // Unreadable system certificates are skipped, as curl does.
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A client configuration that trusts nothing: for clients of `http://`
/// URLs, which never use it.
pub fn plain_client_config() -> Arc<ClientConfig> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        });
    match config {
        Ok(c) => Arc::new(c),
        // ring's provider supports the default versions; this cannot fail.
        Err(e) => unreachable!("ring supports TLS 1.2 and 1.3: {e}"),
    }
}

/// An HTTP client connector speaking `https://` with `config` and plain
/// `http://` as before.
pub fn https_connector(
    config: Arc<ClientConfig>,
) -> hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*config).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

/// A certificate and its key, PEM-encoded.
pub struct SelfSigned {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A self-signed certificate for `names` (DNS names or IP addresses):
/// clients trust it itself with `--ca` (webpki takes a trust anchor for
/// its own end entity, but refuses a CA certificate as one).
pub fn self_signed(names: &[String]) -> Result<SelfSigned, TlsError> {
    if names.is_empty() {
        return Err(TlsError::Config(
            "name at least one host name or address".into(),
        ));
    }
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|e| TlsError::Config(format!("names {names:?}: {e}")))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, names[0].clone());
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let now = std::time::SystemTime::now();
    params.not_before = now.into();
    params.not_after = (now + std::time::Duration::from_secs(365 * 24 * 3600)).into();
    let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Config(e.to_string()))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(SelfSigned {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_pair_loads_as_a_server_and_as_a_clients_ca() {
        let dir = tempfile::tempdir().expect("tmp");
        let pair = self_signed(&["localhost".into(), "127.0.0.1".into()]).expect("pair");
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, &pair.cert_pem).expect("write");
        std::fs::write(&key, &pair.key_pem).expect("write");
        assert!(server_config(&cert, &key).is_ok());
        assert!(client_config(Some(&cert)).is_ok());
        // A key file without a key, and a certificate file without one,
        // say which file is wrong.
        let err = server_config(&cert, &cert).expect_err("no key in a certificate");
        assert!(err.to_string().contains("c.pem"), "{err}");
        let err = client_config(Some(&key)).expect_err("no certificate in a key");
        assert!(err.to_string().contains("k.pem"), "{err}");
        assert!(self_signed(&[]).is_err());
    }
}
