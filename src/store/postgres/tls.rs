//! TLS for PostgreSQL connections: the `sslmode` and `sslrootcert` parameters of a store
//! URL, read as libpq reads them, and the rustls connector they make.
//!
//! | `sslmode`           | TLS                        | the server's certificate                  |
//! |---------------------|----------------------------|-------------------------------------------|
//! | `disable`           | never                      | -                                         |
//! | `prefer` (default)  | if the server offers it    | not checked                               |
//! | `require`           | always                     | not checked, unless `sslrootcert` is set: then as `verify-ca` |
//! | `verify-ca`         | always                     | signed by a root of `sslrootcert`         |
//! | `verify-full`       | always                     | as `verify-ca`, and made out to the host  |
//!
//! Without `sslrootcert`, `verify-ca` and `verify-full` trust the usual web roots (Mozilla's,
//! built in). tokio-postgres knows only the first three modes, so this module takes both
//! parameters out of the URL before tokio-postgres reads it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode as DriverMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`, the five values medic supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    const ALL: [(&'static str, SslMode); 5] = [
        ("disable", SslMode::Disable),
        ("prefer", SslMode::Prefer),
        ("require", SslMode::Require),
        ("verify-ca", SslMode::VerifyCa),
        ("verify-full", SslMode::VerifyFull),
    ];

    fn parse(s: &str) -> Option<SslMode> {
        Self::ALL
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, m)| *m)
    }
}

/// The TLS settings of a store URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tls {
    pub mode: SslMode,
    /// `sslrootcert`: a PEM file of the certificates the server's chain must lead to.
    pub root_cert: Option<PathBuf>,
}

impl Tls {
    /// Takes `sslmode` and `sslrootcert` out of `url`: returns the URL without them, for
    /// tokio-postgres, and the settings they made. The error names the parameter.
    pub(crate) fn from_url(url: &str) -> Result<(String, Tls), String> {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_string(), Tls::default()));
        };
        let mut tls = Tls::default();
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => {
                    let value = decode(value);
                    tls.mode = SslMode::parse(&value).ok_or_else(|| {
                        format!(
                            "url parameter sslmode={value:?} is not one of disable, prefer, \
                             require, verify-ca, verify-full"
                        )
                    })?;
                }
                "sslrootcert" => {
                    let value = decode(value);
                    if value.is_empty() {
                        return Err("url parameter sslrootcert is empty: give a file".into());
                    }
                    tls.root_cert = Some(PathBuf::from(value.into_owned()));
                }
                _ => kept.push(pair),
            }
        }
        let url = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok((url, tls))
    }

    /// What tokio-postgres itself does: whether it asks for TLS, and whether it insists.
    pub(crate) fn driver_mode(&self) -> DriverMode {
        match self.mode {
            SslMode::Disable => DriverMode::Disable,
            SslMode::Prefer => DriverMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => DriverMode::Require,
        }
    }

    /// The connector, with the roots loaded: an unreadable `sslrootcert` is an error here,
    /// at start, not at each connection.
    pub(crate) fn connector(&self) -> Result<MakeRustlsConnect, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = match &self.root_cert {
            Some(path) => Some(Arc::new(load_roots(path)?)),
            None => None,
        };
        // libpq: `require` with a root certificate checks the chain, as `verify-ca` does.
        let check = match (self.mode, roots) {
            (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, None) => Check::Nothing,
            (SslMode::Require | SslMode::VerifyCa, Some(roots)) => Check::Chain(roots),
            (SslMode::VerifyCa, None) => Check::Chain(Arc::new(web_roots())),
            (SslMode::VerifyFull, Some(roots)) => Check::Full(roots),
            (SslMode::VerifyFull, None) => Check::Full(Arc::new(web_roots())),
        };
        let verifier: Arc<dyn ServerCertVerifier> = match check {
            Check::Nothing => Arc::new(Unchecked {
                algorithms: provider.signature_verification_algorithms,
            }),
            Check::Chain(roots) => Arc::new(ChainOnly(webpki(roots, &provider)?)),
            Check::Full(roots) => webpki(roots, &provider)?,
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }
}

/// How much of the server's certificate is checked.
enum Check {
    Nothing,
    /// The chain leads to one of these roots.
    Chain(Arc<RootCertStore>),
    /// The chain, and the host name.
    Full(Arc<RootCertStore>),
}

