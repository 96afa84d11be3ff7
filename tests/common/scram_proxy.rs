//! A SCRAM-SHA-256 checking proxy in front of tansu, because tansu 0.6 does not check.
//!
//! With `--authentication`, tansu-auth accepts any PLAIN password (its callback only asks
//! that one is present), and marks a SCRAM connection authenticated even when the client's
//! proof is wrong: rsasl answers a bad proof with an `e=invalid-proof` message but no
//! error, and tansu's SaslAuthenticateService then records the session as finished and
//! answers error code NONE. So a broker-side refusal has to come from here.
//!
//! The proxy answers the SASL requests itself, per the Kafka protocol (SaslHandshake v1,
//! then SaslAuthenticate v0/v1 carrying RFC 5802 SCRAM messages), checks the client's
//! proof against the one user and password it was given (4096 PBKDF2 iterations, as
//! Kafka's minimum), and only then connects to tansu and passes bytes through both ways.
//! A wrong proof, or another user, gets SASL_AUTHENTICATION_FAILED (58) with Apache
//! Kafka's message, and the connection is closed. An ApiVersions request before
//! authentication (as the Java client sends) is passed to tansu; any other request before
//! authentication closes the connection, as Kafka does.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const API_VERSIONS: i16 = 18;
const SASL_HANDSHAKE: i16 = 17;
const SASL_AUTHENTICATE: i16 = 36;
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const SASL_AUTHENTICATION_FAILED: i16 = 58;
const MECHANISM: &str = "SCRAM-SHA-256";
const ITERATIONS: u32 = 4096;

/// The proxy; it stops accepting when the test process ends (its threads are detached).
pub struct ScramProxy {
    pub addr: String,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    authenticated: AtomicUsize,
    refused: AtomicUsize,
}

impl ScramProxy {
    /// Listens on `port` in front of `upstream`, for `username` with `password`.
    pub fn start(port: u16, upstream: &str, username: &str, password: &str) -> ScramProxy {
        let addr = format!("127.0.0.1:{port}");
        let listener = TcpListener::bind(&addr).unwrap();
        let user = Arc::new(StoredUser::new(username, password));
        let counts = Arc::new(Counts::default());
        let (upstream, shared) = (upstream.to_string(), Arc::clone(&counts));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (user, counts, upstream) =
                    (Arc::clone(&user), Arc::clone(&shared), upstream.clone());
                std::thread::spawn(move || {
                    let _ = serve(client, &upstream, &user, &counts);
                });
            }
        });
        ScramProxy { addr, counts }
    }

    /// Connections that proved the password and were passed on to the broker.
    pub fn authenticated(&self) -> usize {
        self.counts.authenticated.load(Ordering::SeqCst)
    }

    /// SCRAM exchanges refused (wrong proof or unknown user).
    pub fn refused(&self) -> usize {
        self.counts.refused.load(Ordering::SeqCst)
    }
}

