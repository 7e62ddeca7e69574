//! The kernel command line (`/proc/cmdline`).

/// Parsed `key[=value]` words of the kernel command line.
#[derive(Debug, Clone, Default)]
pub struct KernelCmdline {
    words: Vec<(String, Option<String>)>,
}

impl KernelCmdline {
    /// Reads `/proc/cmdline`; an unreadable file gives an empty line.
    pub fn read() -> KernelCmdline {
        let text = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        KernelCmdline::parse(&text)
    }

    /// Parses a command line. Double quotes group a value with spaces.
    pub fn parse(text: &str) -> KernelCmdline {
        let mut words = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        for c in text.chars() {
            match c {
                '"' => quoted = !quoted,
                c if c.is_whitespace() && !quoted => {
                    if !cur.is_empty() {
                        words.push(std::mem::take(&mut cur));
                    }
                }
                c => cur.push(c),
            }
        }
        if !cur.is_empty() {
            words.push(cur);
        }
        KernelCmdline {
            words: words
                .into_iter()
                .map(|w| match w.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (w, None),
                })
                .collect(),
        }
    }

    /// The value of the last `key=value`, if any.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.words
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The parameters the command line gives module `module` (words
    /// `module.param=value` before `--`, with `-` and `_` alike in the
    /// module name, as the kernel and modprobe take them), in order, as
    /// `param=value` (`param` for a bare flag), ready for `finit_module`.
    pub fn module_params(&self, module: &str) -> Vec<String> {
        let norm = |s: &str| s.replace('-', "_");
        let module = norm(module);
        self.words
            .iter()
            .take_while(|(k, v)| !(k == "--" && v.is_none()))
            .filter_map(|(k, v)| {
                let (m, param) = k.split_once('.')?;
                if norm(m) != module || param.is_empty() {
                    return None;
                }
                Some(match v {
                    Some(v) if v.contains(char::is_whitespace) => format!("{param}=\"{v}\""),
                    Some(v) => format!("{param}={v}"),
                    None => param.to_string(),
                })
            })
            .collect()
    }

    /// Whether `key` appears as a flag, or as `key=1|yes|on|true`.
    pub fn flag(&self, key: &str) -> bool {
        self.words
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .is_some_and(|(_, v)| matches!(v.as_deref(), None | Some("1" | "yes" | "on" | "true")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_parameters() {
        let c = KernelCmdline::parse(
            "quiet kvm_amd.nested=1 kvm-amd.avic=0 kvm.ignore_msrs libata.force=\"1.00:noncq, 2:1.5g\" oxbow.label=X kvm_amdx.y=1 -- kvm_amd.npt=0",
        );
        assert_eq!(c.module_params("kvm_amd"), ["nested=1", "avic=0"]);
        assert_eq!(c.module_params("kvm-amd"), ["nested=1", "avic=0"]);
        assert_eq!(c.module_params("kvm"), ["ignore_msrs"]);
        assert_eq!(c.module_params("libata"), ["force=\"1.00:noncq, 2:1.5g\""]);
        assert!(c.module_params("ahci").is_empty());
    }

    #[test]
    fn words_flags_and_quotes() {
        let c = KernelCmdline::parse(
            "BOOT_IMAGE=/boot/vmlinuz console=ttyS0,115200 oxbow.label=OXBOW quiet x=\"a b\" oxbow.testctl=0 oxbow.testctl\n",
        );
        assert_eq!(c.value("oxbow.label"), Some("OXBOW"));
        assert_eq!(c.value("console"), Some("ttyS0,115200"));
        assert_eq!(c.value("x"), Some("a b"));
        assert!(c.flag("quiet"));
        assert!(c.flag("oxbow.testctl"));
        assert!(!c.flag("missing"));
        assert!(!KernelCmdline::parse("oxbow.testctl=0").flag("oxbow.testctl"));
    }
}
