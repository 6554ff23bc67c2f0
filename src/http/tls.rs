//! TLS on the listeners (`tls_cert`, `tls_key`, `tls_client_ca`): rustls with the
//! aws-lc-rs provider, HTTP/2 and HTTP/1.1 offered by ALPN, optional client certificates, and the
//! reload of the files while the server runs.
//!
//! The certificate, key and client CA are read at start-up (a bad file stops the start) and
//! again on SIGHUP or when one of the files changes (checked every [`TLS_RELOAD_POLL_MS`]).
//! A reload builds a new [`ServerConfig`] and swaps it in: handshakes that begin afterwards
//! use it, connections already open keep theirs. A reload that fails (a missing file, bad
//! PEM, a key that does not match the certificate) keeps the configuration in use and logs
//! an error.

use crate::limits::{TLS_PEM_BYTES_MAX, TLS_RELOAD_POLL_MS};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// The ALPN protocols the listeners offer, preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The files of the listeners' TLS configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain (PEM), the server's own certificate first.
    pub cert: PathBuf,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by one of these CAs (PEM).
    pub client_ca: Option<PathBuf>,
}

/// The aws-lc-rs provider: the one cryptography the build carries (the provider reqwest,
/// the remote CLI's client, uses too; no OpenSSL), with rustls' default suites, TLS 1.2
/// and 1.3, and the post-quantum key exchange X25519MLKEM768.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The bytes of a PEM file, at most [`TLS_PEM_BYTES_MAX`]; errors name the key and the path.
pub fn read_pem(key: &str, path: &Path) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(TLS_PEM_BYTES_MAX as u64 + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("{key} {}: cannot read: {e}", path.display()))?;
    if bytes.len() > TLS_PEM_BYTES_MAX {
        return Err(format!(
            "{key} {}: larger than {TLS_PEM_BYTES_MAX} bytes (TLS_PEM_BYTES_MAX)",
            path.display()
        ));
    }
    Ok(bytes)
}

/// Every certificate of the PEM file at `path` (at least one).
pub fn read_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read_pem(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{key} {}: not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{key} {}: no certificate in it (expected PEM \"-----BEGIN CERTIFICATE-----\")",
            path.display()
        ));
    }
    Ok(certs)
}

/// The first private key of the PEM file at `path`.
pub fn read_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read_pem(key, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "{key} {}: no private key in it (expected PEM \"-----BEGIN PRIVATE KEY-----\", \
             RSA or EC)",
            path.display()
        ),
        e => format!("{key} {}: not valid PEM: {e}", path.display()),
    })
}

/// The CAs of the PEM file at `path`, as a root store.
pub fn read_roots(key: &str, path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(key, path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{key} {}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

/// Reads the files and builds the listeners' TLS configuration. The error is one line
/// naming the key, the file and what is wrong.
pub fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let certs = read_certs("tls_cert", &files.cert)?;
    let key = read_key("tls_key", &files.key)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let roots = read_roots("tls_client_ca", path)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("tls_client_ca {}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "tls_cert {} and tls_key {}: {e}",
            files.cert.display(),
            files.key.display()
        )
    })?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// What identifies a version of a file: modification time, length and inode (a renamed-in
/// file or a swapped symlink changes the inode even within one clock tick).
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let ino = 0;
    Some((meta.modified().ok()?, meta.len(), ino))
}

/// The listeners' TLS configuration in use, swapped by reloads. Each accepted connection
/// reads it once, for its handshake.
#[derive(Clone)]
pub struct Tls {
    files: Arc<TlsFiles>,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl Tls {
    /// Loads the files (see [`load`]).
    pub fn open(files: TlsFiles) -> Result<Tls, String> {
        let config = load(&files)?;
        Ok(Tls {
            files: Arc::new(files),
            current: Arc::new(RwLock::new(config)),
        })
    }

    /// The acceptor for a new connection, with the configuration in use now.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        tokio_rustls::TlsAcceptor::from(config)
    }

    /// Reads the files again; on success, new handshakes use them. On failure the
    /// configuration in use stays.
    pub fn reload(&self) -> Result<(), String> {
        let config = load(&self.files)?;
        match self.current.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }

    fn stamps(&self) -> Vec<Stamp> {
        let f = &self.files;
        let mut out = vec![stamp(&f.cert), stamp(&f.key)];
        if let Some(ca) = &f.client_ca {
            out.push(stamp(ca));
        }
        out
    }

    /// Reloads on every SIGHUP and whenever a file's stamp changes,
    /// until `stop` resolves. Each outcome is logged: info on success, error (with the
    /// reason) on failure; a change that fails is tried again at the next change, not at
    /// every poll.
    pub async fn watch(
        self,
        mut hangup: Hangup,
        stop: impl std::future::Future<Output = ()> + Send,
    ) {
        let mut stop = std::pin::pin!(stop);
        let mut seen = self.stamps();
        let mut poll = tokio::time::interval(Duration::from_millis(TLS_RELOAD_POLL_MS));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.tick().await;
        loop {
            let why = tokio::select! {
                _ = hangup.recv() => "SIGHUP",
                _ = poll.tick() => {
                    if self.stamps() == seen {
                        continue;
                    }
                    "a file changed"
                }
                _ = &mut stop => return,
            };
            // The stamps taken before reading: a SIGHUP is not followed by a second reload of
            // the same files, and a file replaced while this reload reads (a new certificate
            // read with the old key) is read again at the next poll.
            seen = self.stamps();
            let files = &self.files;
            match self.reload() {
                Ok(()) => tracing::info!(
                    cert = %files.cert.display(),
                    key = %files.key.display(),
                    client_ca = ?files.client_ca.as_ref().map(|p| p.display().to_string()),
                    trigger = why,
                    "TLS configuration reloaded; new connections use it"
                ),
                Err(e) => tracing::error!(
                    error = %e,
                    trigger = why,
                    "TLS reload failed; keeping the previous certificate"
                ),
            }
        }
    }
}

/// Whether a TLS stream negotiated HTTP/2.
pub fn is_h2<IO>(stream: &tokio_rustls::server::TlsStream<IO>) -> bool {
    stream.get_ref().1.alpn_protocol() == Some(b"h2")
}

/// SIGHUP, listened to from [`Hangup::listen`] on: from then on the signal no longer ends
/// the process (its default action) but reloads the TLS files (see [`reload_on_hangup`]).
pub struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    /// Installs the handler now (not at the first poll), so a SIGHUP sent once the server
    /// reports listening never kills it.
    pub fn listen() -> Hangup {
        #[cfg(unix)]
        {
            let signal =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            if signal.is_none() {
                tracing::warn!("cannot listen for SIGHUP; TLS files reload only when they change");
            }
            Hangup { signal }
        }
        #[cfg(not(unix))]
        Hangup {}
    }

    /// The next SIGHUP (never, where there is none).
    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.signal {
            if s.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}

/// Until `stop`: with TLS, [`Tls::watch`]; without, every SIGHUP is logged as having
/// nothing to reload (the server is a reloadable service either way: `systemctl reload`
/// never ends it).
pub async fn reload_on_hangup(
    tls: Option<Tls>,
    mut hangup: Hangup,
    stop: impl std::future::Future<Output = ()> + Send,
) {
    match tls {
        Some(tls) => tls.watch(hangup, stop).await,
        None => {
            let mut stop = std::pin::pin!(stop);
            loop {
                tokio::select! {
                    _ = hangup.recv() => tracing::info!("SIGHUP: nothing to reload (TLS is off)"),
                    _ = &mut stop => return,
                }
            }
        }
    }
}
