"""The API of a booted Oxbow appliance, driven by proxmoxer as a Proxmox
user would drive Proxmox VE.

Run by qemu-tests/tests/api_proxmoxer.rs in two phases around a `kill -9`
of apid (which the harness does through init's test channel):

  proxmoxer_flow.py before-kill STATE_FILE
  proxmoxer_flow.py resize STATE_FILE       (while the guest waits for the
                                            power button)
  proxmoxer_flow.py after-kill STATE_FILE
  proxmoxer_flow.py after-boot STATE_FILE   (after apid was started as on a
                                            fresh node boot)
  proxmoxer_flow.py containers STATE_FILE   (a Debian 12 container from the
                                            template OXBOW_CT_TEMPLATE)

Environment: OXBOW_API_PORT, OXBOW_PASSWORD, OXBOW_KERNEL, OXBOW_INITRD
(paths of the guest kernel and initramfs to upload). Every check that
fails raises; the exit status is non-zero and the message says which.
"""

import json
import os
import shutil
import sys
import tempfile
import time

import requests
import urllib3
from proxmoxer import ProxmoxAPI
from proxmoxer.backends.https import AuthenticationError
from proxmoxer.core import ResourceException
from proxmoxer.tools import Tasks

urllib3.disable_warnings()

HOST = "127.0.0.1"
PORT = int(os.environ["OXBOW_API_PORT"])
PASSWORD = os.environ["OXBOW_PASSWORD"]
BASE = f"https://{HOST}:{PORT}/api2/json"
VMID = 100
# The test initramfs reports what it sees on the serial console; with
# oxbow.wait-power it then waits for the ACPI power button, without it
# it powers the VM off by itself.
CMDLINE_WAIT = "console=ttyS0 quiet panic=-1 oxbow.wait-power"
CMDLINE_POWEROFF = "console=ttyS0 quiet panic=-1"
CMDLINE_REBOOT = "console=ttyS0 quiet panic=-1 oxbow.reboot"
GUEST_TIMEOUT = 600


def step(text):
    print(f"proxmoxer-flow: {text}", flush=True)


def check(condition, text):
    if not condition:
        raise AssertionError(text)


def api(user="root@pam", password=PASSWORD):
    return ProxmoxAPI(HOST, port=PORT, user=user, password=password, verify_ssl=False,
                      timeout=60)


def wait_task(prox, upid, what, timeout=GUEST_TIMEOUT):
    status = Tasks.blocking_status(prox, upid, timeout=timeout, polling_interval=1)
    check(status is not None, f"{what}: task {upid} still running after {timeout} s")
    if status.get("exitstatus") != "OK":
        node = Tasks.decode_upid(upid)["node"]
        log = prox.nodes(node).tasks(upid).log.get(limit=200)
        lines = "\n".join(entry["t"] for entry in log)
        raise AssertionError(f"{what}: task ended with {status.get('exitstatus')!r}:\n{lines}")
    return status


