//! The few places netd needs `unsafe`.

use std::io;

use socket2::Socket;
use tokio::io::unix::AsyncFd;

/// Registers an owned socket with the Tokio reactor.
pub fn async_socket(socket: Socket) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: `Socket` owns its descriptor, which stays open and the same
    // until the socket is dropped; the `AsyncFd` owns the socket, so the
    // descriptor outlives the registration, and `Socket::as_raw_fd`
    // always returns that descriptor.
    unsafe { AsyncFd::register(socket) }.map_err(|e| e.into_parts().1)
}
