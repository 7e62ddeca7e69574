//! Feeds arbitrary text to the interfaces-file parser. Whatever parses
//! must be written back to the same bytes; the typed view, validation,
//! edits and planning must not panic, and edits must keep the file
//! parseable.

#![no_main]

use libfuzzer_sys::fuzz_target;
use netd::interfaces::{validate, Family, InterfacesFile, Method};
use netd::reconcile::{plan, Desired, Observed};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = InterfacesFile::parse(text) else {
        return;
    };
    assert_eq!(file.to_string(), text, "written text differs from the input");
    let known = ["eth0".to_string(), "eth1".to_string(), "lo".to_string()];
    if let Ok(config) = file.config() {
        let valid = validate(&config, &known).is_ok();
        if valid {
            let desired = Desired::from_config(&config);
            let _ = plan(&desired, &Observed::default());
        }
        let mut edited = file.clone();
        if let Some(first) = config.ifaces.first() {
            edited.set_option(&first.name, Family::Inet, "mtu", Some("1500"));
            edited.set_option(&first.name, Family::Inet, "address", None);
            edited.set_method(&first.name, Family::Inet, Method::Manual);
            edited.set_auto(&first.name, true);
        }
        let _ = edited.add_iface("fuzz0", Family::Inet, Method::Static, true, &[("address", "192.0.2.1/24")]);
        let again = edited.to_string();
        let reparsed = InterfacesFile::parse(&again).expect("edited file parses");
        assert_eq!(reparsed.to_string(), again);
        if let Some(first) = config.ifaces.first() {
            edited.remove_iface(&first.name);
            InterfacesFile::parse(&edited.to_string()).expect("file parses after a removal");
        }
    }
});
