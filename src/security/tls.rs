//! TLS for the gateway's listener, with certificates that rotate without a
//! restart.
//!
//! The certificate, its key and (for mTLS) the client CA bundle are PEM
//! files. They are read at start, where a broken file stops the gateway,
//! and then checked every [`RELOAD_EVERY`](crate::security::watched::RELOAD_EVERY): when their contents change
//! (cert-manager and Kubernetes secrets rewrite them in place), new
//! connections get the new pair. A broken replacement (unreadable, a key
//! that is not the certificate's, an empty CA bundle) is logged and the
//! old pair kept. Connections already open keep the session they have.
//!
//! With a client CA, every client must present a certificate that chains
//! to it and is valid now; [`crate::security::auth::identity`] names the caller from
//! it.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use rustls::{
    RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::security::watched::every_reload;

/// Where the server's certificate, its key and the client CA are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// With mTLS: the CAs client certificates must chain to (PEM bundle).
    pub client_ca: Option<PathBuf>,
}

/// Why a certificate, key or CA bundle cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which file it is.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file holds nothing usable.
    #[error("{what} {path} {problem}")]
    Content {
        /// Which file it is.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The files do not make a server configuration together.
    #[error("the certificate {cert} and key {key} do not go together: {problem}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        problem: String,
    },
}

/// The files' contents as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

/// The listener's TLS configuration, replaced when the files change.
pub struct RotatingTls {
    settings: TlsSettings,
    current: RwLock<(Arc<ServerConfig>, Contents)>,
}

impl std::fmt::Debug for RotatingTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatingTls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl RotatingTls {
    /// Reads the files; fails if they cannot serve.
    pub fn load(settings: TlsSettings) -> Result<Arc<Self>, TlsError> {
        let contents = read(&settings)?;
        let config = server_config(&settings, &contents)?;
        Ok(Arc::new(Self {
            settings,
            current: RwLock::new((config, contents)),
        }))
    }

    /// Whether clients must present certificates.
    pub fn requires_client_certificates(&self) -> bool {
        self.settings.client_ca.is_some()
    }

    /// The acceptor for a new connection, with the newest good pair.
    pub fn acceptor(&self) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        TlsAcceptor::from(current.0.clone())
    }

    /// Checks the files every [`RELOAD_EVERY`](crate::security::watched::RELOAD_EVERY) until the gateway stops.
    pub fn spawn_reloader(self: &Arc<Self>) {
        every_reload(self, Self::reload);
    }

    /// Takes the files' new contents if they changed and work; otherwise
    /// keeps the current pair (and says why, once per broken version).
    fn reload(&self) {
        let contents = match read(&self.settings) {
            Ok(contents) => contents,
            Err(err) => {
                warn!(error = %err, "TLS files unreadable; still serving the previous certificate");
                return;
            }
        };
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        if current.1 == contents {
            return;
        }
        drop(current);
        match server_config(&self.settings, &contents) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = (config, contents);
                info!(cert = %self.settings.cert.display(), "TLS certificate reloaded; new connections use it");
            }
            Err(err) => {
                // Remember the broken version so it is reported once, not
                // every second; the working config stays.
                let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
                current.1 = contents;
                warn!(error = %err, "new TLS files rejected; still serving the previous certificate");
            }
        }
    }
}

/// The bytes of the `what` file at `path`.
pub(crate) fn file(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn read(settings: &TlsSettings) -> Result<Contents, TlsError> {
    Ok(Contents {
        cert: file("certificate", &settings.cert)?,
        key: file("key", &settings.key)?,
        client_ca: settings
            .client_ca
            .as_deref()
            .map(|path| file("client CA bundle", path))
            .transpose()?,
    })
}

/// The PEM certificates in `pem`.
pub(crate) fn certificates(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let content = |problem: String| TlsError::Content {
        what,
        path: path.to_owned(),
        problem,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| content(format!("is not valid PEM: {err}")))?;
    if certs.is_empty() {
        return Err(content("holds no PEM CERTIFICATE block".to_owned()));
    }
    Ok(certs)
}

/// The PEM private key in `pem` (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn private_key(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|err| TlsError::Content {
        what,
        path: path.to_owned(),
        problem: format!("holds no usable private key: {err}"),
    })
}

fn server_config(
    settings: &TlsSettings,
    contents: &Contents,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = certificates("certificate", &settings.cert, &contents.cert)?;
    let key = private_key("key", &settings.key, &contents.key)?;
    let pair = |problem: String| TlsError::Pair {
        cert: settings.cert.clone(),
        key: settings.key.clone(),
        problem,
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| pair(e.to_string()))?;
    let builder = match (&settings.client_ca, &contents.client_ca) {
        (Some(path), Some(pem)) => {
            builder.with_client_cert_verifier(client_verifier(path, pem, provider)?)
        }
        _ => builder.with_no_client_auth(),
    };
    // Fails unless the key is the certificate's.
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| pair(e.to_string()))?;
    // gRPC is HTTP/2; clients that negotiate ALPN must be offered it.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

fn client_verifier(
    path: &Path,
    pem: &[u8],
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates("client CA bundle", path, pem)? {
        roots.add(cert).map_err(|err| TlsError::Content {
            what: "client CA bundle",
            path: path.to_owned(),
            problem: format!("holds a certificate that cannot be a trust anchor: {err}"),
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|err| TlsError::Content {
            what: "client CA bundle",
            path: path.to_owned(),
            problem: format!("cannot verify clients: {err}"),
        })
}
