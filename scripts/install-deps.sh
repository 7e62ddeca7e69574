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

if ! command -v cargo >/dev/null; then
    echo "cargo is missing: install Rust (rustup) first" >&2
    exit 1
fi
for c in clippy rustfmt; do
    if ! cargo "$c" --version >/dev/null 2>&1; then
        rustup component add "$c"
    fi
done
