//! System calls for the container's first process, which shares the
//! monitor's memory from `clone` to `exec` (`CLONE_VM`, docs/ctr.md,
//! "Namespace order"): each is a bare `syscall` instruction, so none sets
//! the C library's `errno` (a thread-local variable, and the thread-local
//! area is the monitor's), takes one of its locks or, like its `setresuid`,
//! signals the monitor's threads. The child allocates nothing either.
//!
//! x86-64 only, as the rest of Oxbow.

use std::arch::asm;
use std::ffi::CStr;

/// A system call's result: the value, or the error number.
pub type Ret = Result<usize, i32>;

fn check(ret: isize) -> Ret {
    if (-4095..0).contains(&ret) {
        Err(-ret as i32)
    } else {
        Ok(ret as usize)
    }
}

/// One system call with up to six arguments.
///
/// # Safety
/// The arguments must be what system call `nr` expects: pointers to
/// memory of the right size that stays valid for the call.
pub unsafe fn call(nr: libc::c_long, a: [usize; 6]) -> Ret {
    let ret: isize;
    // SAFETY: the caller vouches for the arguments; `syscall` clobbers
    // rcx and r11 only, and the kernel may read and write memory (no
    // `nomem`).
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            in("r9") a[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    check(ret)
}

/// A system call whose arguments are integers, or pointers the caller got
/// from references (made into integers with `as usize`).
macro_rules! sys {
    ($nr:expr $(, $a:expr)* $(,)?) => {{
        let mut args = [0usize; 6];
        let given: &[usize] = &[$($a as usize),*];
        let mut i = 0;
        while i < given.len() {
            args[i] = given[i];
            i += 1;
        }
        // SAFETY: every use passes integers or pointers to live memory of
        // the size the call reads or writes.
        unsafe { $crate::rawsys::call($nr, args) }
    }};
}
pub(crate) use sys;

/// `struct clone_args` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`).
#[repr(C)]
#[derive(Default)]
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

/// The entry point of a process started by [`clone3_vm`] or [`clone_vm`]:
/// it must never return (it execs or exits).
pub type Entry = extern "C" fn(usize) -> !;

/// `clone3` with `CLONE_VM` in `args.flags` and a stack in `args`: the
/// new process runs `entry(arg)` on that stack, sharing this process's
/// memory. Returns its pid.
///
/// # Safety
/// `args` must describe a stack that nothing else uses and that outlives
/// the new process's use of this memory (until it execs or exits), and
/// `entry` must only use memory that stays valid and unchanged that long,
/// make its system calls through this module and allocate nothing.
pub unsafe fn clone3_vm(args: &CloneArgs, entry: Entry, arg: usize) -> Ret {
    let args = args as *const CloneArgs as usize;
    // SAFETY: the caller's.
    unsafe {
        clone_into(
            libc::SYS_clone3,
            args,
            std::mem::size_of::<CloneArgs>(),
            entry,
            arg,
        )
    }
}

/// The older `clone` system call with `CLONE_VM` in `flags`, for kernels
/// without `clone3`: as [`clone3_vm`], the new process runs `entry(arg)`
/// on the stack whose top is `stack_top`.
///
/// # Safety
/// As for [`clone3_vm`].
pub unsafe fn clone_vm(flags: u64, stack_top: usize, entry: Entry, arg: usize) -> Ret {
    // SAFETY: the caller's.
    unsafe { clone_into(libc::SYS_clone, flags as usize, stack_top, entry, arg) }
}

/// System call `nr` (`clone3` or `clone`) with its first two arguments
/// (the rest zero: `clone`'s parent and child tid pointers and its TLS,
/// which `clone3` does not read); where it returns 0, in the new process,
/// `entry(arg)` is called.
///
/// # Safety
/// As for [`clone3_vm`]: the arguments ask for `CLONE_VM` and a stack.
unsafe fn clone_into(nr: libc::c_long, a0: usize, a1: usize, entry: Entry, arg: usize) -> Ret {
    let ret: isize;
    // SAFETY: as documented; in the new process the kernel has set the
    // stack pointer to the top of the given stack (16-byte aligned), so
    // the `call` leaves it as a function expects, and nothing returns
    // into this function there (`ud2` if `entry` ever did).
    unsafe {
        asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r13",
            "call r12",
            "ud2",
            "2:",
            inlateout("rax") nr as isize => ret,
            in("rdi") a0,
            in("rsi") a1,
            in("rdx") 0usize,
            in("r10") 0usize,
            in("r8") 0usize,
            in("r12") entry as usize,
            in("r13") arg,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    check(ret)
}

/// A stack for the new process: mapped here, with a guard page below it,
/// unmapped when dropped (once the new process has execed or ended).
pub struct Stack {
    base: *mut libc::c_void,
    len: usize,
}

impl Stack {
    const GUARD: usize = 4096;

    /// A stack of `size` bytes (a multiple of the page size).
    pub fn new(size: usize) -> std::io::Result<Stack> {
        let len = size + Stack::GUARD;
        // SAFETY: a fresh anonymous mapping, touching no existing memory.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let stack = Stack { base, len };
        // SAFETY: the lowest page of the mapping just made.
        if unsafe { libc::mprotect(base, Stack::GUARD, libc::PROT_NONE) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The lowest usable address.
    pub fn bottom(&self) -> usize {
        self.base as usize + Stack::GUARD
    }

    /// The usable size.
    pub fn size(&self) -> usize {
        self.len - Stack::GUARD
    }

    /// The top (the stack grows down from it).
    pub fn top(&self) -> usize {
        self.base as usize + self.len
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, used by nothing any more.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// A path, name or message of at most 159 bytes, built without
/// allocating.
pub struct Name {
    buf: [u8; 160],
    len: usize,
}

impl Name {
    pub fn new() -> Name {
        Name {
            buf: [0; 160],
            len: 0,
        }
    }

    /// Appends `bytes` (cut at 159 bytes in all).
    pub fn push(mut self, bytes: &[u8]) -> Name {
        for &b in bytes {
            if self.len + 1 < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        self
    }

    /// Appends `n` in decimal.
    pub fn number(self, mut n: u32) -> Name {
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..])
    }

    /// The bytes without the terminating NUL.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// A pointer to the NUL-terminated name.
    pub fn ptr(&self) -> usize {
        self.buf.as_ptr() as usize
    }
}

impl Default for Name {
    fn default() -> Name {
        Name::new()
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds, by the bare system call (the child
/// may not touch the C library's state; the monitor compares its own
/// readings with the child's).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let _ = sys!(
        libc::SYS_clock_gettime,
        libc::CLOCK_MONOTONIC,
        &mut ts as *mut libc::timespec
    );
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The address of a C string, for [`sys!`].
pub fn cstr(s: &CStr) -> usize {
    s.as_ptr() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_built_without_allocating_and_cut_at_159_bytes() {
        let n = Name::new().push(b"/dev/pts/").number(0);
        assert_eq!(n.bytes(), b"/dev/pts/0");
        let n = Name::new().push(b"dev/tty").number(4_294_967_295);
        assert_eq!(n.bytes(), b"dev/tty4294967295");
        let long = Name::new().push(&[b'a'; 200]);
        assert_eq!(long.bytes().len(), 159);
        // SAFETY: the buffer is NUL-terminated after the bytes.
        let c = unsafe { CStr::from_ptr(long.ptr() as *const libc::c_char) };
        assert_eq!(c.to_bytes().len(), 159);
    }

    #[test]
    fn raw_calls_return_values_and_error_numbers() {
        assert_eq!(sys!(libc::SYS_getpid), Ok(std::process::id() as usize));
        assert_eq!(
            sys!(libc::SYS_close, -1i32 as usize),
            Err(libc::EBADF),
            "close(-1)"
        );
    }

    #[test]
    fn a_process_sharing_memory_runs_on_its_own_stack_and_exits() {
        use std::sync::atomic::{AtomicU32, Ordering};
        static SEEN: AtomicU32 = AtomicU32::new(0);
        extern "C" fn entry(arg: usize) -> ! {
            SEEN.store(arg as u32, Ordering::SeqCst);
            let _ = sys!(libc::SYS_exit, 7);
            unreachable!()
        }
        let stack = Stack::new(64 * 1024).unwrap();
        let args = CloneArgs {
            flags: libc::CLONE_VM as u64,
            exit_signal: libc::SIGCHLD as u64,
            stack: stack.bottom() as u64,
            stack_size: stack.size() as u64,
            ..Default::default()
        };
        // SAFETY: the stack is this test's, the entry touches only SEEN.
        let pid = match unsafe { clone3_vm(&args, entry, 42) } {
            Ok(pid) => pid as i32,
            Err(libc::ENOSYS) => {
                // SAFETY: as above.
                unsafe {
                    clone_vm(
                        (libc::CLONE_VM | libc::SIGCHLD) as u64,
                        stack.top(),
                        entry,
                        42,
                    )
                }
                .unwrap() as i32
            }
            Err(e) => panic!("clone3: {e}"),
        };
        let status =
            nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).expect("waitpid");
        assert_eq!(
            status,
            nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid), 7)
        );
        assert_eq!(SEEN.load(Ordering::SeqCst), 42);
    }
}