/// What a SCRAM server keeps of a password (RFC 5802 section 3): never the password.
struct StoredUser {
    name: String,
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl StoredUser {
    fn new(name: &str, password: &str) -> StoredUser {
        let salt = uuid::Uuid::new_v4().as_bytes().to_vec();
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, ITERATIONS, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        StoredUser {
            name: name.to_string(),
            salt,
            stored_key: Sha256::digest(&client_key).to_vec(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }
}

fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// One client connection: the SASL exchange, then bytes both ways.
fn serve(
    mut client: TcpStream,
    upstream: &str,
    user: &StoredUser,
    counts: &Counts,
) -> io::Result<()> {
    let mut broker: Option<TcpStream> = None;
    let mut scram = Scram::WaitingClientFirst;
    while !matches!(scram, Scram::Done) {
        let request = read_frame(&mut client)?;
        let mut body = Reader(&request);
        let (api_key, version, correlation_id) = (body.i16(), body.i16(), body.i32());
        body.string(); // client id (request header v1: every version used here)
        let mut response = correlation_id.to_be_bytes().to_vec();
        match (api_key, version) {
            (API_VERSIONS, _) => {
                if broker.is_none() {
                    broker = Some(TcpStream::connect(upstream)?);
                }
                let broker = broker.as_mut().unwrap();
                write_frame(broker, &request)?;
                let answer = read_frame(broker)?;
                write_frame(&mut client, &answer)?;
                continue;
            }
            (SASL_HANDSHAKE, 1) => {
                let asked = body.string();
                let code = if asked == MECHANISM {
                    0
                } else {
                    UNSUPPORTED_SASL_MECHANISM
                };
                response.extend(code.to_be_bytes());
                response.extend(1i32.to_be_bytes());
                put_string(&mut response, Some(MECHANISM));
            }
            (SASL_AUTHENTICATE, 0 | 1) => {
                let token = body.bytes();
                let answer = scram.step(user, token);
                let refused = answer.is_none();
                let code = if refused {
                    SASL_AUTHENTICATION_FAILED
                } else {
                    0
                };
                response.extend(code.to_be_bytes());
                put_string(&mut response, refused.then_some(
                    "Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-256",
                ));
                let token = answer.unwrap_or_default();
                response.extend((token.len() as i32).to_be_bytes());
                response.extend(token);
                if version == 1 {
                    response.extend(0i64.to_be_bytes()); // session lifetime: none
                }
                write_frame(&mut client, &response)?;
                if refused {
                    counts.refused.fetch_add(1, Ordering::SeqCst);
                    return Ok(());
                }
                continue;
            }
            _ => return Ok(()), // before authentication: hang up, as Kafka does
        }
        write_frame(&mut client, &response)?;
    }
    let broker = match broker {
        Some(broker) => broker,
        None => TcpStream::connect(upstream)?,
    };
    counts.authenticated.fetch_add(1, Ordering::SeqCst);
    relay(client, broker)
}

/// Copies bytes both ways until either side closes.
fn relay(client: TcpStream, broker: TcpStream) -> io::Result<()> {
    let (mut client_in, mut broker_out) = (client.try_clone()?, broker.try_clone()?);
    let upward = std::thread::spawn(move || {
        let _ = io::copy(&mut client_in, &mut broker_out);
        let _ = broker_out.shutdown(Shutdown::Both);
    });
    let (mut broker_in, mut client_out) = (broker, client);
    let _ = io::copy(&mut broker_in, &mut client_out);
    let _ = client_out.shutdown(Shutdown::Both);
    let _ = upward.join();
    Ok(())
}

/// The server side of one SCRAM-SHA-256 exchange.
enum Scram {
    WaitingClientFirst,
    WaitingClientFinal {
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    Done,
}

impl Scram {
    /// The next server message for the client's `token`, or `None` to refuse.
    fn step(&mut self, user: &StoredUser, token: &[u8]) -> Option<Vec<u8>> {
        let message = std::str::from_utf8(token).ok()?;
        match std::mem::replace(self, Scram::Done) {
            Scram::WaitingClientFirst => {
                // "n,,n=user,r=nonce": no channel binding, no authorization id.
                let bare = message.strip_prefix("n,,")?;
                let name = attribute(bare, "n")?
                    .replace("=2C", ",")
                    .replace("=3D", "=");
                let client_nonce = attribute(bare, "r")?;
                if name != user.name {
                    return None;
                }
                let nonce = format!("{client_nonce}{}", uuid::Uuid::new_v4().simple());
                let server_first =
                    format!("r={nonce},s={},i={ITERATIONS}", BASE64.encode(&user.salt));
                let answer = server_first.clone().into_bytes();
                *self = Scram::WaitingClientFinal {
                    client_first_bare: bare.to_string(),
                    server_first,
                    nonce,
                };
                Some(answer)
            }
            Scram::WaitingClientFinal {
                client_first_bare,
                server_first,
                nonce,
            } => {
                let (without_proof, proof) = message.rsplit_once(",p=")?;
                if attribute(without_proof, "c")? != BASE64.encode("n,,")
                    || attribute(without_proof, "r")? != nonce
                {
                    return None;
                }
                let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
                let signature = hmac(&user.stored_key, auth_message.as_bytes());
                let proof = BASE64.decode(proof).ok()?;
                if proof.len() != signature.len() {
                    return None;
                }
                let client_key: Vec<u8> =
                    proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
                if Sha256::digest(&client_key).as_slice() != user.stored_key {
                    return None;
                }
                let verifier = hmac(&user.server_key, auth_message.as_bytes());
                Some(format!("v={}", BASE64.encode(verifier)).into_bytes())
            }
            Scram::Done => None,
        }
    }
}

/// The value of `key=` in a SCRAM message's comma-separated attributes.
fn attribute<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message
        .split(',')
        .find_map(|part| part.strip_prefix(key)?.strip_prefix('='))
}

/// Big-endian reads from a request body; a short body reads as zeros and empties.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    fn i16(&mut self) -> i16 {
        self.take(2).try_into().map_or(0, i16::from_be_bytes)
    }

    fn i32(&mut self) -> i32 {
        self.take(4).try_into().map_or(0, i32::from_be_bytes)
    }

    fn string(&mut self) -> String {
        let len = self.i16();
        String::from_utf8_lossy(self.take(len.max(0) as usize)).into_owned()
    }

    fn bytes(&mut self) -> &'a [u8] {
        let len = self.i32();
        self.take(len.max(0) as usize)
    }
}

/// Appends a Kafka (nullable) string.
fn put_string(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => {
            out.extend((text.len() as i16).to_be_bytes());
            out.extend(text.as_bytes());
        }
        None => out.extend((-1i16).to_be_bytes()),
    }
}

fn read_frame(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size)?;
    let size = i32::from_be_bytes(size);
    if !(0..=1 << 20).contains(&size) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame size"));
    }
    let mut frame = vec![0; size as usize];
    stream.read_exact(&mut frame)?;
    Ok(frame)
}

fn write_frame(stream: &mut TcpStream, frame: &[u8]) -> io::Result<()> {
    stream.write_all(&(frame.len() as i32).to_be_bytes())?;
    stream.write_all(frame)
}
