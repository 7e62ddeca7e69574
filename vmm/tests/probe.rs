//! The KVM probe against this machine's `/dev/kvm`. Running a few real-mode
//! instructions works even on a nested KVM that cannot boot a full kernel.

#[test]
fn probe_runs_guest_code() {
    assert!(
        std::path::Path::new("/dev/kvm").exists(),
        "this test needs /dev/kvm"
    );
    for seed in [0u8, 0x41, 0xff] {
        let r = vmm::probe::run(seed).expect("probe");
        assert_eq!(r.out_byte, seed.wrapping_add(1));
        assert_eq!(r.api_version, 12);
    }
}
