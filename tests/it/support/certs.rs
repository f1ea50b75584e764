//! Certificates made by the tests: a private CA, a server certificate for
//! 127.0.0.1 and localhost, client certificates naming callers in each way
//! the gateway reads (SPIFFE URI, DNS name, CN), an expired one, and CAs
//! the gateway does not trust.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, SanType,
    date_time_ymd,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A CA that signs certificates into a directory of PEM files.
pub struct Pki {
    dir: PathBuf,
    name: String,
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM).
    pub ca_pem: String,
}

/// A certificate and its key, as PEM files and text.
#[derive(Clone)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

/// How a client certificate names its holder.
pub enum Names<'a> {
    Spiffe(&'a str),
    Dns(&'a str),
    CommonName(&'a str),
}

impl Pki {
    /// A new CA called `name`, its files under `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca = params.self_signed(&key).unwrap();
        let ca_pem = ca.pem();
        std::fs::write(dir.join(format!("{name}-ca.pem")), &ca_pem).unwrap();
        Self {
            dir: dir.to_owned(),
            name: name.to_owned(),
            issuer: Issuer::new(params, key),
            ca_pem,
        }
    }

    /// The CA certificate's file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// A server certificate for 127.0.0.1 and localhost, as `stem`.pem/.key.
    pub fn server(&self, stem: &str) -> Pair {
        let params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        self.sign(stem, params)
    }

    /// A client certificate that names its holder as `names` says; valid
    /// now, or expired in 2020.
    pub fn client(&self, stem: &str, names: Names<'_>, expired: bool) -> Pair {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        match names {
            Names::Spiffe(uri) => {
                params
                    .subject_alt_names
                    .push(SanType::URI(uri.try_into().unwrap()));
                params
                    .distinguished_name
                    .push(DnType::CommonName, "not-this-cn");
            }
            Names::Dns(dns) => {
                params
                    .subject_alt_names
                    .push(SanType::DnsName(dns.try_into().unwrap()));
                params
                    .distinguished_name
                    .push(DnType::CommonName, "not-this-cn");
            }
            Names::CommonName(cn) => params.distinguished_name.push(DnType::CommonName, cn),
        }
        if expired {
            params.not_before = date_time_ymd(2019, 1, 1);
            params.not_after = date_time_ymd(2020, 1, 1);
        }
        self.sign(stem, params)
    }

    fn sign(&self, stem: &str, params: CertificateParams) -> Pair {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let pair = Pair {
            cert: self.dir.join(format!("{stem}.pem")),
            key: self.dir.join(format!("{stem}.key")),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        pair.write_to(&pair.cert, &pair.key);
        pair
    }
}

impl Pair {
    /// Writes the certificate and key to these files (replacing them in
    /// place, as a secret update does).
    pub fn write_to(&self, cert: &Path, key: &Path) {
        std::fs::write(cert, &self.cert_pem).unwrap();
        std::fs::write(key, &self.key_pem).unwrap();
    }
}

/// A TLS channel to the gateway at `addr` trusting `ca_pem`, presenting
/// `identity` if given. Fails as a client does when the handshake fails.
pub async fn tls_channel(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    identity: Option<&Pair>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some(pair) = identity {
        tls = tls.identity(Identity::from_pem(&pair.cert_pem, &pair.key_pem));
    }
    Channel::from_shared(format!("https://127.0.0.1:{}", addr.port()))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}
