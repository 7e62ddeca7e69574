//! Assembling the hybrid BIOS+UEFI ISO with grub-mkrescue.

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;
use std::process::Command;

use crate::cmd;
use crate::error::{Error, IoContext, Result};
use crate::grub::VOLUME_ID;

/// Layout of the ISO tree.
pub const VMLINUZ: &str = "boot/vmlinuz";
/// The initramfs on the ISO.
pub const INITRD: &str = "boot/initrd.img";
/// The GRUB configuration on the ISO.
pub const GRUB_CFG: &str = "boot/grub/grub.cfg";
/// The system image on the ISO.
pub const SYSTEM_SFS: &str = "oxbow/system.sfs";
/// The pinned versions file on the ISO.
pub const VERSIONS: &str = "oxbow/versions.txt";

/// Byte offset of the ISO9660 primary volume descriptor (sector 16).
const PVD_OFFSET: usize = 16 * 2048;

/// Reads the volume id from the primary volume descriptor of an ISO9660
/// image (its first 34 KiB suffice).
pub fn volume_id(head: &[u8]) -> Option<String> {
    let pvd = head.get(PVD_OFFSET..PVD_OFFSET + 72)?;
    if pvd[0] != 1 || &pvd[1..6] != b"CD001" {
        return None;
    }
    Some(String::from_utf8_lossy(&pvd[40..72]).trim_end().to_owned())
}

/// Runs grub-mkrescue on `tree`, writing `out`, and checks the volume id.
pub fn mkrescue(tree: &Path, out: &Path) -> Result<()> {
    cmd::run(
        Command::new("grub-mkrescue")
            .arg("-o")
            .arg(out)
            .arg(tree)
            .args(["--", "-volid", VOLUME_ID]),
    )?;
    let mut head = vec![0u8; PVD_OFFSET + 2048];
    File::open(out)
        .and_then(|mut f| f.read_exact(&mut head))
        .ctx("read", out)?;
    match volume_id(&head) {
        Some(id) if id == VOLUME_ID => Ok(()),
        other => Err(Error::Input(format!(
            "{} has volume id {other:?}, expected {VOLUME_ID:?}",
            out.display()
        ))),
    }
}

/// Moves the finished ISO into place atomically.
pub fn publish(tmp: &Path, out: &Path) -> Result<()> {
    fs::rename(tmp, out).ctx("rename into", out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_volume_id() {
        let mut head = vec![0u8; PVD_OFFSET + 2048];
        head[PVD_OFFSET] = 1;
        head[PVD_OFFSET + 1..PVD_OFFSET + 6].copy_from_slice(b"CD001");
        let mut id = [b' '; 32];
        id[..5].copy_from_slice(b"OXBOW");
        head[PVD_OFFSET + 40..PVD_OFFSET + 72].copy_from_slice(&id);
        assert_eq!(volume_id(&head).unwrap(), "OXBOW");
        head[PVD_OFFSET + 1] = b'X';
        assert_eq!(volume_id(&head), None);
        assert_eq!(volume_id(&[0u8; 100]), None);
    }
}
