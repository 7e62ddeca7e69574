//! Host networking inside the appliance, where the kernel has what the CI
//! host lacks (VLAN filtering, 802.1Q links, bonding; see
//! ../shared/TESTING.md). Everything goes through `netd interfaces apply`
//! on the node's own interfaces file, with the netd daemon of the
//! appliance watching for unconfirmed changes, as apid will drive it:
//!
//! - **rollback**: a confirmed-by-reachability change is kept; a change
//!   that takes the NIC out of `vmbr0` (the management address stops
//!   reaching its gateway) and is not confirmed is rolled back by the
//!   daemon on its own;
//! - **bond**: an active-backup bond keeps its peer reachable when the
//!   active slave loses its carrier;
//! - **802.1Q**: a VLAN link carries traffic to a peer that has the
//!   address only on its own VLAN 50 link;
//! - **VLAN-aware bridge**: three containers (`ctr`, busybox) on one
//!   VLAN-aware bridge, two with `tag=10` and one with `tag=20`, all in
//!   one IPv4 subnet: the same tag pings, the other tag does not;
//! - **untagged port on a VLAN-aware bridge**: a container without a tag
//!   on the same bridge carries the other VLANs tagged, as under Proxmox:
//!   its own VLAN 10 link reaches a container with `tag=10`; with
//!   `trunks=20` it carries VLAN 20 only, and its VLAN 10 link reaches
//!   nothing;
//! - **rate limit**: 5 MiB to and from a container with `rate=0.25`
//!   (0.25 MB/s, a 1 MiB burst: 17 s) take at least 12 s each way; to and
//!   from one without it on the same bridge, less than half of that;
//! - **VLAN bridge**: a container with `tag=60` on `vmbr2`, a bridge
//!   without VLAN filtering whose port `eth7` leads to the peer, gets
//!   Proxmox's `vmbr2v60` with the VLAN link `eth7.60` as its uplink and
//!   reaches a peer that has the address only on its VLAN 60 link.
//!
//! The peer side of the bond and VLAN links lives in a network namespace
//! of the appliance, joined by veth pairs. `busybox` (for `ping` and the
//! containers' userland) comes from the host on a CD labelled `OXBOW-NET`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use qemu_tests::{with_appliance, Appliance, BootOptions, Firmware};

const BOOT: Duration = Duration::from_secs(600);
const STEP: Duration = Duration::from_secs(300);
const LABEL: &str = "OXBOW-NET";
const BUSYBOX: &str = "/bin/busybox";

/// Shared by the scripts: where things are, and `say` for result lines.
const COMMON: &str = r#"
set -u
M=/run/nt/media
BB=/run/nt/busybox
NETD=/usr/lib/oxbow/netd
CTR=/usr/lib/oxbow/ctr
IF=/etc/oxbow/network/interfaces
say() { echo "NET $*" > /dev/console; }
ping1() { $BB ping -c 1 -W 2 "$@" >/dev/null 2>&1; }
# ping until one answers (up to $2 tries)
reach() { i=0; while [ $i -lt $2 ]; do ping1 $1 && return 0; i=$((i+1)); sleep 1; done; return 1; }
nic() { ls /sys/class/net/vmbr0/brif/ | grep -v '^tap\|^veth' | head -n1; }
"#;