def expect_error(status, what, call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except ResourceException as e:
        check(e.status_code == status, f"{what}: expected {status}, got {e.status_code} {e}")
        return e
    raise AssertionError(f"{what}: expected {status}, but the call succeeded")


def wait_status(prox, node, want, timeout=GUEST_TIMEOUT):
    end = time.monotonic() + timeout
    while True:
        current = prox.nodes(node).qemu(VMID).status.current.get()
        if current["status"] == want:
            return current
        check(time.monotonic() < end, f"VM {VMID} not {want} after {timeout} s: {current}")
        time.sleep(2)


def before_kill(state_file):
    # Wrong passwords get 401.
    try:
        api(password="wrong-password")
        raise AssertionError("a wrong password logged in")
    except AuthenticationError:
        pass
    r = requests.post(f"{BASE}/access/ticket", verify=False,
                      data={"username": "root@pam", "password": "wrong-password"})
    check(r.status_code == 401, f"wrong password: {r.status_code}")
    step("a wrong password gets 401")

    prox = api()
    node = prox.nodes.get()[0]["node"]
    check(prox.version.get()["version"].startswith("8."), "version")

    # Upload the guest kernel and initramfs to storage `local` (content
    # iso, whose names end in .img or .iso, as on Proxmox VE).
    with tempfile.TemporaryDirectory() as tmp:
        for source, name in ((os.environ["OXBOW_KERNEL"], "vmlinuz-oxbow.img"),
                             (os.environ["OXBOW_INITRD"], "initrd-oxbow.img")):
            path = os.path.join(tmp, name)
            shutil.copyfile(source, path)
            with open(path, "rb") as f:
                upid = prox.nodes(node).storage("local").upload.post(content="iso", filename=f)
            wait_task(prox, upid, f"upload {name}")
    isos = [c["volid"] for c in prox.nodes(node).storage("local").content.get(content="iso")]
    check("local:iso/vmlinuz-oxbow.img" in isos and "local:iso/initrd-oxbow.img" in isos,
          f"uploaded volumes: {isos}")
    step("kernel and initramfs uploaded")

    # Bad input: a 400 naming each wrong parameter, and nothing written.
    e = expect_error(400, "bad create", prox.nodes(node).qemu.post, vmid=99, memory="lots",
                     net0="virtio=01:00:00:00:00:01,bridge=vmbr0")
    for name in ("vmid", "memory", "net0"):
        check(name in str(e.errors or e.content), f"bad create: no error for {name}: {e}")
    e = expect_error(400, "missing volumes", prox.nodes(node).qemu.post, vmid=VMID,
                     virtio0=f"local:{VMID}/vm-{VMID}-disk-7.raw",
                     kernel="local:iso/missing.img")
    for name in ("virtio0", "kernel"):
        check(name in str(e.errors or e.content), f"missing volume: no error for {name}: {e}")
    expect_error(400, "bad size", prox.nodes(node).qemu.post, vmid=VMID, virtio0="local:abc")
    expect_error(400, "bad bridge", prox.nodes(node).qemu.post, vmid=VMID,
                 net0="virtio,bridge=br-with-a-far-too-long-name")
    expect_error(400, "bad tag", prox.nodes(node).qemu.post, vmid=VMID,
                 net0="virtio,bridge=vmbr0,tag=4095")
    check(prox.nodes(node).qemu.get() == [], "a refused create left a VM behind")
    check(str(prox.cluster.nextid.get()) == str(VMID), "nextid after refused creates")
    step("bad input gets 400 per parameter and writes nothing")

    # Create a VM that boots the uploaded kernel directly, and start it.
    upid = prox.nodes(node).qemu.post(
        vmid=VMID, name="proxmoxer-test", memory=256, cores=1, sockets=1, ostype="l26",
        kernel="local:iso/vmlinuz-oxbow.img", initrd="local:iso/initrd-oxbow.img",
        cmdline=CMDLINE_WAIT, net0="virtio,bridge=vmbr0", virtio0="local:1",
        description="made by proxmoxer")
    wait_task(prox, upid, "create")
    config = prox.nodes(node).qemu(VMID).config.get()
    check(config["name"] == "proxmoxer-test", f"config: {config}")
    check(config["virtio0"].startswith(f"local:{VMID}/vm-{VMID}-disk-0.raw"), f"disk: {config}")
    check(config["net0"].startswith("virtio="), f"MAC assigned: {config}")
    expect_error(400, "duplicate vmid", prox.nodes(node).qemu.post, vmid=VMID, memory=256)
    step(f"VM {VMID} created: {config['virtio0']}, {config['net0']}")

    upid = prox.nodes(node).qemu(VMID).status.start.post()
    wait_task(prox, upid, "start")
    first = wait_status(prox, node, "running", timeout=30)
    check(first.get("pid", 0) > 0, f"running without a pid: {first}")
    time.sleep(3)
    second = prox.nodes(node).qemu(VMID).status.current.get()
    check(second["uptime"] > first["uptime"], f"uptime does not grow: {first} {second}")
    resources = prox.cluster.resources.get(type="vm")
    check(any(r["vmid"] == VMID and r["status"] == "running" for r in resources),
          f"cluster resources: {resources}")
    step(f"VM {VMID} running, pid {second['pid']}, uptime {second['uptime']} s")

    # Reset: the VMM ends as on the guest's own reset and init starts it
    # again with the same configuration; the task ends once it answers.
    upid = prox.nodes(node).qemu(VMID).status.reset.post()
    wait_task(prox, upid, "reset")
    after_reset = prox.nodes(node).qemu(VMID).status.current.get()
    check(after_reset["status"] == "running"
          and after_reset.get("pid") not in (None, 0, second["pid"]),
          f"after the reset: {after_reset}, before: pid {second['pid']}")
    step(f"VM {VMID} reset: VMM pid {second['pid']} -> {after_reset['pid']}")
    second = after_reset

    # net0's cable pulled while the VM runs: applied at once (the test
    # reads the VMM's and the tap's link state after this phase).
    net0 = prox.nodes(node).qemu(VMID).config.get()["net0"]
    prox.nodes(node).qemu(VMID).config.put(net0=net0 + ",link_down=1")
    check("link_down=1" in prox.nodes(node).qemu(VMID).config.get()["net0"],
          "link_down=1 not in the configuration")
    expect_error(500, "a bridge that is not there", prox.nodes(node).qemu(VMID).config.put,
                 net0=net0.replace("bridge=vmbr0", "bridge=vmbr9"))
    after = prox.nodes(node).qemu(VMID).config.get()["net0"]
    check("bridge=vmbr0" in after and "link_down=1" in after,
          f"a refused live change was written: {after}")
    step("net0's cable pulled while running; a missing bridge refused")

    # A token with privilege separation, allowed to audit: reads, cannot delete.
    token = prox.access.users("root@pam").token("audit").post(privsep=1)
    prox.access.acl.put(path="/", roles="PVEAuditor", tokens="root@pam!audit")
    reader = ProxmoxAPI(HOST, port=PORT, user="root@pam", token_name="audit",
                        token_value=token["value"], verify_ssl=False)
    check(reader.nodes(node).qemu(VMID).status.current.get()["status"] == "running",
          "token read")
    expect_error(403, "token delete", reader.nodes(node).qemu(VMID).delete)
    expect_error(403, "token stop", reader.nodes(node).qemu(VMID).status.stop.post)
    step("a privilege-separated token reads and cannot delete (403)")

    # A user without privileges gets 403.
    prox.access.users.post(userid="alice@pve", password="alice-password-1")
    alice = api(user="alice@pve", password="alice-password-1")
    expect_error(403, "unprivileged status", alice.nodes(node).qemu(VMID).status.current.get)
    expect_error(403, "unprivileged stop", alice.nodes(node).qemu(VMID).status.stop.post)
    check(alice.nodes(node).qemu.get() == [], "an unprivileged user sees VMs")
    step("an unprivileged user gets 403")

    # A POST without the CSRF prevention token gets 401.
    ticket = requests.post(f"{BASE}/access/ticket", verify=False,
                           data={"username": "root@pam", "password": PASSWORD}).json()["data"]
    r = requests.post(f"{BASE}/nodes/{node}/qemu/{VMID}/status/stop", verify=False,
                      cookies={"PVEAuthCookie": ticket["ticket"]})
    check(r.status_code == 401, f"missing CSRF: {r.status_code}")
    check(prox.nodes(node).qemu(VMID).status.current.get()["status"] == "running",
          "a refused stop stopped the VM")
    step("a missing CSRF token gets 401")

    with open(state_file, "w") as f:
        json.dump({"node": node, "pid": second["pid"]}, f)


def resize(state_file):
    with open(state_file) as f:
        state = json.load(f)
    node = state["node"]
    prox = api()
    vm = prox.nodes(node).qemu(VMID)
    disk = vm.config.get()["virtio0"]
    check(disk.endswith(",size=1G"), f"virtio0 before: {disk}")
    # Refused before anything changes: a shrink, a disk that is not
    # there, a size that is not one.
    for what, kwargs in [("shrink", {"disk": "virtio0", "size": "512M"}),
                         ("no such disk", {"disk": "virtio5", "size": "+1G"}),
                         ("not a disk", {"disk": "net0", "size": "+1G"}),
                         ("not a size", {"disk": "virtio0", "size": "1GB"})]:
        expect_error(400, what, vm.resize.put, **kwargs)
    check(vm.config.get()["virtio0"] == disk, "a refused resize changed the configuration")
    # Grown by 1 GiB while the VM runs (the harness then waits for the
    # guest to see 2 GiB), and the same size again changes nothing.
    upid = vm.resize.put(disk="virtio0", size="+1G")
    wait_task(prox, upid, "resize")
    grown = vm.config.get()["virtio0"]
    check(grown == disk.replace("size=1G", "size=2G"), f"virtio0 after +1G: {grown}")
    wait_task(prox, vm.resize.put(disk="virtio0", size="2G"), "resize to the same size")
    check(vm.status.current.get()["status"] == "running", "the VM stopped")
    step(f"virtio0 grew while running: {grown}")

    # What took effect while running (the cable pulled before apid was
    # killed, the grown disk, a new name) is not pending; memory is, until
    # the next start.
    def pending():
        return {item["key"]: item for item in vm.pending.get()}
    before = pending()
    check(all("pending" not in item and "delete" not in item for item in before.values()),
          f"pending before any change: {before}")
    check(before["virtio0"]["value"] == grown, f"virtio0 in pending: {before['virtio0']}")
    vm.config.put(memory=300, name="proxmoxer-renamed")
    after = pending()
    check(after["memory"] == {"key": "memory", "value": "256", "pending": "300"},
          f"memory in pending: {after['memory']}")
    check(after["name"] == {"key": "name", "value": "proxmoxer-renamed"},
          f"name in pending: {after['name']}")
    check(vm.config.get(current=1)["memory"] == "256", "current=1 shows the running memory")
    check(vm.config.get()["memory"] == "300", "the configuration shows the new memory")
    step("pending: memory waits for the next start; the name, the disk and the cable do not")


def after_kill(state_file):
    with open(state_file) as f:
        state = json.load(f)
    node = state["node"]
    prox = api()
    current = prox.nodes(node).qemu(VMID).status.current.get()
    check(current["status"] == "running" and current["pid"] == state["pid"],
          f"after apid was killed: {current}, before: pid {state['pid']}")
    step("the VM kept running while apid was killed and restarted")

    # The cable plugged in again while it runs.
    net0 = prox.nodes(node).qemu(VMID).config.get()["net0"]
    check("link_down=1" in net0, f"net0 after the restart: {net0}")
    prox.nodes(node).qemu(VMID).config.put(net0=net0.replace(",link_down=1", ""))
    step("net0's cable plugged in again while running")

    # The ACPI power button: the guest shuts down, the VM is stopped.
    upid = prox.nodes(node).qemu(VMID).status.shutdown.post(timeout=GUEST_TIMEOUT)
    wait_task(prox, upid, "shutdown")
    wait_status(prox, node, "stopped", timeout=30)
    step("shutdown through ACPI: stopped")

    # Without oxbow.wait-power the guest powers itself off.
    digest = prox.nodes(node).qemu(VMID).config.get()["digest"]
    prox.nodes(node).qemu(VMID).config.put(cmdline=CMDLINE_POWEROFF, digest=digest)
    e = expect_error(500, "stale digest", prox.nodes(node).qemu(VMID).config.put,
                     memory=300, digest=digest)
    check("modified" in str(e), f"stale digest: {e}")
    upid = prox.nodes(node).qemu(VMID).status.start.post()
    wait_task(prox, upid, "second start")
    wait_status(prox, node, "stopped")
    step("the guest powered itself off: stopped")

    # A guest that reboots is started again: the VMM's pid changes and the
    # VM stays running.
    prox.nodes(node).qemu(VMID).config.put(cmdline=CMDLINE_REBOOT)
    upid = prox.nodes(node).qemu(VMID).status.start.post()
    wait_task(prox, upid, "start for reboot")
    first = wait_status(prox, node, "running", timeout=30)
    end = time.monotonic() + GUEST_TIMEOUT
    while True:
        current = prox.nodes(node).qemu(VMID).status.current.get()
        if current["status"] == "running" and current.get("pid") not in (None, 0, first["pid"]):
            break
        check(time.monotonic() < end, f"no restart after the guest rebooted: {current}")
        time.sleep(2)
    upid = prox.nodes(node).qemu(VMID).status.stop.post()
    wait_task(prox, upid, "stop after reboot")
    wait_status(prox, node, "stopped", timeout=30)
    step(f"the guest rebooted: VMM pid {first['pid']} -> {current['pid']}, then stopped")

    # For the next phase: start with the node.
    prox.nodes(node).qemu(VMID).config.put(onboot=1, cmdline=CMDLINE_WAIT)


def after_boot(state_file):
    with open(state_file) as f:
        state = json.load(f)
    node = state["node"]
    prox = api()
    current = wait_status(prox, node, "running", timeout=60)
    step(f"onboot: the VM was started with the node (pid {current['pid']})")
    upid = prox.nodes(node).qemu(VMID).status.stop.post()
    wait_task(prox, upid, "stop")
    wait_status(prox, node, "stopped", timeout=30)

    upid = prox.nodes(node).qemu(VMID).delete(purge=1)
    wait_task(prox, upid, "destroy")
    check(prox.nodes(node).qemu.get() == [], "VM still listed after destroy")
    images = prox.nodes(node).storage("local").content.get(content="images")
    check(images == [], f"disks left after destroy: {images}")
    step("destroyed with its disk")


def wait_ct_status(prox, node, vmid, want, timeout=GUEST_TIMEOUT):
    end = time.monotonic() + timeout
    while True:
        current = prox.nodes(node).lxc(vmid).status.current.get()
        if current["status"] == want:
            return current
        check(time.monotonic() < end, f"CT {vmid} not {want} after {timeout} s: {current}")
        time.sleep(2)


def containers(state_file):
    prox = api()
    node = prox.nodes.get()[0]["node"]
    template = os.environ["OXBOW_CT_TEMPLATE"]
    name = os.path.basename(template)
    with open(template, "rb") as f:
        upid = prox.nodes(node).storage("local").upload.post(content="vztmpl", filename=f)
    wait_task(prox, upid, f"upload {name}")
    templates = [c["volid"] for c in prox.nodes(node).storage("local").content.get(content="vztmpl")]
    check(f"local:vztmpl/{name}" in templates, f"templates: {templates}")
    step(f"template {name} uploaded")

    vmid = int(prox.cluster.nextid.get())
    expect_error(400, "a privileged container", prox.nodes(node).lxc.post, vmid=vmid,
                 ostemplate=f"local:vztmpl/{name}", rootfs="local:4", unprivileged=0)
    upid = prox.nodes(node).lxc.post(vmid=vmid, ostemplate=f"local:vztmpl/{name}",
                                     rootfs="local:4", hostname="ct-e2e", memory=256, swap=0,
                                     cores=1, password="ct-secret-1")
    wait_task(prox, upid, "create the container")
    config = prox.nodes(node).lxc(vmid).config.get()
    check(config["hostname"] == "ct-e2e" and config["unprivileged"] == 1
          and config["rootfs"].startswith(f"local:{vmid}/subvol-{vmid}-disk-0.subvol"),
          f"config: {config}")
    prox.nodes(node).lxc(vmid).config.put(memory=384, digest=config["digest"])
    check(prox.nodes(node).lxc(vmid).config.get()["memory"] == 384, "memory not changed")
    step(f"CT {vmid} created: {config['rootfs']}")

    upid = prox.nodes(node).lxc(vmid).status.start.post()
    wait_task(prox, upid, "start the container")
    current = wait_ct_status(prox, node, vmid, "running", timeout=60)
    check(current.get("pid", 0) > 1, f"status: {current}")
    listed = [c["vmid"] for c in prox.nodes(node).lxc.get() if c["status"] == "running"]
    check(vmid in listed, f"running containers: {listed}")
    resources = prox.cluster.resources.get(type="vm")
    check(any(r["id"] == f"lxc/{vmid}" and r["status"] == "running" for r in resources),
          f"resources: {resources}")
    expect_error(500, "destroying a running container", prox.nodes(node).lxc(vmid).delete)
    step(f"CT {vmid} running (pid {current['pid']})")

    # systemd halts on SIGRTMIN+3 once it is up: give it time to boot.
    time.sleep(20)
    upid = prox.nodes(node).lxc(vmid).status.shutdown.post(timeout=120)
    wait_task(prox, upid, "shut the container down")
    wait_ct_status(prox, node, vmid, "stopped", timeout=60)
    step(f"CT {vmid} shut down")

    upid = prox.nodes(node).lxc(vmid).delete()
    wait_task(prox, upid, "destroy the container")
    check(prox.nodes(node).lxc.get() == [], "container still listed after destroy")
    images = prox.nodes(node).storage("local").content.get(content="images")
    check(images == [], f"volumes left after destroy: {images}")
    step(f"CT {vmid} destroyed with its root directory")


def network(state_file):
    prox = api()
    node = prox.nodes.get()[0]["node"]
    ifaces = {i["iface"]: i for i in prox.nodes(node).network.get()}
    vmbr0 = ifaces.get("vmbr0", {})
    check(vmbr0.get("type") == "bridge" and vmbr0.get("active") == 1 and vmbr0.get("bridge_ports"),
          f"vmbr0 as the node describes it: {vmbr0}")
    step(f"network: vmbr0 with port {vmbr0['bridge_ports']}")

    expect_error(400, "a bridge port that does not exist", prox.nodes(node).network.post,
                 iface="vmbr1", type="bridge", bridge_ports="nosuchnic0")
    prox.nodes(node).network.post(iface="vmbr1", type="bridge", autostart=1,
                                  bridge_vlan_aware=1, comments="e2e")
    pending = prox.nodes(node).network.get()
    check(any(i["iface"] == "vmbr1" for i in pending), f"staged list: {pending}")
    upid = prox.nodes(node).network.put()
    wait_task(prox, upid, "apply the network configuration")
    ifaces = {i["iface"]: i for i in prox.nodes(node).network.get()}
    check(ifaces.get("vmbr1", {}).get("active") == 1, f"vmbr1 after the apply: {ifaces.get('vmbr1')}")
    check(ifaces.get("vmbr0", {}).get("active") == 1, f"vmbr0 after the apply: {ifaces.get('vmbr0')}")
    step("network: vmbr1 (VLAN-aware) created and applied, vmbr0 untouched, API still reachable")

    fw = prox.cluster.firewall
    fw.aliases.post(name="e2enet", cidr="192.0.2.0/24", comment="e2e")
    fw.ipset.post(name="e2eset", comment="e2e")
    fw.ipset("e2eset").post(cidr="e2enet")
    fw.ipset("e2eset").post(cidr="198.51.100.7", nomatch=1)
    expect_error(400, "an ipset entry naming no alias", fw.ipset("e2eset").post, cidr="nosuchalias")
    entries = [e["cidr"] for e in fw.ipset("e2eset").get()]
    check(entries == ["e2enet", "198.51.100.7"], f"ipset entries: {entries}")
    fw.rules.post(type="in", action="DROP", source="+e2eset", enable=1, comment="e2e")
    expect_error(400, "a rule naming an unknown ipset", fw.rules.post, type="in", action="DROP",
                 source="+nosuchset")
    # The firewall on, input policy DROP: the API (8006) stays reachable.
    fw.options.put(enable=1, policy_in="DROP")
    check(fw.options.get().get("enable") == 1, "firewall not enabled")
    rules = fw.rules.get()
    check(rules[0]["source"] == "+e2eset", f"rules: {rules}")
    fw.rules(0).delete()
    fw.options.put(enable=0)
    step("firewall: alias, ipset and rule edited; enabled with policy DROP and the API still answers")


def main():
    phase, state_file = sys.argv[1], sys.argv[2]
    {"before-kill": before_kill, "resize": resize, "after-kill": after_kill,
     "after-boot": after_boot,
     "containers": containers, "network": network}[phase](state_file)
    step(f"{phase}: all checks passed")


if __name__ == "__main__":
    main()
