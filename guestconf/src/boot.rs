//! A VM's `boot` key: `order=scsi0;ide2;net0`, or the legacy `cdn` letters.

use crate::disk::{parse_index, DiskBus};
use crate::net::MAX_VM_NET_INDEX;
use crate::schema::{check_format, rule, Format, PropertyError, Rule, ValueKind};

/// The highest `n` of `usb[n]` and `hostpci[n]` that can be boot devices.
const MAX_USB_INDEX: u32 = 13;
const MAX_HOSTPCI_INDEX: u32 = 15;

/// Whether `device` can be listed in `order=`: a disk (`scsi0`, `ide2`, …),
/// `net[n]`, `usb[n]` or `hostpci[n]`.
pub fn is_boot_device(device: &str) -> bool {
    if DiskBus::from_key(device).is_some() {
        return true;
    }
    [
        ("net", MAX_VM_NET_INDEX),
        ("usb", MAX_USB_INDEX),
        ("hostpci", MAX_HOSTPCI_INDEX),
    ]
    .iter()
    .any(|(prefix, max)| {
        device
            .strip_prefix(prefix)
            .and_then(parse_index)
            .is_some_and(|index| index <= *max)
    })
}

fn check_order(text: &str) -> Result<(), String> {
    let mut seen: Vec<&str> = Vec::new();
    for device in text.split(';') {
        if !is_boot_device(device) {
            return Err(format!(
                "'{}' is not a boot device (a disk such as scsi0, or net[n], usb[n], hostpci[n])",
                crate::property_string::excerpt(device)
            ));
        }
        if seen.contains(&device) {
            return Err(format!("'{device}' is listed twice"));
        }
        seen.push(device);
    }
    Ok(())
}

fn check_legacy(text: &str) -> Result<(), String> {
    if (1..=4).contains(&text.len()) && text.bytes().all(|b| b"acdn".contains(&b)) {
        Ok(())
    } else {
        Err("expected 1 to 4 of the letters a (floppy), c (disk), d (CD), n (network)".to_string())
    }
}

const BOOT_RULES: &[Rule] = &[
    rule("legacy", ValueKind::Text(check_legacy)),
    rule("order", ValueKind::Text(check_order)),
];

/// The parsed `boot` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootOrder {
    /// `order=dev1;dev2;…`: boot from these devices, in this order.
    Order(Vec<String>),
    /// The deprecated letters form, such as `cdn`.
    Legacy(String),
}

impl BootOrder {
    pub fn parse(text: &str) -> Result<BootOrder, PropertyError> {
        let format = Format {
            rules: &[BOOT_RULES],
            default_key: Some("legacy"),
            aliases: &[],
        };
        let checked = check_format(&format, text)?;
        // Proxmox lets the legacy letters win when both are given.
        if let Some(legacy) = checked.get("legacy") {
            return Ok(BootOrder::Legacy(legacy.to_string()));
        }
        match checked.get("order") {
            Some(order) => Ok(BootOrder::Order(
                order.split(';').map(str::to_string).collect(),
            )),
            None => Err(PropertyError::MissingProperty {
                key: "order".to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order() {
        assert_eq!(
            BootOrder::parse("order=scsi0;ide2;net0"),
            Ok(BootOrder::Order(vec![
                "scsi0".into(),
                "ide2".into(),
                "net0".into()
            ]))
        );
        assert_eq!(BootOrder::parse("cdn"), Ok(BootOrder::Legacy("cdn".into())));
        assert_eq!(
            BootOrder::parse("legacy=dc"),
            Ok(BootOrder::Legacy("dc".into()))
        );
    }

    #[test]
    fn errors() {
        for (text, needle) in [
            ("order=scsi0;;net0", "not a boot device"),
            ("order=scsi0;efidisk0", "not a boot device"),
            ("order=net32", "not a boot device"),
            ("order=scsi0;scsi0", "listed twice"),
            ("cdnx", "1 to 4 of the letters"),
            ("cdnac", "1 to 4 of the letters"),
            ("order=", "empty value"),
            ("first=scsi0", "unknown property"),
            ("", "'order' is required"),
        ] {
            let error = BootOrder::parse(text).unwrap_err().to_string();
            assert!(error.contains(needle), "{text}: {error}");
        }
    }
}