/// Mounts the CD, finds the NIC and writes the base file: vmbr0 static
/// on the address DHCP gave it, the NIC as its port.
const SETUP: &str = r#"
mkdir -p /run/nt/media /etc/oxbow/network
mount -t iso9660 -o ro LABEL=OXBOW-NET $M
cp $M/busybox $BB && chmod 755 $BB
N=$(nic)
A=$(ip -o -4 addr show dev vmbr0 scope global | awk '{print $4}' | head -n1)
G=$(ip -4 route show default | awk '{print $3}' | head -n1)
[ -n "$N" ] && [ -n "$A" ] && [ -n "$G" ] || { say setup-failed nic=$N addr=$A gw=$G; exit 1; }
echo "$N $A $G" > /run/nt/mgmt
base() {
cat <<EOF
auto lo
iface lo inet loopback

iface $N inet manual

auto vmbr0
iface vmbr0 inet static
	address $A
	gateway $G
	bridge-ports $1
	bridge-stp off
	bridge-fd 0
EOF
}
base $N > /run/nt/base
base none > /run/nt/cut
cp /run/nt/base $IF.new
$NETD interfaces apply --interfaces $IF || { say base-apply-failed; exit 1; }
reach $G 5 && say gateway=reachable || say gateway=unreachable
say setup nic=$N addr=$A gw=$G
"#;

/// An unconfirmed apply that keeps the gateway reachable is kept; one
/// that releases the NIC is rolled back by the daemon.
const ROLLBACK: &str = r#"
read N A G < /run/nt/mgmt
# wait (up to 60 s) until the daemon has settled the pending change
settle() { i=0; while [ -e $IF.pending ] && [ $i -lt 60 ]; do sleep 1; i=$((i+1)); done; }
cp /run/nt/base $IF.new
$NETD interfaces apply --interfaces $IF --confirm 3 --bridge vmbr0 >/dev/null || { say keep-apply-failed; exit 1; }
settle
[ -e $IF.pending ] && say keep=still-pending || say keep=settled
cmp -s $IF /run/nt/base && say keep-file=new || say keep-file=other
cp /run/nt/cut $IF.new
$NETD interfaces apply --interfaces $IF --confirm 3 --bridge vmbr0 >/dev/null || { say cut-apply-failed; exit 1; }
[ -e /sys/class/net/vmbr0/brif/$N ] && say cut-applied=no || say cut-applied=yes
settle
[ -e $IF.pending ] && say rollback=still-pending || say rollback=settled
cmp -s $IF /run/nt/base && say rollback-file=previous || say rollback-file=other
[ -e /sys/class/net/vmbr0/brif/$N ] && say rollback-port=back || say rollback-port=missing
reach $G 10 && say rollback-gateway=reachable || say rollback-gateway=unreachable
"#;

/// The peer namespace, the bond, the VLAN link and the VLAN-aware bridge.
const LAB: &str = r#"
ip netns add peer
ip link add bnd0a type veth peer name pa netns peer
ip link add bnd0b type veth peer name pb netns peer
ip link add up1 type veth peer name pq netns peer
ip link add eth7 type veth peer name pr netns peer
ip -n peer link add pbr type bridge
ip -n peer link set pa master pbr
ip -n peer link set pb master pbr
ip -n peer addr add 10.9.0.2/24 dev pbr
ip -n peer link add link pq name pq.50 type vlan id 50
ip -n peer addr add 10.50.0.2/24 dev pq.50
ip -n peer link add link pr name pr.60 type vlan id 60
ip -n peer addr add 10.60.0.2/24 dev pr.60
for l in lo pa pb pq pbr pq.50 pr pr.60; do ip -n peer link set $l up; done
ip link set up1 up
[ -e /sys/class/net/bond0 ] && say stray-bond0=present || say stray-bond0=absent
cp /run/nt/base $IF.new
cat >> $IF.new <<EOF

auto bond0
iface bond0 inet static
	address 10.9.0.1/24
	bond-slaves bnd0a bnd0b
	bond-mode active-backup
	bond-miimon 100

auto up1.50
iface up1.50 inet static
	address 10.50.0.1/24

auto vmbr1
iface vmbr1 inet manual
	bridge-ports none
	bridge-stp off
	bridge-fd 0
	bridge-vlan-aware yes
	bridge-vids 2-4094

iface eth7 inet manual

auto vmbr2
iface vmbr2 inet manual
	bridge-ports eth7
	bridge-stp off
	bridge-fd 0

auto vmbr3
iface vmbr3 inet static
	address 10.70.0.1/24
	bridge-ports none
	bridge-stp off
	bridge-fd 0
