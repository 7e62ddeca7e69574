//! Loading kernel modules, two ways:
//!
//! - **Coldplug**: read the `modalias` of every device under `/sys/devices`,
//!   match it against depmod's `modules.alias`, and load the matching
//!   modules with their dependencies from `modules.dep`. This loads the
//!   drivers of the hardware that is present, as udev would, and nothing
//!   else; loading a module is slow under emulation, so it matters.
//! - **Lists** the image build writes: each line a path relative to
//!   `/lib/modules/<release>/`, already in dependency order, so loading is
//!   a plain walk. Stage 1 falls back to its full list when coldplug did
//!   not find the boot medium; stage 2 loads the feature modules (KVM,
//!   bridging, VLANs, nftables, device-mapper…) from its list.
//!
//! Every load is a `finit_module(2)`; `EEXIST` counts as present.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};

use crate::cmdline::KernelCmdline;

/// What a walk over a module list did.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Modules loaded by this walk.
    pub loaded: usize,
    /// Their names, in load order.
    pub names: Vec<String>,
    /// Modules that were already present.
    pub present: usize,
    /// Modules that failed, with the reason.
    pub failed: Vec<(String, String)>,
}

impl LoadReport {
    /// Adds another walk's counts to this one.
    pub fn merge(&mut self, other: LoadReport) {
        self.loaded += other.loaded;
        self.present += other.present;
        self.names.extend(other.names);
        self.failed.extend(other.failed);
    }

    /// Says on the console what was loaded, as `loaded N <what> (M already
    /// present): names`, and each failure on a line of its own.
    pub fn announce(&self, what: &str) {
        crate::console::say(format_args!(
            "loaded {} {what} ({} already present): {}",
            self.loaded,
            self.present,
            self.names.join(" ")
        ));
        for (m, e) in &self.failed {
            crate::console::say(format_args!("module {m}: {e}"));
        }
    }
}

/// The directory of the running kernel's modules.
pub fn module_dir() -> PathBuf {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    Path::new("/lib/modules").join(release)
}

/// The entries of a module list: blank lines and `#` comments skipped.
pub fn parse_list(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Loads every module named in the list file `list`.
pub fn load_list(list: &Path, dir: &Path) -> std::io::Result<LoadReport> {
    let text = std::fs::read_to_string(list)?;
    let mut report = LoadReport::default();
    for rel in parse_list(&text) {
        load_file(dir, rel, false, &mut report);
    }
    Ok(report)
}

/// The parameters a module is loaded with: `bonding` makes no `bond0` of
/// its own (which would sit in the network list, in the default mode,
/// until an interfaces file asked for a bond of that name).
pub fn params_of(module: &str) -> &'static str {
    match module {
        "bonding" => "max_bonds=0",
        _ => "",
    }
}

/// The parameters `module` is loaded with, plus the kernel's generic
/// `async_probe` when `async_probe` is set: the driver then probes its
/// devices in the background, and the load returns without waiting for
/// them (without it, the kernel waits for every asynchronous job the
/// module's init started: for a SATA controller, link detection and the
/// SCSI scan behind it).
///
/// Between the two come the options init set for this machine
/// ([`set_options`]) and the module's parameters on the kernel command
/// line (`kvm_amd.nested=1`, say), which modprobe would read from
/// `/proc/cmdline` for a module that is not built in; the kernel takes the
/// last value of a parameter given twice, so the command line wins.
pub fn load_params(module: &str, async_probe: bool) -> String {
    static CMDLINE: OnceLock<KernelCmdline> = OnceLock::new();
    let cmdline = CMDLINE.get_or_init(KernelCmdline::read);
    let options = OPTIONS.get().map(Vec::as_slice).unwrap_or_default();
    load_params_with(module, async_probe, options, cmdline)
}

/// [`load_params`] with the machine's options and command line given.
pub fn load_params_with(
    module: &str,
    async_probe: bool,
    options: &[(String, String)],
    cmdline: &KernelCmdline,
) -> String {
    let name = module.replace('-', "_");
    let mut words: Vec<String> = Vec::new();
    words.extend(
        Some(params_of(module))
            .filter(|p| !p.is_empty())
            .map(str::to_string),
    );
    words.extend(
        options
            .iter()
            .filter(|(m, _)| m.replace('-', "_") == name)
            .map(|(_, p)| p.clone()),
    );
    words.extend(cmdline.module_params(module));
    if async_probe {
        words.push("async_probe".to_string());
    }
    words.join(" ")
}

/// Module options init chose for this machine, as modprobe.d's `options`
/// lines would give them: `(module, "param=value")`.
static OPTIONS: OnceLock<Vec<(String, String)>> = OnceLock::new();

