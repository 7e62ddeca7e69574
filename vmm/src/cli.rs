//! The command line of the `vmm` binary.

use std::path::PathBuf;

use crate::virtio::net::{MacAddr, VhostMode};
use crate::vm::{DiskConfig, NetConfig, SerialOut, VmConfig};

/// The usage text.
pub const USAGE: &str = "\
usage: vmm --kernel PATH [--initrd PATH] [--cmdline STR] [--memory MIB]
           [--cpus N] [--serial stdio|file=PATH|none] [--api-socket PATH]
           [--disk PATH[,readonly]]... [--net tap=NAME[,mac=MAC][,vhost=on|off|auto][,link=up|down]]... [--no-rng]
           [--kernel-cache DIR]
       vmm ctl SOCKET (ping|info|pause|resume|shutdown|stop|JSON)
       vmm probe

  --kernel PATH       bzImage, or ELF vmlinux with a PVH entry note
  --initrd PATH       initial ramdisk
  --cmdline STR       kernel command line [default: console=ttyS0]
  --memory MIB        guest memory in MiB, or with a suffix M or G [default: 512]
  --cpus N            vCPUs, 1-254 [default: 1]
  --serial WHERE      the console: stdio, file=PATH or none [default: stdio]
  --api-socket PATH   control socket (JSON lines; see docs/vmm.md)
  --disk PATH[,readonly]
                      a virtio-blk disk on a raw image or block device; repeatable
  --net tap=NAME[,mac=MAC][,vhost=on|off|auto][,link=up|down]
                      a virtio-net NIC on an existing tap; repeatable. Its
                      frames move through the VMM (off, the default), the
                      kernel's vhost-net (on), or vhost-net where
                      /dev/vhost-net opens (auto); vhost-net is experimental.
                      link=down starts it with no carrier (`set-link` on
                      the control socket changes it)
  --no-rng            no virtio-rng device (one is added by default)
  --kernel-cache DIR  keep the kernel unpacked from an xz bzImage in DIR and
                      boot it through its PVH entry, skipping the guest's
                      decompressor from the next boot on (docs/vmm.md)
  --user UID[:GID]    give up root for this user and group once the VM is
                      built, before the guest runs (start as root)
  --seccomp MODE      the system call filter installed then: on (a call
                      outside the VMM's list kills it), log (logged and
                      allowed) or off [default: on]

exit status: 0 the guest powered off (or `stop`), 3 the guest reset,
1 an error or a guest KVM could not run, 2 bad usage";

/// Parses `--memory`: MiB, or a number with M or G.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let (num, mul) = match s.chars().last() {
        Some('G') | Some('g') => (&s[..s.len() - 1], 1024),
        Some('M') | Some('m') => (&s[..s.len() - 1], 1),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(|| format!("--memory {s}: not a size in MiB"))
}

/// Parses `--disk PATH[,readonly]`.
pub fn parse_disk(s: &str) -> Result<DiskConfig, String> {
    let mut parts = s.split(',');
    let path = parts
        .next()
        .filter(|p| !p.is_empty())
        .ok_or("--disk needs a path")?;
    let mut d = DiskConfig {
        path: PathBuf::from(path),
        readonly: false,
    };
    for opt in parts {
        match opt {
            "readonly" | "ro" => d.readonly = true,
            other => {
                return Err(format!(
                    "--disk {s}: unknown option {other:?} (known: readonly)"
                ))
            }
        }
    }
    Ok(d)
}

/// Parses `--net tap=NAME[,mac=MAC]`.
pub fn parse_net(s: &str) -> Result<NetConfig, String> {
    let mut tap = None;
    let mut mac = None;
    let mut vhost = VhostMode::default();
    let mut link_up = true;
    for opt in s.split(',') {
        match opt.split_once('=') {
            Some(("tap", v)) if !v.is_empty() => tap = Some(v.to_string()),
            Some(("mac", v)) => {
                mac = Some(
                    v.parse::<MacAddr>()
                        .map_err(|e| format!("--net {s}: mac {v}: {e}"))?,
                )
            }
            Some(("vhost", v)) => {
                vhost = match v {
                    "on" => VhostMode::On,
                    "off" => VhostMode::Off,
                    "auto" => VhostMode::Auto,
                    _ => return Err(format!("--net {s}: vhost={v}: expected on, off or auto")),
                }
            }
            Some(("link", v)) => {
                link_up = match v {
                    "up" => true,
                    "down" => false,
                    _ => return Err(format!("--net {s}: link={v}: expected up or down")),
                }
            }
            _ => {
                return Err(format!(
                    "--net {s}: expected tap=NAME[,mac=MAC][,vhost=on|off|auto][,link=up|down]"
                ))
            }
        }
    }
    Ok(NetConfig {
        tap: tap.ok_or(format!("--net {s}: tap=NAME is required"))?,
        mac,
        vhost,
        link_up,
    })
}

/// Parses `--serial`.
pub fn parse_serial(s: &str) -> Result<SerialOut, String> {
    match s {
        "stdio" => Ok(SerialOut::Stdio),
        "none" | "null" => Ok(SerialOut::Null),
        _ => match s.strip_prefix("file=") {
            Some(p) if !p.is_empty() => Ok(SerialOut::File(PathBuf::from(p))),
            _ => Err(format!("--serial {s}: expected stdio, file=PATH or none")),
        },
    }
}

