//! A VM's `net[n]` network devices, MAC addresses and bridge names.

use std::fmt;

use crate::schema::{check_pairs, rule, Format, PropertyError, Rule, ValueKind};
use crate::PropertyString;

/// The highest `n` of `net[n]` on a VM.
pub const MAX_VM_NET_INDEX: u32 = 31;

/// NIC models a VM can have; the model's name is also the key whose value
/// is the MAC address (`virtio=BC:24:11:00:00:01`).
pub const NIC_MODELS: &[&str] = &[
    "e1000",
    "e1000-82540em",
    "e1000-82544gc",
    "e1000-82545em",
    "e1000e",
    "i82551",
    "i82557b",
    "i82559er",
    "ne2k_isa",
    "ne2k_pci",
    "pcnet",
    "rtl8139",
    "virtio",
    "vmxnet3",
];

/// A unicast MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Parses `XX:XX:XX:XX:XX:XX` (hex, any case). Multicast addresses (the
    /// I/G bit of the first octet set) are refused, as Proxmox does.
    pub fn parse(text: &str) -> Result<MacAddr, String> {
        let mut octets = [0u8; 6];
        let mut parts = text.split(':');
        for octet in &mut octets {
            let part = parts.next().unwrap_or_default();
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err("expected six hex octets XX:XX:XX:XX:XX:XX".to_string());
            }
            *octet = u8::from_str_radix(part, 16)
                .map_err(|_| "expected six hex octets XX:XX:XX:XX:XX:XX".to_string())?;
        }
        if parts.next().is_some() {
            return Err("expected six hex octets XX:XX:XX:XX:XX:XX".to_string());
        }
        if octets[0] & 1 != 0 {
            return Err(
                "multicast address (the first octet is odd); a NIC needs a unicast address"
                    .to_string(),
            );
        }
        Ok(MacAddr(octets))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02X}:{b:02X}:{c:02X}:{d:02X}:{e:02X}:{g:02X}")
    }
}

