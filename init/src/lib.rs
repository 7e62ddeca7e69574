//! Oxbow's PID 1.
//!
//! The same static binary runs twice during a boot:
//!
//! 1. **Stage 1**, from the initramfs ([`stage1`]): mounts the pseudo
//!    filesystems, loads the kernel modules the boot needs, finds the boot
//!    medium by its label, mounts the squashfs system image under a writable
//!    overlay and switches root to it.
//! 2. **Stage 2**, as PID 1 of the system ([`stage2`]): hostname, cgroup v2,
//!    the seed volume, then the [`supervisor`], which runs the services of
//!    the service table and the transient units asked for over the control
//!    socket ([`control`]), and shuts the machine down in order.
//!
//! Invoked as `oxctl`, the binary is the command-line client of the control
//! socket.

pub mod cmdline;
pub mod console;
pub mod control;
pub mod fsutil;
pub mod modules;
pub mod power;
pub mod seed;
pub mod service;
pub mod stage1;
pub mod stage2;
pub mod supervisor;
pub mod sys;
