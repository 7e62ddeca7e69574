//! Checks of single configuration keys of VMs and containers.
//!
//! [`validate_vm_key`] and [`validate_ct_key`] return the reason a value is
//! refused, ready to be put into the API's per-parameter `errors` map.
//! Keys the parser kept but Oxbow does not know are refused too, with a
//! message saying so.

use crate::boot::BootOrder;
use crate::config::is_valid_snapshot_name;
use crate::container::{ContainerFeatures, ContainerNet, MountPoint, MAX_CT_NET_INDEX};
use crate::disk::{parse_index, DiskBus, DiskDevice};
use crate::net::{NetDevice, MAX_VM_NET_INDEX};
use crate::property_string::excerpt;
use crate::schema::{check_format, check_value, parse_integer, rule, Format, Rule, ValueKind};
use crate::volume::VolumeId;

/// The `ostype` values of a VM.
pub const VM_OSTYPES: &[&str] = &[
    "other", "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10", "win11", "l24",
    "l26", "solaris",
];

/// The `ostype` values of a container.
pub const CT_OSTYPES: &[&str] = &[
    "debian",
    "devuan",
    "ubuntu",
    "centos",
    "fedora",
    "opensuse",
    "archlinux",
    "alpine",
    "gentoo",
    "nixos",
    "unmanaged",
];

/// The largest VM memory Proxmox allows, in MiB (4 TiB).
pub const MAX_VM_MEMORY_MIB: i64 = 4 * 1024 * 1024;

/// The most bytes Proxmox stores as a description.
const MAX_DESCRIPTION_BYTES: usize = 8192;

/// The longest kernel command line x86 Linux accepts, in bytes.
const MAX_CMDLINE_BYTES: usize = 2048;

/// Checks a DNS name as Proxmox's `dns-name` format does: labels of
/// letters, digits and inner `-`, separated by dots.
pub fn check_dns_name(name: &str) -> Result<(), String> {
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        match (bytes.first(), bytes.last()) {
            (Some(first), Some(last)) => {
                first.is_ascii_alphanumeric()
                    && last.is_ascii_alphanumeric()
                    && bytes
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            }
            _ => false,
        }
    };
    if name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err("expected a DNS name: letters, digits and '-' (not first or last), labels separated by '.'".to_string())
    }
}

fn check_volume(text: &str) -> Result<(), String> {
    VolumeId::parse(text).map(|_| ())
}

fn check_cputype(text: &str) -> Result<(), String> {
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        Ok(())
    } else {
        Err(
            "expected a CPU model name such as host, kvm64, x86-64-v2-AES or custom-NAME"
                .to_string(),
        )
    }
}

fn check_cpu_flags(text: &str) -> Result<(), String> {
    for flag in text.split(';') {
        let name = flag.strip_prefix(['+', '-']).unwrap_or_default();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(format!("'{}' is not +FLAG or -FLAG", excerpt(flag)));
        }
    }
    Ok(())
}

fn check_phys_bits(text: &str) -> Result<(), String> {
    match (text, parse_integer(text)) {
        ("host", _) => Ok(()),
        (_, Some(8..=64)) => Ok(()),
        _ => Err("expected 8 to 64, or host".to_string()),
    }
}

fn check_vendor_id(text: &str) -> Result<(), String> {
    if (1..=12).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err("expected 1 to 12 letters or digits".to_string())
    }
}

const CPU_RULES: &[Rule] = &[
    rule("cputype", ValueKind::Text(check_cputype)),
    rule("flags", ValueKind::Text(check_cpu_flags)),
    rule("hidden", ValueKind::Boolean),
    rule("hv-vendor-id", ValueKind::Text(check_vendor_id)),
    rule("phys-bits", ValueKind::Text(check_phys_bits)),
    rule("guest-phys-bits", ValueKind::Integer { min: 32, max: 64 }),
];

const MEMORY_RULES: &[Rule] = &[rule(
    "current",
    ValueKind::Integer {
        min: 16,
        max: MAX_VM_MEMORY_MIB,
    },
)];

fn check_description(text: &str) -> Result<(), String> {
    if text.len() > MAX_DESCRIPTION_BYTES {
        return Err(format!(
            "a description has at most {MAX_DESCRIPTION_BYTES} bytes, this one has {}",
            text.len()
        ));
    }
    Ok(())
}

fn check_kind(key: &str, value: &str, kind: ValueKind) -> Result<(), String> {
    check_value(key, value, kind).map_err(|e| e.to_string())
}

