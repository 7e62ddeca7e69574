#!/usr/bin/env bash
# Installs every host package Oxbow's build, run and tests need (Debian 12),
# and the packages given as arguments.
set -euo pipefail

packages=(
    # ISO build
    debootstrap squashfs-tools grub-pc-bin grub-efi-amd64-bin grub-common
    xorriso mtools dosfstools kmod dpkg-dev zstd cpio
    # guest test assets: the kernel's xz payload becomes the PVH vmlinux;
    # the Debian guest image is made with mkfs.ext4 -d and read with debugfs
    xz-utils e2fsprogs
    # running and testing the appliance
    qemu-system-x86 ovmf
    # host network tests
    iproute2 dnsmasq-base nftables slirp4netns iputils-ping
    # the container runtime's host tests: busybox is the small template's
    # userland; GNU tar writes the sparse hostile template
    busybox-static tar
    # building crates with C parts
    build-essential pkg-config
    # tools the tests and scripts call
    openssl curl ca-certificates python3 python3-venv
    # the API benchmark's load generator
    wrk
    # the VMM's ACPI tables are checked with an independent disassembler
    acpica-tools
)

# Further packages named on the command line (the benchmarks' peers).
packages+=("$@")

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# QEMU 8.0 or later runs the appliance's tests. QEMU 7.2 (Debian 12's own)
# translates the code of a position-independent executable anew at every
# exec, since each run loads it at another random address: every start
# of one of Oxbow's static-pie binaries inside the appliance paid for
# translating all the code it ran (docs/perf.md, "Containers"). Later
# versions translate such code once. Debian 12 gets it from its backports
# suite, added from the mirror its own packages come from.
qemu_major=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null | sed -E 's/^[0-9]+://; s/[^0-9].*//')
if [ "${qemu_major:-0}" -lt 8 ]; then
    . /etc/os-release
    backports="${VERSION_CODENAME}-backports"
    if ! apt-cache policy | grep -q " ${backports}/main "; then
        mirror=$(apt-cache policy | awk -v suite="${VERSION_CODENAME}/main" '$3 == suite { print $2; exit }')
        if [ -z "$mirror" ]; then
            echo "no apt source for ${VERSION_CODENAME}/main to add ${backports} beside" >&2
            exit 1
        fi
        printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$mirror" "$backports" | $SUDO tee /etc/apt/sources.list.d/oxbow-backports.sources >/dev/null
        $SUDO apt-get update -q
    fi
    echo "installing QEMU from ${backports}"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
        -t "$backports" qemu-system-x86
fi

if ! command -v cargo >/dev/null; then
    echo "cargo is missing: install Rust (rustup) first" >&2
    exit 1
fi
for c in clippy rustfmt; do
    if ! cargo "$c" --version >/dev/null 2>&1; then
        rustup component add "$c"
    fi
done
