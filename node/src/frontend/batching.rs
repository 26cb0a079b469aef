//! One TCP segment per extended-protocol round trip.
//!
//! Step in the flow: pgwire flushes after BindComplete, RowDescription,
//! CommandComplete and ReadyForQuery, so a prepared point query went out as
//! four `sendto`s, each waking the client. PostgreSQL buffers its output
//! until Sync or Flush. We get the same on the wire with `TCP_CORK`: after
//! the first Sync of a connection the socket stays corked, and every Sync
//! or Flush (and a simple query, and a COPY that waits for the client)
//! uncorks it, which pushes everything out at once, then corks it again.
//! Nothing waits for a timer: a message the client must see before it can
//! go on is always followed by one of those releases.

#[cfg(target_os = "linux")]
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

/// The cork of one connection's socket.
#[derive(Debug, Default)]
pub struct Cork {
    #[cfg(target_os = "linux")]
    fd: Option<RawFd>,
    on: AtomicBool,
}

impl Cork {
    /// For the socket `stream` (no-op on other systems than Linux).
    pub fn for_socket(stream: &tokio::net::TcpStream) -> Self {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            Cork {
                fd: Some(stream.as_raw_fd()),
                on: AtomicBool::new(false),
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = stream;
            Cork::default()
        }
    }

    #[cfg(target_os = "linux")]
    fn set(&self, on: bool) {
        let Some(fd) = self.fd else {
            return;
        };
        let value: libc::c_int = i32::from(on);
        // SAFETY: `fd` is this connection's socket, open for as long as the
        // connection's handlers run (they are the only callers); the option
        // value is a valid c_int of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_CORK,
                std::ptr::addr_of!(value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            self.on.store(on, Ordering::Relaxed);
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn set(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    /// Holds further output until [`Cork::release`].
    pub fn hold(&self) {
        if !self.on.load(Ordering::Relaxed) {
            self.set(true);
        }
    }

    /// Sends what is held, now.
    pub fn release(&self) {
        if self.on.load(Ordering::Relaxed) {
            self.set(false);
        }
    }

    /// Whether output is held.
    pub fn is_held(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn held_output_arrives_on_release() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut buf = vec![0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            buf
        });
        let (mut server, _) = listener.accept().await.unwrap();
        server.set_nodelay(true).unwrap();
        let cork = Cork::for_socket(&server);
        cork.hold();
        assert!(cork.is_held());
        server.write_all(b"he").await.unwrap();
        server.write_all(b"llo").await.unwrap();
        cork.release();
        assert!(!cork.is_held());
        assert_eq!(client.await.unwrap(), b"hello");
    }
}