EOF
$NETD interfaces apply --interfaces $IF > /run/nt/lab-ops 2>&1 || { say lab-apply-failed; cat /run/nt/lab-ops > /dev/console; exit 1; }
say lab-ops=$(wc -l < /run/nt/lab-ops)
say bond-mode=$(cat /sys/class/net/bond0/bonding/mode | cut -d' ' -f1)
say vmbr1-vlan-filtering=$(cat /sys/class/net/vmbr1/bridge/vlan_filtering)
say vlan-id=$(ip -d -o link show up1.50 | grep -o 'vlan protocol 802.1Q id [0-9]*' | awk '{print $5}')
"#;

const BOND: &str = r#"
reach 10.9.0.2 20 && say bond-before=ok || say bond-before=fail
ACTIVE=$(cat /sys/class/net/bond0/bonding/active_slave)
case $ACTIVE in bnd0a) P=pa;; bnd0b) P=pb;; *) say bond-active=none; exit 1;; esac
ip -n peer link set $P down
i=0; while [ "$(cat /sys/class/net/bond0/bonding/active_slave)" = "$ACTIVE" ] && [ $i -lt 20 ]; do sleep 1; i=$((i+1)); done
NOW=$(cat /sys/class/net/bond0/bonding/active_slave)
say bond-failover=$ACTIVE-to-$NOW
reach 10.9.0.2 20 && say bond-after=ok || say bond-after=fail
"#;

const VLAN: &str = r#"
reach 10.50.0.2 20 && say dot1q=ok || say dot1q=fail
say dot1q-peer-rx=$(cat /sys/class/net/up1.50/statistics/rx_packets)
"#;

/// The containers' init: bring eth0 up from the file ctr wrote, then
/// either wait (a target) or ping the targets and report.
const CT_INIT: &str = r#"#!/bin/sh
export PATH=/bin:/sbin
ifup -a >/dev/null 2>&1
if [ -f /etc/ping-same ]; then
  ok=no; i=0
  while [ $i -lt 30 ]; do ping -c 1 -W 2 $(cat /etc/ping-same) >/dev/null 2>&1 && { ok=yes; break; }; i=$((i+1)); done
  echo "CT same-tag=$ok"
  ok=no
  for i in 1 2 3; do ping -c 1 -W 2 $(cat /etc/ping-other) >/dev/null 2>&1 && ok=yes; done
  echo "CT other-tag=$ok"
  exit 0
fi
if [ -f /etc/ping-excluded ]; then
  ip link add link eth0 name eth0.10 type vlan id 10 2>/dev/null || vconfig add eth0 10
  ip addr add 10.10.0.17/24 dev eth0.10
  ip link set eth0.10 up
  ok=no
  for i in 1 2 3; do ping -c 1 -W 2 $(cat /etc/ping-excluded) >/dev/null 2>&1 && ok=yes; done
  echo "CT excluded-vlan=$ok"
  exit 0
fi
if [ -f /etc/ping-trunk ]; then
  ip link add link eth0 name eth0.10 type vlan id 10 2>/dev/null || vconfig add eth0 10
  ip addr add 10.10.0.14/24 dev eth0.10
  ip link set eth0.10 up
  ok=no; i=0
  while [ $i -lt 30 ]; do ping -c 1 -W 2 $(cat /etc/ping-trunk) >/dev/null 2>&1 && { ok=yes; break; }; i=$((i+1)); done
  echo "CT trunk=$ok"
  exit 0
fi
if [ -f /etc/ping-vlan ]; then
  ok=no; i=0
  while [ $i -lt 30 ]; do ping -c 1 -W 2 $(cat /etc/ping-vlan) >/dev/null 2>&1 && { ok=yes; break; }; i=$((i+1)); done
  echo "CT legacy-vlan=$ok"
  exit 0
fi
exec sleep 100000
"#;

