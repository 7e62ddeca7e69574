//! Virtual machines: their configurations and their running VMMs.

pub mod live;
pub mod pending;
pub mod runtime;
pub mod store;

pub use runtime::{VmRuntime, VmState};
pub use store::{GuestKind, VmStore};

use serde_json::{json, Value};

/// Keys whose `GET …/config` value Proxmox's schema types as a number
/// (integer, number, or boolean, which its JSON writes as 0 or 1), per
/// guest kind; every other value is text.
const VM_NUMBERS: &[&str] = &[
    "acpi",
    "allow-ksm",
    "autostart",
    "balloon",
    "ciupgrade",
    "cores",
    "cpulimit",
    "cpuunits",
    "freeze",
    "keephugepages",
    "kvm",
    "localtime",
    "migrate_downtime",
    "migrate_speed",
    "numa",
    "onboot",
    "protection",
    "reboot",
    "shares",
    "smp",
    "snaptime",
    "sockets",
    "tablet",
    "tdf",
    "template",
    "vcpus",
];
const CT_NUMBERS: &[&str] = &[
    "console",
    "cores",
    "cpulimit",
    "cpuunits",
    "debug",
    "memory",
    "onboot",
    "protection",
    "swap",
    "template",
    "tty",
    "unprivileged",
];

/// A configuration value as `GET …/config` answers it: a number where
/// Proxmox's schema has one and the text is one, else the text.
pub fn typed_value(kind: GuestKind, key: &str, text: &str) -> Value {
    let numbers = match kind {
        GuestKind::Qemu => VM_NUMBERS,
        GuestKind::Lxc => CT_NUMBERS,
    };
    if !numbers.contains(&key) {
        return json!(text);
    }
    if let Ok(n) = text.parse::<i64>() {
        return json!(n);
    }
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') => {
            json!(x)
        }
        _ => json!(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_values_are_typed_as_proxmox_types_them() {
        let vm = |k, v| typed_value(GuestKind::Qemu, k, v);
        assert_eq!(vm("cores", "2"), json!(2));
        assert_eq!(vm("numa", "1"), json!(1));
        assert_eq!(vm("cpulimit", "1.5"), json!(1.5));
        assert_eq!(
            vm("memory", "2048"),
            json!("2048"),
            "a property string in PVE 8"
        );
        assert_eq!(vm("name", "42"), json!("42"));
        assert_eq!(vm("cores", "many"), json!("many"));
        assert_eq!(vm("cpulimit", "NaN"), json!("NaN"));
        let ct = |k, v| typed_value(GuestKind::Lxc, k, v);
        assert_eq!(ct("memory", "512"), json!(512));
        assert_eq!(ct("unprivileged", "1"), json!(1));
        assert_eq!(ct("hostname", "1"), json!("1"));
    }
}
