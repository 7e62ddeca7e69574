//! The seccomp filter of a container: a deny list, like LXC's default
//! profile. Everything is allowed except loading or removing kernel
//! modules, kexec, `open_by_handle_at` (which can reach files outside the
//! container's mounts by handle) and, unless the container has
//! `features: keyctl=1`, `keyctl` (the kernel keyring is not namespaced;
//! `ENOSYS` makes systemd fall back, as Proxmox does).
//!
//! The program is plain classic BPF built here, covering the x86-64, x32
//! and i386 system call tables; any other architecture is allowed through
//! (the kernel only runs those three on an x86-64 host).

use std::io;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// System calls made through the x32 ABI carry this bit.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

/// `BPF_LD | BPF_W | BPF_ABS` (0x00 | 0x00 | 0x20).
const BPF_LD_W_ABS: u16 = 0x20;
/// `BPF_JMP | BPF_JEQ | BPF_K`.
const BPF_JEQ_K: u16 = 0x05 | 0x10;
/// `BPF_JMP | BPF_JGE | BPF_K`.
const BPF_JGE_K: u16 = 0x05 | 0x30;
/// `BPF_ALU | BPF_AND | BPF_K`.
const BPF_AND_K: u16 = 0x04 | 0x50;
/// `BPF_RET | BPF_K`.
const BPF_RET_K: u16 = 0x06;

/// Offsets in `struct seccomp_data`.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;

/// One denied system call: its numbers per table and the errno returned.
struct Denied {
    x86_64: &'static [u32],
    i386: &'static [u32],
    errno: i32,
    name: &'static str,
}

const DENIED: &[Denied] = &[
    Denied {
        name: "init_module",
        x86_64: &[175],
        i386: &[128],
        errno: libc::EPERM,
    },
    Denied {
        name: "finit_module",
        x86_64: &[313],
        i386: &[350],
        errno: libc::EPERM,
    },
    Denied {
        name: "delete_module",
        x86_64: &[176],
        i386: &[129],
        errno: libc::EPERM,
    },
    // 528 is kexec_load in the x32 table.
    Denied {
        name: "kexec_load",
        x86_64: &[246, 528],
        i386: &[283],
        errno: libc::EPERM,
    },
    Denied {
        name: "kexec_file_load",
        x86_64: &[320],
        i386: &[],
        errno: libc::EPERM,
    },
    Denied {
        name: "open_by_handle_at",
        x86_64: &[304],
        i386: &[342],
        errno: libc::EPERM,
    },
];

const KEYCTL: Denied = Denied {
    name: "keyctl",
    x86_64: &[250],
    i386: &[288],
    errno: libc::ENOSYS,
};

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jeq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: BPF_JEQ_K,
        jt,
        jf,
        k,
    }
}

fn jge(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: BPF_JGE_K,
        jt,
        jf,
        k,
    }
}

/// The names of the denied system calls.
pub fn denied_names(allow_keyctl: bool) -> Vec<&'static str> {
    rules(allow_keyctl).map(|d| d.name).collect()
}

fn rules(allow_keyctl: bool) -> impl Iterator<Item = &'static Denied> {
    DENIED.iter().chain((!allow_keyctl).then_some(&KEYCTL))
}

/// One architecture's block: load the number, then a search tree over
/// the denied numbers. The kernel runs the filter once per system call
/// number and architecture when it is installed (to find the calls it
/// can allow without running it again), so the path to "allowed" is kept
/// short: four comparisons or fewer instead of one per denied call.
fn block(numbers: impl Iterator<Item = (u32, i32)>, mask_x32: bool) -> Vec<libc::sock_filter> {
    let mut denied: Vec<(u32, i32)> = numbers.collect();
    denied.sort_unstable();
    let mut out = vec![stmt(BPF_LD_W_ABS, OFFSET_NR)];
    if mask_x32 {
        out.push(stmt(BPF_AND_K, !X32_SYSCALL_BIT));
    }
    out.extend(tree(&denied));
    out
}

/// Code that returns the errno of the loaded number if it is in `sorted`
/// and allows it otherwise; every path ends in a return.
fn tree(sorted: &[(u32, i32)]) -> Vec<libc::sock_filter> {
    if sorted.len() <= 3 {
        let mut out = Vec::new();
        for (nr, errno) in sorted {
            out.push(jeq(*nr, 0, 1));
            out.push(stmt(
                BPF_RET_K,
                SECCOMP_RET_ERRNO | (*errno as u32 & 0xffff),
            ));
        }
        out.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
        return out;
    }
    let (low, high) = sorted.split_at(sorted.len() / 2);
    let pivot = high[0].0;
    let (high, low) = (tree(high), tree(low));
    let mut out = vec![jge(pivot, 0, u8::try_from(high.len()).expect("small tree"))];
    out.extend(high);
    out.extend(low);
    out
}