fn check_property_format(
    value: &str,
    rules: &[Rule],
    default_key: &'static str,
) -> Result<(), String> {
    let format = Format {
        rules: &[rules],
        default_key: Some(default_key),
        aliases: &[],
    };
    check_format(&format, value)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Keys that record snapshot state, valid in both VMs and containers.
fn validate_snapshot_key(key: &str, value: &str) -> Option<Result<(), String>> {
    Some(match key {
        "parent" => {
            if is_valid_snapshot_name(value) {
                Ok(())
            } else {
                Err(format!("'{}' is not a snapshot name", excerpt(value)))
            }
        }
        "snaptime" => check_kind(
            key,
            value,
            ValueKind::Integer {
                min: 0,
                max: i64::MAX,
            },
        ),
        "vmstate" => check_volume(value),
        _ => return None,
    })
}

fn indexed(key: &str, prefix: &str, max: u32) -> bool {
    key.strip_prefix(prefix)
        .and_then(parse_index)
        .is_some_and(|index| index <= max)
}

/// Checks one key of a VM configuration. Returns why the value (or the key)
/// is refused.
pub fn validate_vm_key(key: &str, value: &str) -> Result<(), String> {
    if let Some(result) = validate_snapshot_key(key, value) {
        return result;
    }
    if DiskBus::from_key(key).is_some() {
        return DiskDevice::parse(key, value)
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    if indexed(key, "net", MAX_VM_NET_INDEX) {
        return NetDevice::parse(value)
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    match key {
        "name" => check_dns_name(value),
        "memory" => check_property_format(value, MEMORY_RULES, "current"),
        "cores" | "sockets" => check_kind(key, value, ValueKind::Integer { min: 1, max: 4096 }),
        "cpu" => check_property_format(value, CPU_RULES, "cputype"),
        "ostype" => check_kind(key, value, ValueKind::Enum(VM_OSTYPES)),
        "onboot" => check_kind(key, value, ValueKind::Boolean),
        "description" => check_description(value),
        "boot" => BootOrder::parse(value)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        "kernel" | "initrd" => check_volume(value),
        "cmdline" => {
            if value.len() > MAX_CMDLINE_BYTES {
                Err(format!(
                    "a kernel command line has at most {MAX_CMDLINE_BYTES} bytes"
                ))
            } else {
                Ok(())
            }
        }
        _ => Err(format!("unknown VM configuration key '{}'", excerpt(key))),
    }
}

/// Whether [`validate_vm_key`] knows `key`.
pub fn is_known_vm_key(key: &str) -> bool {
    const KEYS: &[&str] = &[
        "name",
        "memory",
        "cores",
        "sockets",
        "cpu",
        "ostype",
        "onboot",
        "description",
        "boot",
        "kernel",
        "initrd",
        "cmdline",
        "parent",
        "snaptime",
        "vmstate",
    ];
    KEYS.contains(&key) || DiskBus::from_key(key).is_some() || indexed(key, "net", MAX_VM_NET_INDEX)
}

/// Checks one key of a container configuration. Returns why the value (or
/// the key) is refused.
pub fn validate_ct_key(key: &str, value: &str) -> Result<(), String> {
    if let Some(result) = validate_snapshot_key(key, value) {
        return result;
    }
    if key == "rootfs" || key.starts_with("mp") && is_known_ct_key(key) {
        return MountPoint::parse(key, value)
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    if indexed(key, "net", MAX_CT_NET_INDEX) {
        return ContainerNet::parse(value)
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    match key {
        "hostname" => check_dns_name(value).and_then(|()| {
            if value.len() > 255 {
                Err("a host name has at most 255 characters".to_string())
            } else {
                Ok(())
            }
        }),
        "memory" => check_kind(
            key,
            value,
            ValueKind::Integer {
                min: 16,
                max: i64::MAX,
            },
        ),
        "swap" => check_kind(
            key,
            value,
            ValueKind::Integer {
                min: 0,
                max: i64::MAX,
            },
        ),
        "cores" => check_kind(key, value, ValueKind::Integer { min: 1, max: 8192 }),
        "ostype" => check_kind(key, value, ValueKind::Enum(CT_OSTYPES)),
        "arch" => check_kind(
            key,
            value,
            ValueKind::Enum(&["amd64", "i386", "arm64", "armhf", "riscv32", "riscv64"]),
        ),
        "onboot" | "unprivileged" => check_kind(key, value, ValueKind::Boolean),
        "features" => ContainerFeatures::parse(value)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        "description" => check_description(value),
        _ => Err(format!(
            "unknown container configuration key '{}'",
            excerpt(key)
        )),
    }
}

/// Whether [`validate_ct_key`] knows `key`.
pub fn is_known_ct_key(key: &str) -> bool {
    const KEYS: &[&str] = &[
        "hostname",
        "memory",
        "swap",
        "cores",
        "ostype",
        "arch",
        "onboot",
        "unprivileged",
        "features",
        "description",
        "rootfs",
        "parent",
        "snaptime",
        "vmstate",
    ];
    KEYS.contains(&key)
        || indexed(key, "mp", crate::container::MAX_MOUNT_POINT_INDEX)
        || indexed(key, "net", MAX_CT_NET_INDEX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_good_vm_values() {
        for (key, value) in [
            ("name", "web01.example.com"),
            ("memory", "2048"),
            ("memory", "current=4096"),
            ("cores", "4"),
            ("sockets", "1"),
            ("cpu", "host"),
            ("cpu", "x86-64-v2-AES"),
            ("cpu", "cputype=kvm64,flags=+aes;-pcid,hidden=1"),
            ("ostype", "l26"),
            ("onboot", "1"),
            ("description", "anything at all"),
            ("boot", "order=scsi0;ide2;net0"),
            ("kernel", "local:iso/vmlinuz-6.1"),
            ("initrd", "local:iso/initrd.img-6.1"),
            ("cmdline", "console=ttyS0 root=/dev/vda1"),
            ("net0", "virtio=BC:24:11:00:00:01,bridge=vmbr0"),
            ("scsi0", "local-lvm:vm-100-disk-0,size=32G"),
            ("ide2", "none,media=cdrom"),
            ("parent", "before-upgrade"),
            ("snaptime", "1717171717"),
            ("vmstate", "local-lvm:vm-100-state-before-upgrade"),
        ] {
            assert_eq!(validate_vm_key(key, value), Ok(()), "{key}: {value}");
            assert!(is_known_vm_key(key), "{key}");
        }
    }

    #[test]
    fn refuses_bad_vm_values() {
        for (key, value, needle) in [
            ("name", "web_01", "DNS name"),
            ("name", "-web", "DNS name"),
            ("name", "web..example", "DNS name"),
            ("memory", "8", "between 16 and 4194304"),
            ("memory", "4194305", "between 16"),
            ("memory", "current=lots", "expected an integer"),
            ("cores", "0", "between 1"),
            ("sockets", "two", "expected an integer"),
            ("cpu", "host,flags=aes", "+FLAG"),
            ("cpu", "host,reported-model=qemu64", "unknown property"),
            ("cpu", "host,phys-bits=7", "8 to 64"),
            ("ostype", "linux", "expected one of"),
            ("onboot", "2", "expected 0 or 1"),
            ("kernel", "/boot/vmlinuz", "volume id"),
            ("initrd", "local:", "empty"),
            ("net40", "virtio", "unknown VM configuration key"),
            ("scsi0", "local-lvm:vm-100-disk-0,size=32GB", "not a size"),
            ("parent", "x", "not a snapshot name"),
            (
                "hookscript",
                "local:snippets/x.pl",
                "unknown VM configuration key 'hookscript'",
            ),
        ] {
            let error = validate_vm_key(key, value).unwrap_err();
            assert!(error.contains(needle), "{key}: {value}: {error}");
        }
        assert!(validate_vm_key("description", &"x".repeat(8193)).is_err());
        assert!(validate_vm_key("cmdline", &"x".repeat(2049)).is_err());
        assert!(!is_known_vm_key("hookscript"));
    }

    #[test]
    fn container_keys() {
        for (key, value) in [
            ("hostname", "ct1"),
            ("rootfs", "local-lvm:vm-101-disk-0,size=8G"),
            ("mp0", "local-lvm:vm-101-disk-1,mp=/srv,backup=1"),
            ("net0", "name=eth0,bridge=vmbr0,ip=dhcp,type=veth"),
            ("features", "nesting=1,keyctl=1"),
            ("unprivileged", "1"),
            ("ostype", "debian"),
            ("arch", "amd64"),
            ("memory", "512"),
            ("swap", "0"),
        ] {
            assert_eq!(validate_ct_key(key, value), Ok(()), "{key}: {value}");
            assert!(is_known_ct_key(key), "{key}");
        }
        assert!(validate_ct_key("ostype", "l26").is_err());
        assert!(validate_ct_key("mpx", "x")
            .unwrap_err()
            .contains("unknown container"));
        assert!(validate_ct_key("lxc.apparmor.profile", "unconfined").is_err());
    }
}