/// Parses the arguments (without the program name) into a configuration.
pub fn parse(args: &[String]) -> Result<VmConfig, String> {
    let mut c = VmConfig::default();
    let mut kernel = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") && f != "--serial" => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag {
            "--kernel" => kernel = Some(PathBuf::from(value()?)),
            "--initrd" => c.initrd = Some(PathBuf::from(value()?)),
            "--cmdline" => c.cmdline = value()?,
            "--memory" => c.memory_mib = parse_memory(&value()?)?,
            "--cpus" => {
                let v = value()?;
                c.cpus = v
                    .parse()
                    .map_err(|_| format!("--cpus {v}: not a number from 1 to 254"))?;
            }
            "--serial" => c.serial = parse_serial(&value()?)?,
            "--api-socket" => c.api_socket = Some(PathBuf::from(value()?)),
            "--disk" => c.disks.push(parse_disk(&value()?)?),
            "--net" => c.nets.push(parse_net(&value()?)?),
            "--no-rng" => c.rng = false,
            "--kernel-cache" => c.kernel_cache = Some(PathBuf::from(value()?)),
            "--user" => c.sandbox.user = Some(crate::sandbox::parse_user(&value()?)?),
            "--seccomp" => c.sandbox.seccomp = value()?.parse()?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    c.kernel = kernel.ok_or("--kernel is required")?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn full_command_line() {
        let c = parse(&args(
            "--kernel /k --initrd /i --cmdline quiet --memory 1G --cpus 2 --serial file=/dev/console --api-socket /run/s",
        ))
        .unwrap();
        assert_eq!(c.kernel, PathBuf::from("/k"));
        assert_eq!(c.initrd, Some(PathBuf::from("/i")));
        assert_eq!(c.cmdline, "quiet");
        assert_eq!(c.memory_mib, 1024);
        assert_eq!(c.cpus, 2);
        assert_eq!(c.serial, SerialOut::File("/dev/console".into()));
        assert_eq!(c.api_socket, Some(PathBuf::from("/run/s")));
    }

    #[test]
    fn disks_and_rng() {
        let c = parse(&args(
            "--kernel /k --disk /a.raw --disk /b.raw,readonly --no-rng",
        ))
        .unwrap();
        assert_eq!(c.disks.len(), 2);
        assert!(!c.disks[0].readonly);
        assert!(c.disks[1].readonly);
        assert_eq!(c.disks[1].path, PathBuf::from("/b.raw"));
        assert!(!c.rng);
        assert!(parse(&args("--kernel /k")).unwrap().rng);
        let c = parse(&args(
            "--kernel /k --net tap=vmtap0 --net tap=t1,mac=02:11:22:33:44:55",
        ))
        .unwrap();
        assert_eq!(c.nets.len(), 2);
        assert_eq!(c.nets[0].tap, "vmtap0");
        assert_eq!(c.nets[0].mac, None);
        assert_eq!(c.nets[1].mac.unwrap().to_string(), "02:11:22:33:44:55");
        assert_eq!(c.nets[0].vhost, VhostMode::Off);
        let c = parse(&args(
            "--kernel /k --net tap=a,vhost=on --net tap=b,vhost=off --net tap=c,vhost=auto",
        ))
        .unwrap();
        let modes: Vec<VhostMode> = c.nets.iter().map(|n| n.vhost).collect();
        assert_eq!(modes, [VhostMode::On, VhostMode::Off, VhostMode::Auto]);
        let c = parse(&args(
            "--kernel /k --net tap=a --net tap=b,link=down --net tap=c,link=up",
        ))
        .unwrap();
        let links: Vec<bool> = c.nets.iter().map(|n| n.link_up).collect();
        assert_eq!(links, [true, false, true]);
    }

    #[test]
    fn sandbox_arguments() {
        use crate::sandbox::SeccompMode;
        let c = parse(&args("--kernel /k")).unwrap();
        assert_eq!(c.sandbox.user, None);
        assert_eq!(c.sandbox.seccomp, SeccompMode::On);
        let c = parse(&args(
            "--kernel /k --user 3000000100:3000000100 --seccomp log",
        ))
        .unwrap();
        assert_eq!(c.sandbox.user, Some((3_000_000_100, 3_000_000_100)));
        assert_eq!(c.sandbox.seccomp, SeccompMode::Log);
        assert!(parse(&args("--kernel /k --user 0")).is_err());
        assert!(parse(&args("--kernel /k --seccomp strict")).is_err());
    }

    #[test]
    fn equals_form_and_defaults() {
        let c = parse(&args("--kernel=/k --memory=256")).unwrap();
        assert_eq!(c.memory_mib, 256);
        assert_eq!(c.cpus, 1);
        assert_eq!(c.serial, SerialOut::Stdio);
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(parse(&args("--initrd /i"))
            .unwrap_err()
            .contains("--kernel"));
        assert!(parse(&args("--kernel /k --cpus many")).is_err());
        assert!(parse(&args("--kernel /k --cpus 300")).is_err());
        assert!(parse(&args("--kernel /k --memory lots")).is_err());
        assert!(parse(&args("--kernel /k --serial tcp:1")).is_err());
        assert!(parse(&args("--kernel /k --disk /d,cache=none"))
            .unwrap_err()
            .contains("unknown option"));
        assert!(parse(&args("--kernel /k --net mac=02:00:00:00:00:01"))
            .unwrap_err()
            .contains("tap=NAME is required"));
        assert!(parse(&args("--kernel /k --net tap=t0,mac=ff:ff:ff:ff:ff:ff")).is_err());
        assert!(parse(&args("--kernel /k --net tap=t0,vlan=5")).is_err());
        assert!(parse(&args("--kernel /k --net tap=t0,vhost=yes")).is_err());
        assert!(parse(&args("--kernel /k --net tap=t0,link=off"))
            .unwrap_err()
            .contains("expected up or down"));
        assert!(parse(&args("--kernel"))
            .unwrap_err()
            .contains("needs a value"));
    }
}