const CONTAINERS: &str = r#"
mkdir -p /run/nt/ct
R=/run/nt/ct/base
for d in bin sbin etc/network/if-up.d etc/network/if-pre-up.d etc/network/if-down.d \
         etc/network/if-post-down.d root tmp run var proc sys dev; do mkdir -p $R/$d; done
chmod 1777 $R/tmp; chmod 700 $R/root
cp $BB $R/bin/busybox
for a in $($BB --list); do [ $a = busybox ] || ln -s busybox $R/bin/$a; done
ln -s ../run $R/var/run
cp $M/ct-init $R/sbin/init && chmod 755 $R/sbin/init
echo 'root:x:0:0:root:/root:/bin/sh' > $R/etc/passwd
echo 'root:x:0:' > $R/etc/group
for id in 310 311 312; do
  cp -a $R /run/nt/ct/root-$id
  case $id in 310|311) tag=10;; 312) tag=20;; esac
  printf 'arch: amd64\nhostname: vlan%s\nmemory: 64\nostype: debian\nunprivileged: 1\nrootfs: local:rootdir/%s\nnet0: name=eth0,bridge=vmbr1,tag=%s,ip=10.10.0.%s/24,hwaddr=BC:24:11:00:03:%s\n' \
    $id $id $tag $((id-300)) $((id-300)) > /run/nt/ct/$id.conf
done
echo 10.10.0.11 > /run/nt/ct/root-310/etc/ping-same
echo 10.10.0.12 > /run/nt/ct/root-310/etc/ping-other
cp -a $R /run/nt/ct/root-313
cp -a $R /run/nt/ct/root-314
for id in 315 316; do
  cp -a $R /run/nt/ct/root-$id
  rate=; [ $id = 315 ] && rate=,rate=0.25
  printf 'arch: amd64\nhostname: rate%s\nmemory: 64\nostype: debian\nunprivileged: 1\nrootfs: local:rootdir/%s\nnet0: name=eth0,bridge=vmbr3,ip=10.70.0.%s/24,hwaddr=BC:24:11:00:03:%s%s\n' \
    $id $id $((id-300)) $((id-300)) "$rate" > /run/nt/ct/$id.conf
done
printf 'arch: amd64\nhostname: trunk\nmemory: 64\nostype: debian\nunprivileged: 1\nrootfs: local:rootdir/314\nnet0: name=eth0,bridge=vmbr1,ip=192.0.2.14/24,hwaddr=BC:24:11:00:03:14\n' > /run/nt/ct/314.conf
echo 10.10.0.11 > /run/nt/ct/root-314/etc/ping-trunk
cp -a $R /run/nt/ct/root-317
printf 'arch: amd64\nhostname: trunks\nmemory: 64\nostype: debian\nunprivileged: 1\nrootfs: local:rootdir/317\nnet0: name=eth0,bridge=vmbr1,ip=192.0.2.17/24,trunks=20,hwaddr=BC:24:11:00:03:17\n' > /run/nt/ct/317.conf
echo 10.10.0.11 > /run/nt/ct/root-317/etc/ping-excluded
printf 'arch: amd64\nhostname: legacy\nmemory: 64\nostype: debian\nunprivileged: 1\nrootfs: local:rootdir/313\nnet0: name=eth0,bridge=vmbr2,tag=60,ip=10.60.0.13/24,hwaddr=BC:24:11:00:03:13\n' > /run/nt/ct/313.conf
echo 10.60.0.2 > /run/nt/ct/root-313/etc/ping-vlan
chown -R 100000:100000 /run/nt/ct/root-310 /run/nt/ct/root-311 /run/nt/ct/root-312 \
  /run/nt/ct/root-313 /run/nt/ct/root-314 /run/nt/ct/root-315 /run/nt/ct/root-316 \
  /run/nt/ct/root-317
say containers-ready
"#;

