//! Feeds arbitrary text to guestconf's parsers. Checks that nothing
//! panics, that whatever parses is written back to the same bytes and
//! parses again to the same structure, and that edits keep that true.

#![no_main]

use guestconf::{
    validate_ct_key, validate_vm_key, BootOrder, ContainerFeatures, ContainerNet, DiskDevice,
    GuestConfig, MountPoint, NetDevice, PropertyString,
};
use libfuzzer_sys::fuzz_target;

/// Keys whose validators are run on the input, to reach every typed parser.
const VM_KEYS: &[&str] = &[
    "name", "memory", "cores", "cpu", "ostype", "onboot", "boot", "kernel", "cmdline", "net0",
    "scsi0", "ide2", "parent", "snaptime",
];
const CT_KEYS: &[&str] = &["hostname", "rootfs", "mp0", "net0", "features", "arch"];

fn check_config(text: &str) {
    let Ok(config) = GuestConfig::parse(text) else {
        return;
    };
    let written = config.to_string();
    assert_eq!(written, text, "written text differs from the input");
    let reparsed = GuestConfig::parse(&written).expect("written text parses");
    assert_eq!(reparsed, config, "re-parsed structure differs");

    for section in std::iter::once(config.main()).chain(config.sections()) {
        let _ = section.description();
        for entry in section.entries() {
            let _ = validate_vm_key(entry.key(), entry.value());
            let _ = validate_ct_key(entry.key(), entry.value());
            check_property_string(entry.value());
        }
    }

    // Edits must keep the file parseable to the same structure.
    let mut edited = config.clone();
    edited.set_description(text);
    let expected = text.trim_end_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let description = edited.description().unwrap_or_default();
    assert_eq!(description, expected, "description does not read back");
    let keys: Vec<String> = edited
        .main()
        .entries()
        .map(|e| e.key().to_string())
        .collect();
    for key in &keys {
        edited.set(key, "1").expect("existing key can be set");
    }
    if let Some(key) = keys.first() {
        edited.delete(key);
    }
    let _ = edited
        .add_snapshot("fuzz-snap")
        .map(|s| s.set("snaptime", "1"));
    edited
        .pending_mut()
        .set("memory", "512")
        .expect("set in pending");
    let written = edited.to_string();
    let reparsed = GuestConfig::parse(&written).expect("edited text parses");
    assert_eq!(reparsed, edited, "edited structure differs after re-parse");
}

fn check_property_string(text: &str) {
    let Ok(parsed) = PropertyString::parse(text) else {
        return;
    };
    assert_eq!(
        parsed.to_string(),
        text,
        "property string written differently"
    );
    assert_eq!(
        PropertyString::parse(text).as_ref(),
        Ok(&parsed),
        "property string parses differently twice"
    );
    let mut edited = parsed.clone();
    let pairs: Vec<(Option<String>, String)> = parsed
        .iter()
        .map(|(k, v)| (k.map(str::to_string), v.to_string()))
        .collect();
    for (key, value) in &pairs {
        edited
            .set(key.as_deref(), value)
            .expect("existing key can be set");
    }
    edited.set(Some("fuzz"), text).expect("set a new key");
    let written = edited.to_string();
    let reparsed = PropertyString::parse(&written).expect("edited property string parses");
    assert_eq!(
        reparsed, edited,
        "edited property string differs after re-parse"
    );
    assert_eq!(reparsed.get("fuzz"), Some(text));
}

fn check_typed(text: &str) {
    // Error messages are built too: formatting must not panic either.
    let mut messages = Vec::new();
    messages.push(NetDevice::parse(text).err().map(|e| e.to_string()));
    messages.push(
        DiskDevice::parse("scsi0", text)
            .err()
            .map(|e| e.to_string()),
    );
    messages.push(DiskDevice::parse("ide2", text).err().map(|e| e.to_string()));
    messages.push(BootOrder::parse(text).err().map(|e| e.to_string()));
    messages.push(
        MountPoint::parse("rootfs", text)
            .err()
            .map(|e| e.to_string()),
    );
    messages.push(MountPoint::parse("mp0", text).err().map(|e| e.to_string()));
    messages.push(ContainerNet::parse(text).err().map(|e| e.to_string()));
    messages.push(ContainerFeatures::parse(text).err().map(|e| e.to_string()));
    messages.push(
        guestconf::parse_disk_size(text)
            .err()
            .map(|e| e.to_string()),
    );
    messages.push(GuestConfig::parse(text).err().map(|e| e.to_string()));
    messages.push(PropertyString::parse(text).err().map(|e| e.to_string()));
    for key in VM_KEYS {
        messages.push(validate_vm_key(key, text).err());
    }
    for key in CT_KEYS {
        messages.push(validate_ct_key(key, text).err());
    }
    std::hint::black_box(messages);
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_config(text);
    check_property_string(text);
    check_typed(text);
});
