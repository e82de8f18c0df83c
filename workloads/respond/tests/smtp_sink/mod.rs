//! An SMTP submission server on 127.0.0.1 speaking just enough ESMTP (RFC 5321) with
//! STARTTLS (RFC 3207) and AUTH PLAIN (RFC 4616) to receive one message per session,
//! recording what it saw. It refuses MAIL before STARTTLS, as a submission server
//! configured for required TLS does. Hand-written because the maintained sink crates
//! (mailin-embedded) bring their own TLS stack; this one uses the rustls the client
//! is tested against, with a throwaway rcgen certificate for 127.0.0.1.

use std::sync::{Arc, Mutex};

use base64::Engine;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Debug, Clone, Default)]
pub struct Session {
    /// Whether the connection was encrypted before MAIL FROM.
    pub tls_before_mail: bool,
    /// The decoded AUTH PLAIN response (`\0user\0password`).
    pub auth: Option<String>,
    pub mail_from: String,
    pub rcpt: Vec<String>,
    pub data: String,
}

pub struct Sink {
    pub port: u16,
    pub cert: CertificateDer<'static>,
    sessions: Arc<Mutex<Vec<Session>>>,
}

impl Sink {
    pub fn sessions(&self) -> Vec<Session> {
        self.sessions.lock().unwrap().clone()
    }
}

pub async fn start() -> Sink {
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert = generated.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let sessions = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&sessions);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, recorded) = (acceptor.clone(), Arc::clone(&recorded));
            tokio::spawn(async move {
                if let Some(session) = serve(tcp, acceptor).await {
                    recorded.lock().unwrap().push(session);
                }
            });
        }
    });
    Sink {
        port,
        cert,
        sessions,
    }
}

/// The plain-text part up to STARTTLS, then the rest of the session over TLS.
async fn serve(tcp: TcpStream, acceptor: tokio_rustls::TlsAcceptor) -> Option<Session> {
    let mut plain = BufReader::new(tcp);
    reply(&mut plain, "220 sink.kastell.test ESMTP ready").await?;
    loop {
        let line = read_line(&mut plain).await?;
        let verb = line.to_ascii_uppercase();
        if verb.starts_with("EHLO") {
            reply(
                &mut plain,
                "250-sink.kastell.test\r\n250-8BITMIME\r\n250 STARTTLS",
            )
            .await?;
        } else if verb == "STARTTLS" {
            reply(&mut plain, "220 2.0.0 ready to start TLS").await?;
            break;
        } else if verb == "QUIT" {
            return None;
        } else {
            reply(&mut plain, "530 5.7.0 must issue a STARTTLS command first").await?;
        }
    }
    let tls = acceptor.accept(plain.into_inner()).await.ok()?;
    let mut session = Session {
        tls_before_mail: true,
        ..Session::default()
    };
    converse(BufReader::new(tls), &mut session).await?;
    Some(session)
}

async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: BufReader<S>,
    session: &mut Session,
) -> Option<()> {
    loop {
        let line = read_line(&mut stream).await?;
        let verb = line.to_ascii_uppercase();
        if verb.starts_with("EHLO") {
            reply(
                &mut stream,
                "250-sink.kastell.test\r\n250-8BITMIME\r\n250 AUTH PLAIN",
            )
            .await?;
        } else if verb.starts_with("AUTH PLAIN") {
            let encoded = line.split_whitespace().nth(2)?;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()?;
            session.auth = Some(String::from_utf8_lossy(&decoded).into_owned());
            reply(&mut stream, "235 2.7.0 authentication successful").await?;
        } else if verb.starts_with("MAIL FROM:") {
            session.mail_from = line[10..].trim().to_owned();
            reply(&mut stream, "250 2.1.0 ok").await?;
        } else if verb.starts_with("RCPT TO:") {
            session.rcpt.push(line[8..].trim().to_owned());
            reply(&mut stream, "250 2.1.5 ok").await?;
        } else if verb == "DATA" {
            reply(&mut stream, "354 end data with <CR><LF>.<CR><LF>").await?;
            loop {
                let data_line = read_line(&mut stream).await?;
                if data_line == "." {
                    break;
                }
                session.data.push_str(&data_line);
                session.data.push('\n');
            }
            reply(&mut stream, "250 2.0.0 queued as K1").await?;
        } else if verb == "QUIT" {
            reply(&mut stream, "221 2.0.0 bye").await?;
            return Some(());
        } else if verb == "RSET" || verb == "NOOP" {
            reply(&mut stream, "250 2.0.0 ok").await?;
        } else {
            reply(&mut stream, "502 5.5.1 unrecognised command").await?;
        }
    }
}

async fn read_line<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut BufReader<S>) -> Option<String> {
    let mut line = String::new();
    let n = stream.read_line(&mut line).await.ok()?;
    (n > 0).then(|| line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn reply<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufReader<S>,
    text: &str,
) -> Option<()> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.extend_from_slice(b"\r\n");
    stream.get_mut().write_all(&bytes).await.ok()?;
    stream.get_mut().flush().await.ok()
}