/// Checks a network interface name as Linux and Proxmox accept it: 1 to 15
/// bytes (the kernel's IFNAMSIZ less the NUL) of letters, digits, `-`, `_`
/// and `.`, and not `.` or `..`.
pub fn check_interface_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("an interface name cannot be empty".to_string());
    }
    if name.len() > 15 {
        return Err(format!(
            "an interface name has at most 15 characters, this one has {}",
            name.chars().count()
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(
            "an interface name may only contain letters, digits, '-', '_' and '.'".to_string(),
        );
    }
    if name == "." || name == ".." {
        return Err("'.' and '..' are not interface names".to_string());
    }
    Ok(())
}

fn check_mac(text: &str) -> Result<(), String> {
    MacAddr::parse(text).map(|_| ())
}

/// Checks a VLAN list `10;20-30;40`, every id 1 to 4094.
pub(crate) fn check_trunks(text: &str) -> Result<(), String> {
    for item in text.split(';') {
        let (low, high) = item.split_once('-').unwrap_or((item, item));
        for id in [low, high] {
            match crate::schema::parse_integer(id) {
                Some(1..=4094) if !id.starts_with(['+', '-']) => {}
                _ => {
                    return Err(format!(
                        "'{}' is not a VLAN id 1-4094",
                        crate::property_string::excerpt(id)
                    ))
                }
            }
        }
    }
    Ok(())
}

const NET_RULES: &[Rule] = &[
    rule("model", ValueKind::Enum(NIC_MODELS)),
    rule("macaddr", ValueKind::Text(check_mac)),
    rule("bridge", ValueKind::Text(check_interface_name)),
    rule("tag", ValueKind::Integer { min: 1, max: 4094 }),
    rule("trunks", ValueKind::Text(check_trunks)),
    rule("firewall", ValueKind::Boolean),
    rule("link_down", ValueKind::Boolean),
    rule("rate", ValueKind::Number),
    rule("mtu", ValueKind::Integer { min: 1, max: 65520 }),
    rule("queues", ValueKind::Integer { min: 0, max: 64 }),
];

/// A VM's network device, `net[n]`.
#[derive(Debug, Clone, PartialEq)]
pub struct NetDevice {
    pub model: String,
    /// Generated when the VM is created if not given.
    pub macaddr: Option<MacAddr>,
    pub bridge: Option<String>,
    pub tag: Option<u16>,
    pub trunks: Option<String>,
    pub firewall: Option<bool>,
    pub link_down: Option<bool>,
    /// MB/s.
    pub rate: Option<f64>,
    pub mtu: Option<u32>,
    pub queues: Option<u32>,
}

impl NetDevice {
    /// Parses and checks a `net[n]` value. The model is given either as
    /// `model=virtio,macaddr=…`, as a bare `virtio`, or as `virtio=MAC`.
    pub fn parse(text: &str) -> Result<NetDevice, PropertyError> {
        let parsed = PropertyString::parse(text)?;
        let mut pairs: Vec<(Option<&str>, &str)> = Vec::new();
        for (key, value) in parsed.iter() {
            match key {
                Some(model) if NIC_MODELS.contains(&model) => {
                    // `virtio=MAC` stands for `model=virtio,macaddr=MAC`.
                    pairs.push((Some("model"), model));
                    pairs.push((Some("macaddr"), value));
                }
                _ => pairs.push((key, value)),
            }
        }
        let format = Format {
            rules: &[NET_RULES],
            default_key: Some("model"),
            aliases: &[],
        };
        let checked = check_pairs(&format, pairs)?;
        let model = checked.require("model")?.to_string();
        Ok(NetDevice {
            model,
            macaddr: checked.get("macaddr").and_then(|m| MacAddr::parse(m).ok()),
            bridge: checked.string("bridge"),
            tag: checked.integer("tag"),
            trunks: checked.string("trunks"),
            firewall: checked.bool("firewall"),
            link_down: checked.bool("link_down"),
            rate: checked.number("rate"),
            mtu: checked.integer("mtu"),
            queues: checked.integer("queues"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_model_with_mac() {
        let nic =
            NetDevice::parse("virtio=BC:24:11:00:00:01,bridge=vmbr0,tag=10,firewall=1").unwrap();
        assert_eq!(nic.model, "virtio");
        assert_eq!(
            nic.macaddr.map(|m| m.to_string()).as_deref(),
            Some("BC:24:11:00:00:01")
        );
        assert_eq!(nic.bridge.as_deref(), Some("vmbr0"));
        assert_eq!(nic.tag, Some(10));
        assert_eq!(nic.firewall, Some(true));
    }

    #[test]
    fn other_forms_of_the_model() {
        let nic = NetDevice::parse(
            "model=e1000,macaddr=02:00:00:aa:bb:cc,link_down=1,mtu=1500,queues=4,rate=12.5",
        )
        .unwrap();
        assert_eq!(nic.model, "e1000");
        assert_eq!(nic.macaddr, Some(MacAddr([2, 0, 0, 0xaa, 0xbb, 0xcc])));
        assert_eq!(nic.rate, Some(12.5));
        let nic = NetDevice::parse("vmxnet3,bridge=vmbr1").unwrap();
        assert_eq!(nic.model, "vmxnet3");
        assert_eq!(nic.macaddr, None);
    }

    #[test]
    fn errors() {
        let cases = [
            ("virtio=BC:24:11:00:00,bridge=vmbr0", "six hex octets"),
            ("virtio=01:24:11:00:00:01", "multicast"),
            ("virtio=BC:24:11:00:00:0G", "six hex octets"),
            ("virtio=BC:24:11:00:00:01:02", "six hex octets"),
            ("virtio,tag=0", "between 1 and 4094"),
            ("virtio,tag=4095", "between 1 and 4094"),
            ("virtio,bridge=vmbr0-with-long-name", "at most 15"),
            ("virtio,bridge=vm br0", "only contain"),
            ("virtio,bridge=vm/br0", "only contain"),
            ("virtio,speed=10", "unknown property 'speed'"),
            ("virtio,tag=10,tag=20", "given twice"),
            (
                "virtio=BC:24:11:00:00:01,e1000=BC:24:11:00:00:02",
                "given twice",
            ),
            ("virtio,model=e1000", "given twice"),
            ("bridge=vmbr0", "'model' is required"),
            ("token-ring", "expected one of"),
            ("virtio,trunks=10;5000", "VLAN id"),
            ("virtio,firewall=maybe", "expected 0 or 1"),
        ];
        for (text, needle) in cases {
            let error = NetDevice::parse(text).unwrap_err().to_string();
            assert!(error.contains(needle), "{text}: {error}");
        }
    }

    #[test]
    fn interface_names() {
        for good in ["vmbr0", "br-lan.10", "a", "x_y"] {
            assert!(check_interface_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "sixteen-chars-xx", "a:b", "tab\t"] {
            assert!(check_interface_name(bad).is_err(), "{bad}");
        }
    }
}
