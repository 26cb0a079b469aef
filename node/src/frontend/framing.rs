//! One client connection's message loop, with a check of the message framing.
//!
//! Step in the flow: the accept loop hands each socket to [`serve_socket`].
//! It negotiates TLS with pgwire, then reads the client's messages through
//! [`CheckedIo`], which follows the framing of the (decrypted) byte stream:
//! after the untyped startup packet every message is a type byte and a
//! 32-bit length that counts itself, so a length below 4 cannot be real.
//! pgwire 0.41 decodes such a message anyway (as an empty query), and would
//! then misread everything after it; PostgreSQL answers `FATAL 08P01
//! invalid message length` and closes. We do the same: the read fails, the
//! client gets that error and only this connection ends. Every well-framed
//! message goes to pgwire's own `process_message`, as in its
//! `process_socket`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pgwire::api::{ClientInfo, ErrorHandler, PgWireConnectionState, PgWireServerHandlers};
use pgwire::error::ErrorInfo;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{Framed, FramedParts};

/// How long a client may take from connecting to finishing authentication.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Request codes of untyped packets after which another untyped packet
/// follows (SSLRequest, GSSENCRequest).
const NEGOTIATION_CODES: [u32; 2] = [80_877_103, 80_877_104];

/// Follows message boundaries in the bytes a client sends.
#[derive(Debug, Default)]
pub struct FrameCheck {
    /// Past the startup packet: messages start with a type byte.
    typed: bool,
    header: [u8; 8],
    /// Header bytes of the current message collected so far.
    have: usize,
    /// Body bytes of the current message still to come.
    skip: u64,
}

impl FrameCheck {
    /// Bytes of the header: type byte and length when typed; length and
    /// request code of an untyped packet.
    fn header_len(&self) -> usize {
        if self.typed {
            5
        } else {
            8
        }
    }

    /// Takes the next bytes of the stream; an error names the bad length.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), String> {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = usize::try_from(self.skip)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.skip -= n as u64;
                data = &data[n..];
                continue;
            }
            let need = self.header_len();
            let take = (need - self.have).min(data.len());
            self.header[self.have..self.have + take].copy_from_slice(&data[..take]);
            self.have += take;
            data = &data[take..];
            if self.have < need {
                break;
            }
            self.have = 0;
            let at = usize::from(self.typed);
            let len = i32::from_be_bytes([
                self.header[at],
                self.header[at + 1],
                self.header[at + 2],
                self.header[at + 3],
            ]);
            if self.typed {
                if len < 4 {
                    return Err(format!("invalid message length {len}"));
                }
                self.skip = u64::try_from(len - 4).unwrap_or(0);
            } else {
                if len < 8 {
                    return Err(format!("invalid length of startup packet {len}"));
                }
                self.skip = u64::try_from(len - 8).unwrap_or(0);
                let code = u32::from_be_bytes([
                    self.header[4],
                    self.header[5],
                    self.header[6],
                    self.header[7],
                ]);
                self.typed = !NEGOTIATION_CODES.contains(&code);
            }
        }
        Ok(())
    }
}

/// A client stream whose reads pass through a [`FrameCheck`].
pub struct CheckedIo<T> {
    inner: T,
    check: FrameCheck,
}

impl<T: AsyncRead + Unpin> AsyncRead for CheckedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let this = self.get_mut();
                this.check
                    .feed(&buf.filled()[before..])
                    .map_err(|m| io::Error::new(io::ErrorKind::InvalidData, m))?;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CheckedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Serves one client socket until it disconnects, sends Terminate, or