/// The filter program.
pub fn program(allow_keyctl: bool) -> Vec<libc::sock_filter> {
    let x86 = block(
        rules(allow_keyctl).flat_map(|d| d.x86_64.iter().map(|n| (*n, d.errno))),
        true,
    );
    let i386 = block(
        rules(allow_keyctl).flat_map(|d| d.i386.iter().map(|n| (*n, d.errno))),
        false,
    );
    let mut out = vec![stmt(BPF_LD_W_ABS, OFFSET_ARCH)];
    out.push(jeq(
        AUDIT_ARCH_X86_64,
        0,
        u8::try_from(x86.len()).expect("small block"),
    ));
    out.extend(x86);
    out.push(stmt(BPF_LD_W_ABS, OFFSET_ARCH));
    out.push(jeq(
        AUDIT_ARCH_I386,
        0,
        u8::try_from(i386.len()).expect("small block"),
    ));
    out.extend(i386);
    out.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    out
}

/// Installs the filter on the calling thread.
pub fn install(allow_keyctl: bool) -> io::Result<()> {
    crate::sys::install_seccomp(&program(allow_keyctl))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{in_child, raw_syscall};

    /// Runs `program` as the kernel would for system call `nr` of
    /// architecture `arch` (only the instructions the program uses).
    fn run(program: &[libc::sock_filter], arch: u32, nr: u32) -> u32 {
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let ins = program[pc];
            pc += 1;
            match ins.code {
                BPF_LD_W_ABS if ins.k == OFFSET_NR => a = nr,
                BPF_LD_W_ABS if ins.k == OFFSET_ARCH => a = arch,
                BPF_AND_K => a &= ins.k,
                BPF_JEQ_K | BPF_JGE_K => {
                    let hit = if ins.code == BPF_JEQ_K {
                        a == ins.k
                    } else {
                        a >= ins.k
                    };
                    pc += usize::from(if hit { ins.jt } else { ins.jf });
                }
                BPF_RET_K => return ins.k,
                other => panic!("unexpected instruction {other:#x}"),
            }
        }
    }

    #[test]
    fn every_number_gets_what_the_deny_list_says() {
        for keyctl in [false, true] {
            let program = program(keyctl);
            for (arch, x32) in [
                (AUDIT_ARCH_X86_64, false),
                (AUDIT_ARCH_X86_64, true),
                (AUDIT_ARCH_I386, false),
            ] {
                for nr in 0..1024u32 {
                    let called = if x32 { nr | X32_SYSCALL_BIT } else { nr };
                    let denied = rules(keyctl).find(|d| {
                        if arch == AUDIT_ARCH_I386 {
                            d.i386
                        } else {
                            d.x86_64
                        }
                        .contains(&nr)
                    });
                    let want =
                        denied.map_or(SECCOMP_RET_ALLOW, |d| SECCOMP_RET_ERRNO | d.errno as u32);
                    assert_eq!(
                        run(&program, arch, called),
                        want,
                        "arch {arch:#x} nr {called:#x}"
                    );
                }
            }
            // Other architectures pass.
            assert_eq!(run(&program, 0xc000_00b7, 175), SECCOMP_RET_ALLOW);
        }
    }

    #[test]
    fn program_jumps_stay_inside() {
        let p = program(false);
        for (i, ins) in p.iter().enumerate() {
            if ins.code == BPF_JEQ_K || ins.code == BPF_JGE_K {
                assert!(i + 1 + usize::from(ins.jt.max(ins.jf)) < p.len());
            }
        }
        assert_eq!(p.last().map(|i| i.k), Some(SECCOMP_RET_ALLOW));
        assert!(denied_names(false).contains(&"keyctl"));
        assert!(!denied_names(true).contains(&"keyctl"));
    }

    #[test]
    fn filter_denies_modules_kexec_and_keyctl_and_allows_the_rest() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: installing a filter without no_new_privs needs root");
            return;
        }
        // Codes: 0 all as expected; 10+n the n-th check failed.
        let code = in_child(|| {
            if install(false).is_err() {
                return 9;
            }
            let checks: [(libc::c_long, i32); 5] = [
                (libc::SYS_init_module, libc::EPERM),
                (libc::SYS_finit_module, libc::EPERM),
                (libc::SYS_delete_module, libc::EPERM),
                (libc::SYS_kexec_load, libc::EPERM),
                (libc::SYS_keyctl, libc::ENOSYS),
            ];
            for (n, (nr, errno)) in checks.iter().enumerate() {
                // Null and zero arguments: without the filter these fail
                // with EFAULT, EINVAL, EBADF or ENOSYS, never this way.
                let args = if *nr == libc::SYS_finit_module {
                    [-1, 0, 0, 0]
                } else {
                    [0; 4]
                };
                match raw_syscall(*nr, args) {
                    Err(e) if e == *errno && (*nr != libc::SYS_keyctl || e == libc::ENOSYS) => {}
                    _ => return 10 + n as i32,
                }
            }
            match raw_syscall(libc::SYS_getppid, [0; 4]) {
                Ok(p) if p > 0 => 0,
                _ => 20,
            }
        });
        assert_eq!(code, 0);
        // keyctl is allowed with features: keyctl=1.
        let code = in_child(|| {
            if install(true).is_err() {
                return 9;
            }
            match raw_syscall(libc::SYS_keyctl, [0; 4]) {
                Err(libc::ENOSYS) => 1,
                _ => 0,
            }
        });
        assert_eq!(code, 0);
    }
}