/// 5 MiB to and from containers 315 (`rate=0.25`) and 316 (no limit), each
/// transfer timed from the sender's start to the receiver's end (busybox
/// `nc`, whose listener gets a standard input that stays open, since it
/// stops at the end of its input; the container's side run in its
/// network namespace); and the limited port's qdiscs.
const RATE: &str = r#"
up() { cut -d' ' -f1 /proc/uptime; }
pid() { i=0; while [ $i -lt 30 ]; do p=$($CTR ctl /run/nt/ct/$1.sock info 2>/dev/null | grep -o '"pid":[0-9]*' | cut -d: -f2); [ -n "$p" ] && { echo $p; return; }; sleep 1; i=$((i+1)); done; }
# $1 vmid, $2 direction (to|from), $3 port
xfer() {
  P=$(pid $1); A=10.70.0.$(($1-300))
  if [ $2 = to ]; then
    sleep 100 | nsenter -t $P -n $BB nc -l -p $3 > /dev/null & L=$!
    sleep 1; t0=$(up)
    $BB dd if=/dev/zero bs=65536 count=80 2>/dev/null | timeout 60 $BB nc $A $3
  else
    sleep 100 | $BB nc -l -p $3 > /dev/null & L=$!
    sleep 1; t0=$(up)
    $BB dd if=/dev/zero bs=65536 count=80 2>/dev/null | timeout 60 nsenter -t $P -n $BB nc 10.70.0.1 $3
  fi
  i=0; while kill -0 $L 2>/dev/null && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
  t1=$(up)
  awk "BEGIN{print $t1-$t0}"
}
reach 10.70.0.15 20 >/dev/null; reach 10.70.0.16 20 >/dev/null
say rate-to-limited=$(xfer 315 to 5001)
say rate-from-limited=$(xfer 315 from 5002)
say rate-to-free=$(xfer 316 to 5003)
say rate-from-free=$(xfer 316 from 5004)
say rate-qdiscs=$(tc qdisc show dev veth315i0 | awk '{print $2}' | sort | tr '\n' ' ' | sed 's/ $//')
$CTR ctl /run/nt/ct/315.sock stop >/dev/null 2>&1
$CTR ctl /run/nt/ct/316.sock stop >/dev/null 2>&1
"#;

/// What the VLAN bridge case left: the ports of
/// `vmbr2v60` (the container's veth is gone with it), the VLAN link's ID,
/// and that `eth7` stayed in `vmbr2`.
const LEGACY_SHOW: &str = r#"
say legacy-ports=$(ls /sys/class/net/vmbr2v60/brif | tr '\n' ' ' | sed 's/ $//')
say legacy-vlan-id=$(ip -d -o link show eth7.60 | grep -o 'vlan protocol 802.1Q id [0-9]*' | awk '{print $5}')
say legacy-uplink-master=$(basename $(readlink /sys/class/net/eth7/master))
"#;

fn start_ct(vmid: u32) -> String {
    format!(
        "exec /usr/lib/oxbow/ctr start --config /run/nt/ct/{vmid}.conf --rootfs /run/nt/ct/root-{vmid} \
         --socket /run/nt/ct/{vmid}.sock --console-log /run/nt/ct/{vmid}.console --shutdown-timeout 10"
    )
}

/// The CD: busybox, the container init.
fn media(dir: &Path) -> PathBuf {
    assert!(
        Path::new(BUSYBOX).is_file(),
        "needs busybox-static on the host (scripts/install-deps.sh)"
    );
    std::fs::write(dir.join("ct-init"), CT_INIT).unwrap();
    let iso = dir.join("net.iso");
    let init = dir.join("ct-init");
    qemu_tests::make_data_iso(
        &iso,
        LABEL,
        &[("busybox", Path::new(BUSYBOX)), ("ct-init", init.as_path())],
    )
    .unwrap();
    iso
}