/// sends a message that cannot be decoded.
pub async fn serve_socket<H: PgWireServerHandlers>(
    socket: TcpStream,
    tls: Option<TlsAcceptor>,
    handlers: H,
) -> io::Result<()> {
    let startup_timeout = tokio::time::sleep(STARTUP_TIMEOUT);
    tokio::pin!(startup_timeout);
    let negotiated = tokio::select! {
        _ = &mut startup_timeout => return Ok(()),
        s = negotiate_tls(socket, tls) => s?,
    };
    // No TLS configured, but the client opened with a TLS handshake.
    let Some(framed) = negotiated else {
        return Ok(());
    };
    let old = framed.into_parts();
    let mut check = FrameCheck::default();
    if let Err(m) = check.feed(&old.read_buf) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, m));
    }
    let mut parts = FramedParts::new(
        CheckedIo {
            inner: old.io,
            check,
        },
        old.codec,
    );
    parts.read_buf = old.read_buf;
    parts.write_buf = old.write_buf;
    let mut socket = Framed::from_parts(parts);

    let startup = handlers.startup_handler();
    let simple = handlers.simple_query_handler();
    let extended = handlers.extended_query_handler();
    let copy = handlers.copy_handler();
    let cancel = handlers.cancel_handler();
    let errors = handlers.error_handler();
    loop {
        let in_startup = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        let next = if in_startup {
            tokio::select! {
                _ = &mut startup_timeout => return Ok(()),
                m = socket.next() => m,
            }
        } else {
            socket.next().await
        };
        let msg = match next {
            None => return Ok(()),
            Some(Ok(PgWireFrontendMessage::Terminate(_))) => return Ok(()),
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                // Undecodable input: tell the client why, then close.
                let info = ErrorInfo::new("FATAL".into(), "08P01".into(), e.to_string());
                let _ = socket
                    .send(PgWireBackendMessage::ErrorResponse(info.into()))
                    .await;
                return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
            }
        };
        let extended_query = match socket.state() {
            PgWireConnectionState::CopyInProgress(ext) => ext,
            _ => msg.is_extended_query(),
        };
        if let Err(mut e) = process_message(
            msg,
            &mut socket,
            Arc::clone(&startup),
            Arc::clone(&simple),
            Arc::clone(&extended),
            Arc::clone(&copy),
            Arc::clone(&cancel),
        )
        .await
        {
            errors.on_error(&socket, &mut e);
            process_error(&mut socket, e, extended_query).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(t: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![t];
        v.extend_from_slice(&(i32::try_from(body.len()).unwrap() + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn startup() -> Vec<u8> {
        let body = b"\x00\x03\x00\x00user\0quiver\0\0";
        let mut v = (i32::try_from(body.len()).unwrap() + 4)
            .to_be_bytes()
            .to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn well_framed_streams_pass_in_any_split() {
        let mut stream = startup();
        stream.extend(typed(b'p', b"secret\0"));
        stream.extend(typed(b'Q', b"SELECT 1\0"));
        stream.extend(typed(b'S', b""));
        for chunk in 1..stream.len() {
            let mut c = FrameCheck::default();
            for part in stream.chunks(chunk) {
                c.feed(part).unwrap();
            }
            assert!(c.typed);
            assert_eq!((c.have, c.skip), (0, 0), "chunk {chunk}");
        }
    }

    #[test]
    fn a_length_below_four_is_refused_even_split() {
        let mut stream = startup();
        stream.extend(typed(b'Q', b"SELECT 1\0"));
        stream.extend([b'Q', 0, 0, 0, 2]);
        let mut c = FrameCheck::default();
        let mut err = None;
        for b in &stream {
            if let Err(e) = c.feed(std::slice::from_ref(b)) {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err.as_deref(), Some("invalid message length 2"));
        let mut neg = FrameCheck::default();
        let mut s = startup();
        s.extend([b'Q', 0xff, 0xff, 0xff, 0xff]);
        assert!(neg.feed(&s).is_err());
    }

    #[test]
    fn negotiation_packets_keep_the_stream_untyped() {
        let mut ssl = 8i32.to_be_bytes().to_vec();
        ssl.extend(80_877_103u32.to_be_bytes());
        let mut c = FrameCheck::default();
        c.feed(&ssl).unwrap();
        assert!(!c.typed);
        c.feed(&startup()).unwrap();
        assert!(c.typed);
        let mut short = FrameCheck::default();
        assert!(short.feed(&[0, 0, 0, 4, 0, 3, 0, 0]).is_err());
    }
}
