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

/// Attaches the classic BPF `program` to `socket` (`SO_ATTACH_FILTER`):
/// the kernel then queues only what the program accepts, and the process
/// is not woken for the rest.
pub fn attach_filter(
    socket: &impl std::os::fd::AsRawFd,
    program: &[libc::sock_filter],
) -> io::Result<()> {
    let len = u16::try_from(program.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "BPF program too long"))?;
    let prog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `program`, which outlives the call; the
    // kernel copies the instructions and writes nothing through the
    // pointer. The option's length is that of the `sock_fprog` passed. A
    // descriptor that is not an open socket gets an error, nothing worse.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&raw const prog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