/// Runs a script (after [`COMMON`]) as a unit; fails on a non-zero end.
fn sh(vm: &mut Appliance, unit: &str, script: &str) {
    let full = format!("{COMMON}\n{script}");
    vm.run_unit(unit, &["/bin/sh", "-c", &full]).unwrap();
    let end = vm.wait_unit_stopped(unit, STEP).unwrap();
    if end.code != Some(0) {
        vm.show_unit_log(unit);
        panic!("{unit}: {}", end.how);
    }
}

/// Starts container `vmid` as unit `ct-<vmid>`, waits for its init to
/// end, and copies its console onto the serial console, each line
/// prefixed `CONSOLE-<vmid> ` (see [`ct_result`]); fails unless the
/// unit ended with status 0.
fn run_ct_to_end(vm: &mut Appliance, vmid: u32) {
    let unit = format!("ct-{vmid}");
    vm.run_unit(&unit, &["/bin/sh", "-c", &start_ct(vmid)])
        .unwrap();
    let end = vm.wait_unit_stopped(&unit, STEP).unwrap();
    sh(
        vm,
        &format!("{unit}-console"),
        &format!("sed 's/^/CONSOLE-{vmid} /' /run/nt/ct/{vmid}.console > /dev/console"),
    );
    assert_eq!(end.code, Some(0), "ctr start {vmid}: {}", end.how);
}

/// The value of container `vmid`'s result line `CT key=value`, as its
/// console was copied onto the serial console.
fn ct_result(serial: &str, vmid: u32, key: &str) -> String {
    let prefix = format!("CONSOLE-{vmid} CT ");
    serial
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix(prefix.as_str()))
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or("<missing>")
        .to_string()
}

/// The value of result line `NET key=value` (the last one).
fn result(serial: &str, key: &str) -> String {
    let prefix = format!("NET {key}=");
    serial
        .lines()
        .rev()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix(&prefix))
        .unwrap_or("<missing>")
        .to_string()
}