/// The module options this machine needs: `libata force=nodbdelay` when
/// every SATA controller is QEMU's emulated AHCI (PCI class 0x0106,
/// subsystem vendor 0x1af4). libata waits 200 ms after resuming a SATA
/// link before it looks at the link's status, for physical PHYs that
/// misbehave when polled at once; an emulated link has no PHY, and the
/// boot CD's link comes up that much sooner. A real controller passed
/// through to the VM keeps the delay.
pub fn machine_options(sys: &Path) -> Vec<(String, String)> {
    let (mut sata, mut emulated) = (0, 0);
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    for dev in std::fs::read_dir(sys.join("bus/pci/devices"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if !read(dev.path().join("class")).trim().starts_with("0x0106") {
            continue;
        }
        sata += 1;
        if read(dev.path().join("subsystem_vendor")).trim() == "0x1af4" {
            emulated += 1;
        }
    }
    if sata > 0 && sata == emulated {
        vec![("libata".to_string(), "force=nodbdelay".to_string())]
    } else {
        Vec::new()
    }
}

/// Sets the machine's module options (see [`load_params`]), once, before
/// the first load; later calls are ignored.
pub fn set_options(options: Vec<(String, String)>) {
    let _ = OPTIONS.set(options);
}

/// Whether the module file `rel` lies under one of `trees`.
fn in_trees(trees: &[&str], rel: &str) -> bool {
    trees.iter().any(|t| rel.starts_with(t))
}

/// Loads `files` in order on the calling thread; one job of
/// [`Loader::load_jobs`].
fn run_job(dir: &Path, async_probe: &[&str], files: Vec<String>) -> (Vec<String>, LoadReport) {
    let mut report = LoadReport::default();
    for f in &files {
        load_file(dir, f, in_trees(async_probe, f), &mut report);
    }
    (files, report)
}

/// Loads one module file (a path relative to `dir`) and counts the result.
/// Returns true unless it failed.
fn load_file(dir: &Path, rel: &str, async_probe: bool, report: &mut LoadReport) -> bool {
    // The kernel answers EEXIST only after reading and checking the whole
    // file, which costs about as much as loading it: ask sysfs first.
    if Path::new("/sys/module")
        .join(name_of(rel))
        .join("initstate")
        .exists()
    {
        report.present += 1;
        return true;
    }
    let params = CString::new(load_params(&name_of(rel), async_probe)).unwrap_or_default();
    let result = File::open(dir.join(rel))
        .map_err(|e| e.to_string())
        .and_then(|f| {
            finit_module(&f, &params, ModuleInitFlags::empty()).map_err(|e| e.to_string())
        });
    match result {
        Ok(()) => {
            report.loaded += 1;
            report.names.push(name_of(rel));
        }
        Err(e) if e == Errno::EEXIST.to_string() => report.present += 1,
        Err(e) => {
            report.failed.push((rel.to_string(), e));
            return false;
        }
    }
    true
}

/// Canonical module name: `-` and `_` are the same, `_` is canonical.
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a path such as `kernel/drivers/ata/libata.ko`.
pub fn name_of(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    canonical(stem)
}

/// The key an alias pattern or a device modalias is filed under: its
/// leading run of letters, digits and `_` (`pci`, `acpi`, `cpu`, …).
fn alias_key(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// depmod's index of one module directory: where each module is, what it
/// needs, and which device aliases it serves.
#[derive(Debug, Default, Clone)]
pub struct ModIndex {
    /// Canonical name → its `modules.dep` line, split on demand.
    modules: HashMap<String, String>,
    /// Alias key → (pattern, canonical module name).
    aliases: HashMap<String, Vec<(String, String)>>,
}

impl ModIndex {
    /// Parses the contents of `modules.dep` and `modules.alias`.
    pub fn parse(dep: &str, alias: &str) -> Self {
        Self::parse_for(dep, alias, None)
    }

    /// Like [`ModIndex::parse`], keeping only the aliases that match one of
    /// `devices` (when given): the full `modules.alias` has tens of
    /// thousands of lines, a machine a few dozen devices, and reading all
    /// of them into a table costs a noticeable part of a second under
    /// emulation. Devices that appear later are not matched by such an
    /// index.
    pub fn parse_for(dep: &str, alias: &str, devices: Option<&[String]>) -> Self {
        let mut idx = ModIndex::default();
        for line in dep.lines() {
            let Some((path, _)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim();
            if !path.is_empty() {
                idx.modules.insert(name_of(path), line.to_string());
            }
        }
        let mut by_key: HashMap<&str, Vec<&str>> = HashMap::new();
        for d in devices.into_iter().flatten() {
            by_key.entry(alias_key(d)).or_default().push(d);
        }
        for line in alias.lines() {
            let mut w = line.split_whitespace();
            if w.next() != Some("alias") {
                continue;
            }
            let (Some(pattern), Some(module)) = (w.next(), w.next()) else {
                continue;
            };
            let key = alias_key(pattern);
            if devices.is_some()
                && !by_key
                    .get(key)
                    .is_some_and(|ds| ds.iter().any(|d| glob(pattern, d)))
            {
                continue;
            }
            idx.aliases
                .entry(key.to_string())
                .or_default()
                .push((pattern.to_string(), canonical(module)));
        }
        idx
    }

    /// Reads `modules.dep` and `modules.alias` from a module directory.
    pub fn load(dir: &Path) -> std::io::Result<Self> {
        Self::load_for(dir, None)
    }

    /// Reads `modules.dep` and the aliases that match the given device
    /// modaliases (see [`ModIndex::parse_for`]).
    pub fn load_for(dir: &Path, devices: Option<&[String]>) -> std::io::Result<Self> {
        let dep = std::fs::read_to_string(dir.join("modules.dep"))?;
        let alias = std::fs::read_to_string(dir.join("modules.alias")).unwrap_or_default();
        Ok(Self::parse_for(&dep, &alias, devices))
    }

    /// A module's `modules.dep` line split into its path and dependencies.
    fn entry(&self, name: &str) -> Option<(&str, std::str::SplitWhitespace<'_>)> {
        let line = self.modules.get(&canonical(name))?;
        let (path, deps) = line.split_once(':')?;
        Some((path.trim(), deps.split_whitespace()))
    }

    /// The path of a loadable module, by name.
    pub fn path(&self, name: &str) -> Option<&str> {
        self.entry(name).map(|(p, _)| p)
    }

    /// The loadable modules whose aliases match a device's modalias.
    pub fn matching(&self, modalias: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        let candidates = self.aliases.get(alias_key(modalias)).into_iter().flatten();
        for (pattern, module) in candidates {
            if self.modules.contains_key(module)
                && !out.contains(&module.as_str())
                && glob(pattern, modalias)
            {
                out.push(module);
            }
        }
        out
    }

    /// The files to load for `name`, dependencies first. Empty when the
    /// module is unknown (built in, or not shipped).
    pub fn load_order(&self, name: &str) -> Vec<&str> {
        let Some((path, deps)) = self.entry(name) else {
            return Vec::new();
        };
        // modules.dep lists the whole closure, the deepest last.
        let mut out: Vec<&str> = deps.collect();
        out.reverse();
        out.push(path);
        out
    }
}

/// Shell-style matching as depmod's aliases use it: `*`, `?` and
/// `[...]` classes (with ranges and a leading `!` or `^`).
pub fn glob(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    // Where to resume after the last `*`: (pattern index, text index).
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        let step = match p.get(pi) {
            Some(b'*') => {
                star = Some((pi + 1, ti));
                pi += 1;
                continue;
            }
            Some(b'?') => Some(1),
            Some(b'[') => class(&p[pi..], t[ti]),
            Some(c) if *c == t[ti] => Some(1),
            _ => None,
        };
        match (step, star) {
            (Some(_), _) if p[pi] == b'[' => {
                pi += class_len(&p[pi..]);
                ti += 1;
            }
            (Some(n), _) => {
                pi += n;
                ti += 1;
            }
            (None, Some((sp, st))) => {
                pi = sp;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

/// Length of the `[...]` class at the start of `p` (the whole rest when it
/// is not closed, which then matches nothing).
fn class_len(p: &[u8]) -> usize {
    let mut i = 1;
    if matches!(p.get(i), Some(b'!' | b'^')) {
        i += 1;
    }
    if p.get(i) == Some(&b']') {
        i += 1;
    }
    while i < p.len() && p[i] != b']' {
        i += 1;
    }
    (i + 1).min(p.len())
}

/// Whether `c` is in the `[...]` class at the start of `p`: `Some(1)` if it
/// is, `None` if not or if the class is not closed.
fn class(p: &[u8], c: u8) -> Option<usize> {
    let len = class_len(p);
    if p.get(len - 1) != Some(&b']') || len < 3 {
        return None;
    }
    let mut body = &p[1..len - 1];
    let negate = matches!(body.first(), Some(b'!' | b'^'));
    if negate {
        body = &body[1..];
    }
    let mut hit = false;
    let mut i = 0;
    while i < body.len() {
        if i + 2 < body.len() && body[i + 1] == b'-' {
            hit |= (body[i]..=body[i + 2]).contains(&c);
            i += 3;
        } else {
            hit |= body[i] == c;
            i += 1;
        }
    }
    (hit != negate).then_some(1)
}

/// The distinct modaliases of the devices a driver could bind, under the
/// sysfs root `sys`: every device of every bus (`bus/*/devices/*`), the
/// input devices (`class/input/*`, matched by input handlers), the CPU
/// features (`devices/system/cpu`, matched by KVM and crypto drivers) and
/// the DMI identity (`devices/virtual/dmi/id`, matched by platform
/// drivers). Outside the buses only those carry a `modalias`, so this
/// reads a few hundred entries where a walk of `devices/` reads thousands
/// (on the development host 2.4 ms against 8 ms, natively; stage 1
/// repeats the scan every 200 ms while it waits for the boot medium).
///
/// A virtio PCI device also gives the modalias of the virtio device that
/// `virtio_pci` will make of it (see [`virtio_modalias`]), so that the
/// virtio driver (`virtio_net`, `virtio_blk`…) loads alongside
/// `virtio_pci` rather than after it.
pub fn device_modaliases(sys: &Path) -> Vec<String> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let children = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|it| it.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    for bus in children(&sys.join("bus")) {
        dirs.extend(children(&bus.join("devices")));
    }
    dirs.extend(children(&sys.join("class/input")));
    dirs.push(sys.join("devices/system/cpu"));
    dirs.push(sys.join("devices/virtual/dmi/id"));
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for d in dirs {
        if let Ok(text) = std::fs::read_to_string(d.join("modalias")) {
            let text = text.trim().to_string();
            let virtio = virtio_modalias(&text);
            for alias in std::iter::once(text).chain(virtio) {
                if !alias.is_empty() && seen.insert(alias.clone()) {
                    out.push(alias);
                }
            }
        }
    }
    out
}

/// The modalias of the virtio device behind a virtio PCI function, from
/// the PCI modalias (`pci:v00001AF4d…sv…sd…`): the virtio device type is
/// the PCI device ID minus 0x1040 for a modern device (0x1040-0x107f) and
/// the subsystem ID for a transitional one (0x1000-0x103f), and the virtio
/// vendor is the subsystem vendor, as `virtio_pci` sets them.
pub fn virtio_modalias(pci: &str) -> Option<String> {
    let rest = pci.strip_prefix("pci:v00001AF4d")?;
    let hex = |s: &str| u32::from_str_radix(s.get(..8)?, 16).ok();
    let device = hex(rest)?;
    let sv = hex(rest.get(8..)?.strip_prefix("sv")?)?;
    let sd = hex(rest.get(18..)?.strip_prefix("sd")?)?;
    let kind = match device {
        0x1000..=0x103f => sd,
        0x1040..=0x107f => device - 0x1040,
        _ => return None,
    };
    Some(format!("virtio:d{kind:08X}v{sv:08X}"))
}

/// Loads modules from one module directory, remembering what it loaded.
#[derive(Debug)]
pub struct Loader {
    dir: PathBuf,
    index: ModIndex,
    done: HashSet<String>,
    /// Trees (paths relative to the module directory) whose modules are
    /// loaded with `async_probe`.
    async_probe: &'static [&'static str],
    /// What the loader did so far.
    pub report: LoadReport,
}

impl Loader {
    /// A loader for `dir` with its depmod index.
    pub fn new(dir: PathBuf, index: ModIndex) -> Self {
        Loader {
            dir,
            index,
            done: HashSet::new(),
            async_probe: &[],
            report: LoadReport::default(),
        }
    }

    /// Loads the modules under these trees (paths relative to the module
    /// directory) with `async_probe` from now on: see [`load_params`].
    pub fn set_async_probe(&mut self, trees: &'static [&'static str]) {
        self.async_probe = trees;
    }

    fn probes_async(&self, rel: &str) -> bool {
        in_trees(self.async_probe, rel)
    }

    /// Replaces the index, keeping what was loaded.
    pub fn set_index(&mut self, index: ModIndex) {
        self.index = index;
    }

    /// Loads a module by name, dependencies first. False when it is not a
    /// loadable module here or a load failed.
    pub fn load(&mut self, name: &str) -> bool {
        let files: Vec<String> = self
            .index
            .load_order(name)
            .into_iter()
            .map(str::to_string)
            .collect();
        if files.is_empty() {
            return false;
        }
        let mut ok = true;
        for rel in files {
            if self.done.contains(&rel) {
                continue;
            }
            let async_probe = self.probes_async(&rel);
            if load_file(&self.dir, &rel, async_probe, &mut self.report) {
                self.done.insert(rel);
            } else {
                ok = false;
            }
        }
        ok
    }

    /// Loads several modules at once, each with its dependencies, one
    /// thread per module. A module load mostly waits (RCU grace periods,
    /// probing), so loads overlap well even on few CPUs. Two threads that
    /// need the same dependency are fine: the kernel makes the second wait
    /// for the first and then answers `EEXIST`.
    pub fn load_parallel(&mut self, names: &[String]) {
        let mut first = Some(names.to_vec());
        self.load_jobs(|_, _| first.take().unwrap_or_default());
    }

    /// Runs one load job per module on threads of their own, dependencies
    /// first in each. `next` names the modules to start, given the loader
    /// and the modules started so far: once at first, then each time a
    /// job has finished, while the others go on; it ends when no job runs
    /// and `next` names none. A module is started once; after its job it
    /// counts as tried, so a failed one is not tried again later. Returns
    /// how many modules were started.
    fn load_jobs(&mut self, mut next: impl FnMut(&Self, &HashSet<String>) -> Vec<String>) -> usize {
        let (dir, async_probe) = (self.dir.clone(), self.async_probe);
        let (tx, rx) = std::sync::mpsc::channel::<(String, Vec<String>, LoadReport)>();
        let mut started: HashSet<String> = HashSet::new();
        let mut results: Vec<(Vec<String>, LoadReport)> = Vec::new();
        std::thread::scope(|scope| {
            let mut running = 0usize;
            loop {
                for name in next(self, &started) {
                    if !started.insert(name.clone()) {
                        continue;
                    }
                    // Files another job is loading stay in this one: the
                    // kernel makes the second load of a module wait for
                    // the first, so a dependency is live before its user.
                    let files = self.job(&name);
                    if files.is_empty() {
                        continue;
                    }
                    let (tx, dir) = (tx.clone(), dir.as_path());
                    running += 1;
                    scope.spawn(move || {
                        // Answers even if the job panics: the loop waits
                        // for one answer per job.
                        let copy = files.clone();
                        let job = std::panic::AssertUnwindSafe(|| run_job(dir, async_probe, copy));
                        let (files, report) = std::panic::catch_unwind(job).unwrap_or_else(|_| {
                            let mut r = LoadReport::default();
                            r.failed.push((name.clone(), "the load panicked".into()));
                            (files, r)
                        });
                        let _ = tx.send((name, files, report));
                    });
                }
                if running == 0 {
                    break;
                }
                let Ok((name, files, report)) = rx.recv() else {
                    break;
                };
                running -= 1;
                for f in &files {
                    self.done.insert(f.clone());
                }
                if let Some(p) = self.index.path(&name) {
                    self.done.insert(p.to_string());
                }
                results.push((files, report));
            }
        });
        self.tally(&results);
        started.len()
    }

    /// The files still to load for module `name`, dependencies first.
    fn job(&self, name: &str) -> Vec<String> {
        self.index
            .load_order(name)
            .into_iter()
            .filter(|f| !self.done.contains(*f))
            .map(str::to_string)
            .collect()
    }

    /// Counts the loads of parallel jobs into the report: each file once,
    /// as loaded if any job loaded it, as failed if one failed and none
    /// loaded it, else as present.
    fn tally(&mut self, results: &[(Vec<String>, LoadReport)]) {
        let mut loaded: HashSet<String> = HashSet::new();
        let mut failed: HashMap<String, String> = HashMap::new();
        for (files, report) in results {
            loaded.extend(report.names.iter().cloned());
            for (f, e) in &report.failed {
                failed.insert(f.clone(), e.clone());
            }
            for f in files {
                self.done.insert(f.clone());
            }
        }
        // In the order the jobs finished.
        let mut seen = HashSet::new();
        for f in results.iter().flat_map(|(f, _)| f) {
            if !seen.insert(f) {
                continue;
            }
            let name = name_of(f);
            if loaded.contains(&name) {
                self.report.loaded += 1;
                self.report.names.push(name);
            } else if let Some(e) = failed.remove(f) {
                self.report.failed.push((f.clone(), e));
            } else {
                self.report.present += 1;
            }
        }
    }

    /// The modules matching `devices` (whose path `wanted` accepts) and
    /// the modules `extra`, minus those tried already and those in `skip`.
    fn fresh_matches(
        &self,
        devices: &[String],
        wanted: &impl Fn(&str) -> bool,
        extra: &[&str],
        skip: &HashSet<String>,
    ) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        let add = |m: &str, names: &mut Vec<String>| {
            if !skip.contains(m) && !names.iter().any(|n| n == m) {
                names.push(m.to_string());
            }
        };
        // Device drivers first: a controller's probe (AHCI link detection,
        // say) then runs while the rest loads.
        for alias in devices {
            for m in self.index.matching(alias) {
                let fresh = self
                    .index
                    .path(m)
                    .is_some_and(|p| !self.done.contains(p) && wanted(p));
                if fresh {
                    add(m, &mut names);
                }
            }
        }
        for m in extra {
            if self.index.path(m).is_some_and(|p| !self.done.contains(p)) {
                add(m, &mut names);
            }
        }
        names
    }

    /// Loads the drivers of the devices of the sysfs root `sys` (see
    /// [`device_modaliases`]) whose path is accepted by `wanted`, together
    /// with the modules `extra`, all in parallel. Whenever one of the loads
    /// finishes, the devices are read again and the drivers of those that
    /// appeared meanwhile start at once: `virtio_pci` makes the virtio NIC
    /// appear, and its driver need not wait for the disk controllers' loads
    /// (the NIC's carrier then reaches the kernel's link watch, which runs
    /// at most once a second, that much sooner). Returns how many modules
    /// were newly tried.
    pub fn coldplug(&mut self, sys: &Path, wanted: impl Fn(&str) -> bool, extra: &[&str]) -> usize {
        let mut extra = extra;
        self.load_jobs(|me, started| {
            let names = me.fresh_matches(&device_modaliases(sys), &wanted, extra, started);
            extra = &[];
            names
        })
    }

    /// [`Loader::coldplug`] for modaliases read already, in parallel or one
    /// module after another.
    pub fn coldplug_devices(
        &mut self,
        devices: &[String],
        wanted: impl Fn(&str) -> bool,
        extra: &[&str],
        parallel: bool,
    ) -> usize {
        let names = self.fresh_matches(devices, &wanted, extra, &HashSet::new());
        let n = names.len();
        if parallel {
            self.load_parallel(&names);
        } else {
            for m in &names {
                self.load(m);
            }
        }
        for m in &names {
            // A module that failed is not tried again on the next pass.
            if let Some(p) = self.index.path(m) {
                self.done.insert(p.to_string());
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn async_probe_is_added_to_a_module_own_parameters() {
        let none = KernelCmdline::default();
        assert_eq!(load_params_with("ahci", false, &[], &none), "");
        assert_eq!(load_params_with("ahci", true, &[], &none), "async_probe");
        assert_eq!(
            load_params_with("bonding", false, &[], &none),
            "max_bonds=0"
        );
        assert_eq!(
            load_params_with("bonding", true, &[], &none),
            "max_bonds=0 async_probe"
        );
    }

    #[test]
    fn only_emulated_sata_controllers_skip_the_debounce_delay() {
        let sys = tempfile::tempdir().unwrap();
        let add = |name: &str, class: &str, sv: &str| {
            let d = sys.path().join("bus/pci/devices").join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("class"), format!("{class}\n")).unwrap();
            std::fs::write(d.join("subsystem_vendor"), format!("{sv}\n")).unwrap();
        };
        assert!(machine_options(sys.path()).is_empty(), "no SATA at all");
        add("0000:00:02.0", "0x020000", "0x8086");
        add("0000:00:1f.2", "0x010601", "0x1af4");
        assert_eq!(
            machine_options(sys.path()),
            [("libata".to_string(), "force=nodbdelay".to_string())]
        );
        add("0000:03:00.0", "0x010601", "0x15d9");
        assert!(
            machine_options(sys.path()).is_empty(),
            "a passed-through controller"
        );
    }

    #[test]
    fn options_then_command_line_then_async_probe() {
        let options = vec![
            ("libata".to_string(), "force=nodbdelay".to_string()),
            ("kvm-amd".to_string(), "avic=1".to_string()),
        ];
        let cmdline = KernelCmdline::parse("libata.force=1:noncq kvm_amd.nested=1 quiet");
        assert_eq!(
            load_params_with("libata", true, &options, &cmdline),
            "force=nodbdelay force=1:noncq async_probe"
        );
        assert_eq!(
            load_params_with("kvm_amd", false, &options, &cmdline),
            "avic=1 nested=1"
        );
        assert_eq!(load_params_with("ahci", false, &options, &cmdline), "");
    }

    #[test]
    fn async_probe_follows_the_trees() {
        let mut l = Loader::new(PathBuf::from("/nonexistent"), ModIndex::default());
        assert!(!l.probes_async("kernel/drivers/ata/ahci.ko"));
        l.set_async_probe(&["kernel/drivers/ata/", "kernel/drivers/scsi/"]);
        assert!(l.probes_async("kernel/drivers/ata/ahci.ko"));
        assert!(l.probes_async("kernel/drivers/scsi/sr_mod.ko"));
        assert!(!l.probes_async("kernel/drivers/net/virtio_net.ko"));
    }

    #[test]
    fn list_skips_comments_and_blanks() {
        let l = parse_list("# boot\nkernel/a.ko\n\n  kernel/b.ko  \n#x\n");
        assert_eq!(l, vec!["kernel/a.ko", "kernel/b.ko"]);
    }

    const DEP: &str = "kernel/drivers/ata/ahci.ko: kernel/drivers/ata/libahci.ko kernel/drivers/ata/libata.ko kernel/drivers/scsi/scsi_mod.ko\n\
kernel/drivers/ata/libahci.ko: kernel/drivers/ata/libata.ko kernel/drivers/scsi/scsi_mod.ko\n\
kernel/drivers/ata/libata.ko: kernel/drivers/scsi/scsi_mod.ko\n\
kernel/drivers/scsi/scsi_mod.ko:\n\
kernel/drivers/acpi/button.ko:\n\
kernel/arch/x86/kvm/kvm-amd.ko: kernel/arch/x86/kvm/kvm.ko\n\
kernel/arch/x86/kvm/kvm.ko:\n";
    const ALIAS: &str = "# Aliases extracted from modules themselves.\n\
alias pci:v*d*sv*sd*bc01sc06i01* ahci\n\
alias acpi*:PNP0C0C:* button\n\
alias acpi*:LNXPWRBN:* button\n\
alias cpu:type:x86,ven*fam*mod*:feature:*0081* kvm_amd\n\
alias pci:v00001AF4d00001000sv*sd*bc*sc*i* virtio_pci\n";

    #[test]
    fn index_resolves_dependencies_first() {
        let idx = ModIndex::parse(DEP, ALIAS);
        assert_eq!(
            idx.load_order("ahci"),
            [
                "kernel/drivers/scsi/scsi_mod.ko",
                "kernel/drivers/ata/libata.ko",
                "kernel/drivers/ata/libahci.ko",
                "kernel/drivers/ata/ahci.ko"
            ]
        );
        assert_eq!(
            idx.load_order("kvm-amd").last(),
            Some(&"kernel/arch/x86/kvm/kvm-amd.ko")
        );
        assert!(
            idx.load_order("virtio_pci").is_empty(),
            "built in or absent"
        );
    }

    #[test]
    fn devices_match_their_drivers() {
        let idx = ModIndex::parse(DEP, ALIAS);
        assert_eq!(
            idx.matching("pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01"),
            ["ahci"]
        );
        assert_eq!(idx.matching("acpi:LNXPWRBN:"), ["button"]);
        assert_eq!(
            idx.matching("cpu:type:x86,ven0002fam0019mod0001:feature:,0000,0001,0081,00C0"),
            ["kvm_amd"]
        );
        assert!(idx
            .matching("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00")
            .is_empty());
        assert!(idx
            .matching("cpu:type:x86,ven0000fam0006mod003A:feature:,0000,0001")
            .is_empty());
    }

    #[test]
    fn aliases_can_be_limited_to_present_devices() {
        let devices = ["acpi:LNXPWRBN:".to_string()];
        let idx = ModIndex::parse_for(DEP, ALIAS, Some(&devices));
        assert_eq!(idx.matching("acpi:LNXPWRBN:"), ["button"]);
        assert!(
            idx.matching("acpi:PNP0C0C:").is_empty(),
            "not a device here"
        );
        assert!(idx
            .matching("pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01")
            .is_empty());
    }

    #[test]
    fn glob_cases() {
        assert!(glob("a*b", "ab"));
        assert!(glob("a*b", "axxb"));
        assert!(!glob("a*b", "axxbc"));
        assert!(glob("*", ""));
        assert!(glob("a?c", "abc"));
        assert!(glob("usb:v1234p*d0[0-2]*", "usb:v1234p0001d0150dc00"));
        assert!(!glob("usb:v1234p*d0[0-2]*", "usb:v1234p0001d0350dc00"));
        assert!(glob("x[!a]y", "xby"));
        assert!(!glob("x[!a]y", "xay"));
        assert!(!glob("x[ab", "xa"), "an unclosed class matches nothing");
        assert!(glob("*0081*", ",0000,0081,00C0"));
        assert!(!glob("*0081*", ",0000,0080,00C0"));
    }

    #[test]
    fn virtio_pci_functions_name_their_virtio_device() {
        // Transitional virtio-net (QEMU's default), modern virtio-blk.
        assert_eq!(
            virtio_modalias("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00").as_deref(),
            Some("virtio:d00000001v00001AF4")
        );
        assert_eq!(
            virtio_modalias("pci:v00001AF4d00001042sv00001AF4sd00001100bc01sc00i00").as_deref(),
            Some("virtio:d00000002v00001AF4")
        );
        // Not virtio: another vendor, or a Red Hat device outside the range.
        assert_eq!(
            virtio_modalias("pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01"),
            None
        );
        assert_eq!(
            virtio_modalias("pci:v00001AF4d00001100sv00001AF4sd00001100bc00sc00i00"),
            None
        );
        assert_eq!(virtio_modalias("pci:v00001AF4d0000"), None);
    }

    #[test]
    fn coldplug_tries_each_driver_of_the_present_devices_once() {
        let sys = tempfile::tempdir().unwrap();
        for (bus, dev, alias) in [
            (
                "pci",
                "0000:00:02.0",
                "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
            ),
            (
                "pci",
                "0000:00:1f.2",
                "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01",
            ),
            ("virtio", "virtio0", "virtio:d00000001v00001AF4"),
        ] {
            let d = sys.path().join("bus").join(bus).join("devices").join(dev);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("modalias"), format!("{alias}\n")).unwrap();
        }
        let dep = "kernel/test/oxbowtest_ahci.ko: kernel/test/oxbowtest_lib.ko\n\
kernel/test/oxbowtest_lib.ko:\n\
kernel/test/oxbowtest_vpci.ko: kernel/test/oxbowtest_lib.ko\n\
kernel/test/oxbowtest_vnet.ko:\n\
kernel/test/oxbowtest_extra.ko:\n";
        let alias = "alias pci:v*d*sv*sd*bc01sc06i01* oxbowtest_ahci\n\
alias pci:v00001AF4d00001000sv*sd*bc*sc*i* oxbowtest_vpci\n\
alias virtio:d00000001v* oxbowtest_vnet\n";
        // No module files: every load fails, each is reported once.
        let mut l = Loader::new(sys.path().join("no-modules"), ModIndex::parse(dep, alias));
        assert_eq!(l.coldplug(sys.path(), |_| true, &["oxbowtest_extra"]), 4);
        let mut failed: Vec<&str> = l.report.failed.iter().map(|(f, _)| f.as_str()).collect();
        failed.sort();
        assert_eq!(
            failed,
            [
                "kernel/test/oxbowtest_ahci.ko",
                "kernel/test/oxbowtest_extra.ko",
                "kernel/test/oxbowtest_lib.ko",
                "kernel/test/oxbowtest_vnet.ko",
                "kernel/test/oxbowtest_vpci.ko",
            ]
        );
        assert_eq!((l.report.loaded, l.report.present), (0, 0));
        // Nothing is tried twice.
        assert_eq!(l.coldplug(sys.path(), |_| true, &["oxbowtest_extra"]), 0);
        assert_eq!(l.report.failed.len(), 5);
        // Drivers refused by `wanted` are not tried.
        let mut l = Loader::new(sys.path().join("no-modules"), ModIndex::parse(dep, alias));
        assert_eq!(l.coldplug(sys.path(), |p| !p.contains("vnet"), &[]), 2);
    }

    #[test]
    fn modaliases_are_read_from_buses_input_and_dmi() {
        let root = std::env::temp_dir().join(format!("oxbow-sys-{}", std::process::id()));
        let ahci = root.join("devices/pci0000:00/0000:00:1f.2");
        let cpus = root.join("devices/system/cpu");
        let cpu0 = root.join("devices/system/cpu/cpu0");
        let input = root.join("devices/platform/i8042/serio0/input/input1");
        let dmi = root.join("devices/virtual/dmi/id");
        // A class device without a bus and outside input: not read.
        let tty = root.join("devices/virtual/tty/tty0");
        for (dir, alias) in [
            (&ahci, "pci:v00008086d00002922"),
            (&cpus, "cpu:type:x86,ven0002:feature:,0081"),
            (&cpu0, "cpu:x"),
            (&input, "input:b0011v0001p0001e0001-e0,1"),
            (&dmi, "dmi:bvnSeaBIOS:"),
            (&tty, "tty:never"),
        ] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("modalias"), format!("{alias}\n")).unwrap();
        }
        let link = |dev: &Path, at: &str| {
            let at = root.join(at);
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(dev, at).unwrap();
        };
        link(&ahci, "bus/pci/devices/0000:00:1f.2");
        link(&cpu0, "bus/cpu/devices/cpu0");
        link(&input, "class/input/input1");
        link(&tty, "class/tty/tty0");
        std::fs::create_dir_all(root.join("bus/usb/devices")).unwrap();
        let mut got = device_modaliases(&root);
        got.sort();
        assert_eq!(
            got,
            [
                "cpu:type:x86,ven0002:feature:,0081",
                "cpu:x",
                "dmi:bvnSeaBIOS:",
                "input:b0011v0001p0001e0001-e0,1",
                "pci:v00008086d00002922"
            ]
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
