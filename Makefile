# Oxbow: `make run` boots the appliance, `make test` runs the whole suite.

TARGET   := x86_64-unknown-linux-gnu
RELEASE  := target/$(TARGET)/release
# The image's programs: ctr comes from its own build profile (Cargo.toml,
# release-ctr: fat LTO), the rest from the release build.
BINS     := target/image-bins
ISO      := target/oxbow.iso
GUEST    := target/guest
# Oxbow's own binaries are fully static, so the same init runs from the
# initramfs and from the system image.
STATIC   := CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
GIT_REV  := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)

.PHONY: all deps mtimes bins iso guest guest-debian guest-debian-bench ct-template run test lint unit fuzz appliance bench-boot bench-vmm bench-vmm-io bench-iso bench-api bench-firewall bench-ct bench-netd peers-iso clean

all: iso

deps:
	scripts/install-deps.sh

bins:
	$(STATIC) cargo build --release --target $(TARGET) \
		-p init -p netd -p api -p vmm
	$(STATIC) cargo build --profile release-ctr --target $(TARGET) -p ctr
	mkdir -p $(BINS)
	for b in init netd apid vmm; do install -m 755 $(RELEASE)/$$b $(BINS)/$$b; done
	install -m 755 target/$(TARGET)/release-ctr/ctr $(BINS)/ctr

iso: bins
	cargo run --release -p image -- --bins $(BINS) --out $(ISO) --revision $(GIT_REV)

# The guest test assets (docs/guest.md): kernel, PVH vmlinux, initramfs with
# guest-init, and an ISO of the three; rebuilt only when an input changed.
guest:
	$(STATIC) cargo build --release --target $(TARGET) -p qemu-tests --bin guest-init
	cargo run -p qemu-tests --bin guest-assets -- --init $(RELEASE)/guest-init --out $(GUEST)

# The Debian guest's root file system image (docs/guest.md): debootstrap
# (cached) and mkfs.ext4 -d into target/guest/debian.raw; needs root.
guest-debian:
	cargo run -p qemu-tests --bin guest-assets -- --debian --out $(GUEST)

# The same image with fio, iperf3 and iproute2, for bench-vmm-io:
# target/guest/debian-bench.raw (docs/guest.md); needs root.
guest-debian-bench:
	cargo run -p qemu-tests --bin guest-assets -- --debian --name debian-bench \
		--packages fio,iperf3,iproute2 --out $(GUEST)

# The Debian 12 container template (docs/ctr.md):
# target/guest/debian-12-standard_<version>-1_amd64.tar.zst, from a cached
# debootstrap; needs root.
ct-template:
	cargo run -p qemu-tests --bin guest-assets -- --ct-template --out $(GUEST)

run: deps iso
	scripts/run.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# OXBOW_NO_SKIP: a host test that would skip for want of a tool or asset
# fails instead; `make test` has installed and built everything.
unit:
	cargo test --workspace --exclude qemu-tests

test: export OXBOW_NO_SKIP := 1

# The config and property-string parsers (docs/guestconf.md), the container
# template path sanitizer (docs/ctr.md), and the interfaces-file and
# firewall-file parsers (docs/netd.md) under libFuzzer, built with the
# stable toolchain, for a bounded time.
fuzz:
	scripts/fuzz.sh $(or $(FUZZ_SECONDS),60) guestconf/fuzz \
		guestconf_text=guestconf/tests/examples:guestconf/fuzz/seeds
	scripts/fuzz.sh $(or $(FUZZ_CTR_SECONDS),30) ctr/fuzz ctr_path=ctr/fuzz/seeds/ctr_path
	scripts/fuzz.sh $(or $(FUZZ_NETD_SECONDS),30) netd/fuzz \
		interfaces_text=netd/fuzz/seeds/interfaces firewall_text=netd/fuzz/seeds/firewall

appliance: iso guest guest-debian ct-template
	cargo test -p qemu-tests -- --test-threads=1

# A fresh checkout's unchanged files get back the times the last run saw,
# so cargo builds again only the crates whose sources changed
# (scripts/keep-mtimes.py; the record is target/source-mtimes.json).
mtimes:
	scripts/keep-mtimes.py

