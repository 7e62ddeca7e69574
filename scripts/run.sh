#!/usr/bin/env bash
# Boots target/oxbow.iso under QEMU with a fresh seed: a random root password
# (printed below) and DHCP on QEMU's user network. The API is forwarded to
# https://127.0.0.1:8006. The serial console is this terminal; Ctrl-A X quits.
set -euo pipefail

iso=${ISO:-target/oxbow.iso}
port=${PORT:-8006}
work=target/run
mkdir -p "$work/seed"

password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=' | head -c 20)
cat > "$work/seed/answer.toml" <<TOML
[global]
fqdn = "oxbow.local"
root-password = "$password"

[network]
source = "from-dhcp"
TOML
chmod 600 "$work/seed/answer.toml"
rm -f "$work/seed.iso"
xorriso -as mkisofs -quiet -V OXBOW-SEED -J -r -o "$work/seed.iso" "$work/seed"
rm -f "$work/seed/answer.toml"

if grep -qwE 'vmx|svm' /proc/cpuinfo && [ -w /dev/kvm ]; then
    accel=(-accel kvm -cpu host)
else
    accel=(-accel tcg,thread=multi -cpu max)
fi

cat <<MSG

  Oxbow is booting. Once the console shows "apid is ready":
    URL:      https://127.0.0.1:${port}
    user:     root@pam
    password: ${password}

MSG

exec qemu-system-x86_64 "${accel[@]}" -machine q35 -m "${MEMORY:-4096}" -smp "${CPUS:-2}" \
    -nodefaults -display none -serial mon:stdio \
    -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:${port}-:8006" -device virtio-net-pci,netdev=n0 \
    -device virtio-rng-pci \
    -drive "file=$iso,media=cdrom,if=none,id=cd0,readonly=on" -device ide-cd,drive=cd0,bus=ide.0,bootindex=0 \
    -drive "file=$work/seed.iso,media=cdrom,if=none,id=seed,readonly=on" -device ide-cd,drive=seed,bus=ide.1
