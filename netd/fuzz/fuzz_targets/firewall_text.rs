//! Feeds arbitrary text to the firewall-file parser; whatever parses is
//! compiled as the cluster, host and a guest file, and the ruleset is
//! rendered. Nothing may panic.

#![no_main]

use firewall::{compile, FwFile, Guest, GuestPort, Input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = FwFile::parse("fuzz.fw", text) else {
        return;
    };
    let on = FwFile::parse("cluster.fw", "[OPTIONS]\nenable: 1\n").expect("valid");
    let port = GuestPort {
        net: 0,
        iface: "tap100i0".into(),
        mac: Some("bc:24:11:00:00:01".into()),
        firewall: true,
        ips: vec!["192.0.2.5/24".parse().expect("valid")],
    };
    let inputs = [
        Input {
            cluster: file.clone(),
            host: file.clone(),
            ..Input::default()
        },
        Input {
            cluster: on.clone(),
            host: file.clone(),
            guests: vec![Guest {
                vmid: 100,
                file: file.clone(),
                ports: vec![port],
            }],
            ..Input::default()
        },
    ];
    for input in &inputs {
        if let Ok(ruleset) = compile(input) {
            let _ = ruleset.to_string();
        }
    }
});