test: deps mtimes lint ct-template unit fuzz appliance

bench-boot: iso
	$(STATIC) cargo build --release --target $(TARGET) -p qemu-tests --bin floor-init
	cargo run --release -p qemu-tests --bin bench-boot -- --runs $(or $(RUNS),3) --iso-bus $(or $(ISO_BUS),ahci) --network $(or $(NETWORK),static) $(if $(TIMELINE),--timeline) $(if $(ALSO_ISO),--also-iso $(ALSO_ISO))

# The VMM against QEMU, nested in the appliance. The benchmark ISO is the
# product image plus Debian's qemu-system-x86 (the peer) and iperf3 (the
# other end of bench-vmm-io's network runs).
BENCH_ISO := target/oxbow-bench.iso
bench-iso: bins
	cargo run --release -p image -- --bins $(BINS) --out $(BENCH_ISO) --revision $(GIT_REV) \
		--extra-packages qemu-system-x86,iperf3

bench-vmm: bench-iso guest
	$(STATIC) cargo build --release --target $(TARGET) -p qemu-tests --bin bench-run
	cargo run --release -p qemu-tests --bin bench-vmm -- --runs $(or $(RUNS),3) --iso $(BENCH_ISO) \
		$(if $(KERNEL_CACHE),--kernel-cache)

# virtio-blk (fio) and virtio-net (iperf3) of the VMM against QEMU with
# vhost-net on and off, nested in the same benchmark ISO (docs/perf.md).
# INTERLEAVED=N: the network only, every guest up at once and iperf3 run
# against each in turn, N rounds.
bench-vmm-io: bench-iso guest guest-debian-bench
	cargo run --release -p qemu-tests --bin bench-vmm-io -- --runs $(or $(RUNS),3) \
		--secs $(or $(SECS),10) --iso $(BENCH_ISO) $(if $(OWN_PATH),--own-path) \
		$(if $(INTERLEAVED),--interleaved $(INTERLEAVED))

# apid against a bare hyper + rustls floor under wrk (docs/perf.md).
bench-api: deps
	cargo build --release -p init -p api
	cargo run --release -p qemu-tests --bin bench-api -- --vms $(or $(VMS),1000)

# The benchmarks against LXC and ifupdown2 run inside a benchmark variant
# of the ISO: the product image plus the peers from Debian (lxc,
# ifupdown2) and busybox-static for the containers' root file system.
PEERS_ISO := target/oxbow-bench-peers.iso
PEER_PACKAGES := lxc,ifupdown2,busybox-static
peers-iso: deps bins
	cargo run --release -p image -- --bins $(BINS) --out $(PEERS_ISO) --revision $(GIT_REV) \
		--extra-packages $(PEER_PACKAGES)

# Container start against lxc-start -F and a namespaces + pivot_root floor:
# privileged on the host (with Debian's lxc), and both configurations in the
# appliance (docs/perf.md).
bench-ct: peers-iso
	scripts/install-deps.sh lxc
	$(STATIC) cargo build --release --target $(TARGET) -p qemu-tests --bin bench-ct-run
	cargo run --release -p qemu-tests --bin bench-ct -- --runs $(or $(RUNS),20) \
		--appliance-runs $(or $(APPLIANCE_RUNS),20)

# netd interfaces apply against ifupdown2's ifreload -a on 100 bridges and
# VLANs, from a cold start, in the appliance (docs/perf.md).
bench-netd: peers-iso
	$(STATIC) cargo build --release --target $(TARGET) -p qemu-tests --bin bench-netd-run
	cargo run --release -p qemu-tests --bin bench-netd -- --runs $(or $(RUNS),5) \
		--bridges $(or $(BRIDGES),100)

# The firewall's compile and netlink apply of 10,000 host rules against
# nft -f, each side in a fresh network namespace (docs/perf.md; root).
bench-firewall: deps
	cargo build --release -p qemu-tests --bin bench-firewall
	target/release/bench-firewall --rules $(or $(RULES),10000) --runs $(or $(RUNS),9)

clean:
	cargo clean