/// A URL parameter's value, percent-decoded as libpq does.
fn decode(value: &str) -> std::borrow::Cow<'_, str> {
    percent_encoding::percent_decode_str(value).decode_utf8_lossy()
}

fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let what = || format!("url parameter sslrootcert={}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: cannot read it: {e}", what()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM file of certificates: {e}", what()))?;
    if certs.is_empty() {
        return Err(format!("{}: the file holds no certificate", what()));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("{}: a certificate cannot be used: {e}", what()))?;
    }
    Ok(roots)
}

fn web_roots() -> RootCertStore {
    webpki_roots::TLS_SERVER_ROOTS.iter().cloned().collect()
}

fn webpki(
    roots: Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, String> {
    WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| format!("TLS: {e}"))
}

/// `prefer`, and `require` without roots: any certificate is taken (the session is
/// encrypted, but the server not authenticated), though the handshake's signatures are
/// still checked against it.
#[derive(Debug)]
struct Unchecked {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `verify-ca`: the full check, less the host name. webpki checks the name last, after
/// the chain, so a name error means the chain was good.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, rest: &str, mode: SslMode, root: Option<&str>) {
        let (got, tls) = Tls::from_url(url).unwrap();
        assert_eq!(got, rest, "{url}");
        assert_eq!(tls.mode, mode, "{url}");
        assert_eq!(tls.root_cert.as_deref(), root.map(Path::new), "{url}");
    }

    #[test]
    fn sslmode_and_sslrootcert_come_out_of_the_url() {
        let db = "postgres://medic@db:5432/medic";
        check(db, db, SslMode::Prefer, None);
        check(&format!("{db}?sslmode=disable"), db, SslMode::Disable, None);
        check(&format!("{db}?sslmode=require"), db, SslMode::Require, None);
        check(
            &format!("{db}?connect_timeout=3&sslmode=verify-full&sslrootcert=/etc/ca%20roots.pem&application_name=x"),
            &format!("{db}?connect_timeout=3&application_name=x"),
            SslMode::VerifyFull,
            Some("/etc/ca roots.pem"),
        );
        check(
            &format!("{db}?sslmode=verify-ca"),
            db,
            SslMode::VerifyCa,
            None,
        );
    }

    #[test]
    fn an_unknown_sslmode_names_the_parameter() {
        let err = Tls::from_url("postgres://db/medic?sslmode=verify_full").unwrap_err();
        assert_eq!(
            err,
            "url parameter sslmode=\"verify_full\" is not one of disable, prefer, require, \
             verify-ca, verify-full"
        );
        let err = Tls::from_url("postgres://db/medic?sslrootcert=").unwrap_err();
        assert_eq!(err, "url parameter sslrootcert is empty: give a file");
    }

    /// The store refuses the URL before it connects, naming the parameter, without the
    /// password.
    #[test]
    fn the_store_refuses_an_unknown_sslmode_at_open() {
        let url = "postgres://medic:s3cret@127.0.0.1:1/medic?sslmode=allow";
        let err = crate::store::Store::open(url, Default::default())
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            err,
            "store url \"postgres://medic:<redacted>@127.0.0.1:1/medic?sslmode=allow\": url \
             parameter sslmode=\"allow\" is not one of disable, prefer, require, verify-ca, \
             verify-full"
        );
    }

    #[test]
    fn an_unusable_sslrootcert_is_an_error_at_start() {
        let tls = |root: &str| Tls {
            mode: SslMode::VerifyFull,
            root_cert: Some(root.into()),
        };
        let missing = tls("/nonexistent/root.pem").connector().err().unwrap();
        assert!(
            missing.starts_with("url parameter sslrootcert=/nonexistent/root.pem: cannot read it"),
            "{missing}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let none = tls(empty.to_str().unwrap()).connector().err().unwrap();
        assert!(none.ends_with("the file holds no certificate"), "{none}");
    }

    #[test]
    fn every_mode_makes_a_connector() {
        let root = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/store/postgres/testdata/unrelated-ca.pem"
        );
        for (_, mode) in SslMode::ALL {
            for root_cert in [None, Some(root.into())] {
                let tls = Tls { mode, root_cert };
                assert!(tls.connector().is_ok(), "{tls:?}");
            }
        }
    }
}