#[test]
fn netd_in_the_appliance_rolls_back_bonds_vlans_and_vlan_aware_bridges() {
    let dir = tempfile::tempdir().unwrap();
    let iso = media(dir.path());
    let opts = || {
        let mut opts = BootOptions::new(Firmware::Direct("oxbow.testctl".into()));
        opts.test_channel = true;
        opts.memory_mib = 2048;
        opts.extra_cds = vec![iso.clone()];
        opts
    };
    with_appliance(opts, |vm| {
        vm.wait_for_serial("test control channel on", BOOT).unwrap();
        sh(vm, "net-setup", SETUP);
        assert_eq!(result(&vm.serial(), "gateway"), "reachable");

        sh(vm, "net-rollback", ROLLBACK);
        let s = vm.serial();
        for (key, want) in [
            ("keep", "settled"),
            ("keep-file", "new"),
            ("cut-applied", "yes"),
            ("rollback", "settled"),
            ("rollback-file", "previous"),
            ("rollback-port", "back"),
            ("rollback-gateway", "reachable"),
        ] {
            assert_eq!(result(&s, key), want, "{key}");
        }

        sh(vm, "net-lab", LAB);
        let s = vm.serial();
        assert_eq!(
            result(&s, "stray-bond0"),
            "absent",
            "bonding loads with max_bonds=0"
        );
        assert_eq!(result(&s, "bond-mode"), "active-backup");
        assert_eq!(result(&s, "vmbr1-vlan-filtering"), "1");
        assert_eq!(result(&s, "vlan-id"), "50");

        sh(vm, "net-bond", BOND);
        sh(vm, "net-vlan", VLAN);
        let s = vm.serial();
        assert_eq!(result(&s, "bond-before"), "ok");
        let failover = result(&s, "bond-failover");
        assert!(
            failover == "bnd0a-to-bnd0b" || failover == "bnd0b-to-bnd0a",
            "bond failover: {failover}"
        );
        assert_eq!(result(&s, "bond-after"), "ok");
        assert_eq!(result(&s, "dot1q"), "ok");

        sh(vm, "net-cts", CONTAINERS);
        vm.run_unit("ct-311", &["/bin/sh", "-c", &start_ct(311)])
            .unwrap();
        vm.run_unit("ct-312", &["/bin/sh", "-c", &start_ct(312)])
            .unwrap();
        vm.run_unit("ct-310", &["/bin/sh", "-c", &start_ct(310)])
            .unwrap();
        let end = vm.wait_unit_stopped("ct-310", STEP).unwrap();
        sh(
            vm,
            "net-cts-show",
            "exec >/dev/console; sed 's/^/CONSOLE-310 /' /run/nt/ct/310.console; \
             bridge vlan show | sed 's/^/VLANS /'",
        );
        let s = vm.serial();
        let ct = |key: &str| ct_result(&s, 310, key);
        assert_eq!(end.code, Some(0), "ctr start 310: {}", end.how);
        assert_eq!(
            ct("same-tag"),
            "yes",
            "a container reaches one with its tag"
        );
        assert_eq!(
            ct("other-tag"),
            "no",
            "a container reaches one with another tag"
        );

        // A port without a tag on the VLAN-aware bridge carries the other
        // VLANs tagged: the container's own VLAN 10 link reaches 311
        // (tag=10, still running).
        run_ct_to_end(vm, 314);
        assert_eq!(
            ct_result(&vm.serial(), 314, "trunk"),
            "yes",
            "an untagged port's own VLAN 10 link reaches a container tagged 10"
        );

        // trunks=20 on an untagged port: VLAN 20 only (and VLAN 1 as the
        // PVID), so the container's own VLAN 10 link reaches nothing.
        run_ct_to_end(vm, 317);
        assert_eq!(
            ct_result(&vm.serial(), 317, "excluded-vlan"),
            "no",
            "a port with trunks=20 passed VLAN 10"
        );

        // rate=: 0.25 MB/s each way on the port, after a 1 MiB burst (a
        // rate low enough that the unlimited transfer, 1 s on a fast
        // machine and over 4 s on a slow one, stays well below it).
        vm.run_unit("ct-315", &["/bin/sh", "-c", &start_ct(315)])
            .unwrap();
        vm.run_unit("ct-316", &["/bin/sh", "-c", &start_ct(316)])
            .unwrap();
        sh(vm, "net-rate", RATE);
        let s = vm.serial();
        let secs = |key: &str| -> f64 {
            result(&s, key)
                .parse()
                .unwrap_or_else(|_| panic!("{key}: {}", result(&s, key)))
        };
        let (to, from) = (secs("rate-to-limited"), secs("rate-from-limited"));
        let (free_to, free_from) = (secs("rate-to-free"), secs("rate-from-free"));
        eprintln!(
            "5 MiB at rate=0.25: {to} s to, {from} s from the container; unlimited: {free_to} s, {free_from} s"
        );
        assert!(to >= 12.0, "5 MiB to a container at 0.25 MB/s in {to} s");
        assert!(
            from >= 12.0,
            "5 MiB from a container at 0.25 MB/s in {from} s"
        );
        assert!(free_to * 2.0 < to, "unlimited {free_to} s against {to} s");
        assert!(
            free_from * 2.0 < from,
            "unlimited {free_from} s against {from} s"
        );
        assert_eq!(result(&s, "rate-qdiscs"), "htb ingress");

        // A tag on a bridge without VLAN filtering: Proxmox's VLAN bridge.
        run_ct_to_end(vm, 313);
        sh(vm, "net-legacy-show", LEGACY_SHOW);
        let s = vm.serial();
        assert_eq!(
            ct_result(&s, 313, "legacy-vlan"),
            "yes",
            "a container tagged 60 on vmbr2 reaches the peer's VLAN 60"
        );
        assert_eq!(result(&s, "legacy-ports"), "eth7.60");
        assert_eq!(result(&s, "legacy-vlan-id"), "60");
        assert_eq!(result(&s, "legacy-uplink-master"), "vmbr2");
    });
}
