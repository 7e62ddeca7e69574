//! Merging runs of similar rules into one set lookup.
//!
//! Consecutive rules of a chain that have the same verdict, no log, the
//! same matches apart from address lists and ports, and those in the same
//! places, match exactly the packets one rule with the union of their
//! values matches: the order among them does not matter, since they all
//! end the same way. Such a run becomes one rule: with one varying field
//! its values are united in one list; with two (an address and a port,
//! say) the rule looks both up in a set of `address . port` boxes. Boxes
//! that overlap would be refused by the kernel's set, so a run whose
//! boxes overlap is left alone. The merged rule's comment names the
//! first and last source line.
//!
//! Short runs stay as they are, so that small rulesets read like their
//! source: a run is merged from [`MIN_RUN_LIST`] rules with one varying
//! field, from [`MIN_RUN_CONCAT`] with two.

use std::net::IpAddr;

use crate::config::PortRange;
use crate::nft::{AddrValue, Chain, ConcatField, Match, Rule};

/// The shortest run with one varying field that is merged.
pub const MIN_RUN_LIST: usize = 4;
/// The shortest run with two varying fields that is merged.
pub const MIN_RUN_CONCAT: usize = 16;

/// The part of a match that varies within a run, with its values.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dim {
    Addr {
        v6: bool,
        src: bool,
        values: Vec<String>,
    },
    Port {
        src: bool,
        ranges: Vec<PortRange>,
    },
}

impl Dim {
    fn field(&self) -> ConcatField {
        match self {
            Dim::Addr { v6, src, .. } => ConcatField::Addr { v6: *v6, src: *src },
            Dim::Port { src, .. } => ConcatField::Port { src: *src },
        }
    }

    fn strings(&self) -> Vec<String> {
        match self {
            Dim::Addr { values, .. } => values.clone(),
            Dim::Port { ranges, .. } => ranges
                .iter()
                .map(|&(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    }
                })
                .collect(),
        }
    }
}

/// A rule split into its fixed matches (with `None` where a varying one
/// stood) and its varying ones.
fn split(rule: &Rule) -> Option<(Vec<Option<Match>>, Vec<Dim>)> {
    if rule.log.is_some() {
        return None;
    }
    let mut fixed = Vec::new();
    let mut dims = Vec::new();
    for m in &rule.matches {
        match m {
            Match::Addr {
                v6,
                src,
                negate: false,
                value: AddrValue::List(l),
            } => {
                fixed.push(None);
                dims.push(Dim::Addr {
                    v6: *v6,
                    src: *src,
                    values: l.clone(),
                });
            }
            Match::Ports { src, ranges } => {
                fixed.push(None);
                dims.push(Dim::Port {
                    src: *src,
                    ranges: ranges.clone(),
                });
            }
            other => fixed.push(Some(other.clone())),
        }
    }
    (!dims.is_empty() && dims.len() <= 2).then_some((fixed, dims))
}

fn same_shape(a: &(Vec<Option<Match>>, Vec<Dim>), b: &(Vec<Option<Match>>, Vec<Dim>)) -> bool {
    a.0 == b.0
        && a.1.len() == b.1.len()
        && a.1.iter().zip(&b.1).all(|(x, y)| x.field() == y.field())
}

/// A value as an inclusive interval of numbers (addresses as u128).
fn interval(dim: &ConcatField, v: &str) -> Option<(u128, u128)> {
    match dim {
        ConcatField::Port { .. } => {
            let (a, b) = v.split_once('-').unwrap_or((v, v));
            Some((a.parse().ok()?, b.parse().ok()?))
        }
        ConcatField::Addr { .. } => {
            let num = |ip: IpAddr| match ip {
                IpAddr::V4(a) => u128::from(u32::from(a)),
                IpAddr::V6(a) => u128::from(a),
            };
            if let Some((a, b)) = v.split_once('-') {
                return Some((num(a.parse().ok()?), num(b.parse().ok()?)));
            }
            let net: ipnet::IpNet = match v.parse() {
                Ok(n) => n,
                Err(_) => ipnet::IpNet::from(v.parse::<IpAddr>().ok()?),
            };
            Some((num(net.network()), num(net.broadcast())))
        }
    }
}

/// Whether any two boxes overlap (then the set would refuse them).
fn boxes_overlap(fields: &[ConcatField], elements: &[Vec<String>]) -> bool {
    let mut boxes: Vec<[(u128, u128); 2]> = Vec::with_capacity(elements.len());
    for e in elements {
        match (interval(&fields[0], &e[0]), interval(&fields[1], &e[1])) {
            (Some(a), Some(b)) => boxes.push([a, b]),
            _ => return true,
        }
    }
    boxes.sort_unstable();
    let mut active: Vec<[(u128, u128); 2]> = Vec::new();
    for b in boxes {
        active.retain(|a| a[0].1 >= b[0].0);
        if active.iter().any(|a| a[1].0 <= b[1].1 && b[1].0 <= a[1].1) {
            return true;
        }
        active.push(b);
    }
    false
}

fn comment_range(first: &Rule, last: &Rule) -> Option<String> {
    match (&first.comment, &last.comment) {
        (Some(a), Some(b)) if a != b => Some(format!("{a} .. {b}")),
        (a, _) => a.clone(),
    }
}

/// Merges one run (at least two rules of the same shape).
fn merge_run(run: &[Rule], shape: &(Vec<Option<Match>>, Vec<Dim>)) -> Option<Rule> {
    let splits: Vec<Vec<Dim>> = run
        .iter()
        .map(|r| split(r).expect("split before").1)
        .collect();
    let first = &run[0];
    let last = &run[run.len() - 1];
    let mut matches: Vec<Match> = Vec::new();
    if shape.1.len() == 1 {
        // One varying field: unite its values where it stood.
        let united = match &shape.1[0] {
            Dim::Addr { v6, src, .. } => {
                let mut all: Vec<String> = Vec::new();
                for s in &splits {
                    if let Dim::Addr { values, .. } = &s[0] {
                        all.extend(values.iter().cloned());
                    }
                }
                all.dedup();
                Match::Addr {
                    v6: *v6,
                    src: *src,
                    negate: false,
                    value: AddrValue::List(all),
                }
            }
            Dim::Port { src, .. } => {
                let mut all: Vec<PortRange> = Vec::new();
                for s in &splits {
                    if let Dim::Port { ranges, .. } = &s[0] {
                        all.extend(ranges.iter().copied());
                    }
                }
                all.sort_unstable();
                all.dedup();
                Match::Ports {
                    src: *src,
                    ranges: all,
                }
            }
        };
        let mut united = Some(united);
        for m in &shape.0 {
            match m {
                Some(m) => matches.push(m.clone()),
                None => matches.extend(united.take()),
            }
        }
    } else {
        let fields: Vec<ConcatField> = shape.1.iter().map(Dim::field).collect();
        let mut elements = Vec::new();
        for s in &splits {
            for a in s[0].strings() {
                for b in s[1].strings() {
                    elements.push(vec![a.clone(), b]);
                }
            }
        }
        if boxes_overlap(&fields, &elements) {
            return None;
        }
        matches.extend(shape.0.iter().flatten().cloned());
        matches.push(Match::Concat { fields, elements });
    }
    Some(Rule {
        matches,
        log: None,
        verdict: first.verdict.clone(),
        comment: comment_range(first, last),
    })
}

/// Merges the runs of similar rules of a chain.
pub fn merge_similar_rules(chain: &mut Chain) {
    let rules = std::mem::take(&mut chain.rules);
    let mut out = Vec::with_capacity(rules.len());
    let mut i = 0;
    while i < rules.len() {
        let Some(shape) = split(&rules[i]) else {
            out.push(rules[i].clone());
            i += 1;
            continue;
        };
        let mut j = i + 1;
        while j < rules.len()
            && rules[j].verdict == rules[i].verdict
            && split(&rules[j]).is_some_and(|s| same_shape(&s, &shape))
        {
            j += 1;
        }
        let min = if shape.1.len() == 1 {
            MIN_RUN_LIST
        } else {
            MIN_RUN_CONCAT
        };
        if j - i >= min {
            match merge_run(&rules[i..j], &shape) {
                Some(r) => out.push(r),
                None => out.extend(rules[i..j].iter().cloned()),
            }
        } else {
            out.extend(rules[i..j].iter().cloned());
        }
        i = j;
    }
    chain.rules = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::Verdict;

    fn rule(src: &str, port: u16, verdict: Verdict) -> Rule {
        Rule {
            matches: vec![
                Match::Addr {
                    v6: false,
                    src: true,
                    negate: false,
                    value: AddrValue::List(vec![src.into()]),
                },
                Match::L4Proto("tcp".into()),
                Match::Ports {
                    src: false,
                    ranges: vec![(port, port)],
                },
            ],
            log: None,
            verdict,
            comment: Some(format!("host.fw:{port}")),
        }
    }

    fn chain(rules: Vec<Rule>) -> Vec<String> {
        let mut c = Chain {
            name: "input".into(),
            hook: None,
            rules,
        };
        merge_similar_rules(&mut c);
        c.rules.iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn runs_of_address_and_port_become_one_concat_lookup() {
        let mut rules: Vec<Rule> = (0..MIN_RUN_CONCAT as u16)
            .map(|i| rule(&format!("10.0.{i}.0/24"), 1000 + i, Verdict::Accept))
            .collect();
        rules.push(rule("10.1.0.0/24", 80, Verdict::Drop));
        let out = chain(rules);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out[0].starts_with(
            "meta l4proto tcp ip saddr . th dport { 10.0.0.0/24 . 1000, 10.0.1.0/24 . 1001, "
        ));
        assert!(out[0]
            .ends_with("10.0.15.0/24 . 1015 } accept comment \"host.fw:1000 .. host.fw:1015\""));
        assert_eq!(
            out[1],
            "ip saddr 10.1.0.0/24 meta l4proto tcp th dport 80 drop comment \"host.fw:80\""
        );
        // One short of the threshold: left alone.
        let rules: Vec<Rule> = (0..MIN_RUN_CONCAT as u16 - 1)
            .map(|i| rule(&format!("10.0.{i}.0/24"), 1000 + i, Verdict::Accept))
            .collect();
        assert_eq!(chain(rules).len(), MIN_RUN_CONCAT - 1);
    }

    #[test]
    fn one_varying_field_is_united_in_place() {
        let rules: Vec<Rule> = [22, 80, 443, 8000]
            .into_iter()
            .map(|p| {
                let mut r = rule("10.0.0.1", p, Verdict::Accept);
                r.matches.remove(0);
                r
            })
            .collect();
        assert_eq!(
            chain(rules),
            ["meta l4proto tcp th dport { 22, 80, 443, 8000 } accept comment \"host.fw:22 .. host.fw:8000\""]
        );
    }

    #[test]
    fn logged_overlapping_or_lonely_rules_stay() {
        let mut logged = rule("10.0.0.0/24", 22, Verdict::Accept);
        logged.log = Some(("x".into(), crate::config::LogLevel::Info));
        let mut rules = vec![logged];
        // A long run whose boxes overlap (the /16 covers the /24s).
        rules.push(rule("10.0.0.0/16", 22, Verdict::Accept));
        for i in 0..MIN_RUN_CONCAT as u16 {
            rules.push(rule(&format!("10.0.{i}.0/24"), 22, Verdict::Accept));
        }
        rules.push(rule("10.9.0.0/16", 22, Verdict::Drop));
        let before: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
        assert_eq!(chain(rules), before);
    }

    #[test]
    fn overlap_detection() {
        let f = [
            ConcatField::Addr {
                v6: false,
                src: true,
            },
            ConcatField::Port { src: false },
        ];
        let e = |a: &str, p: &str| vec![a.to_string(), p.to_string()];
        assert!(!boxes_overlap(
            &f,
            &[e("10.0.0.0/24", "22"), e("10.0.0.0/24", "23")]
        ));
        assert!(!boxes_overlap(
            &f,
            &[e("10.0.0.0/24", "22"), e("10.0.1.0/24", "22")]
        ));
        assert!(boxes_overlap(
            &f,
            &[e("10.0.0.0/16", "20-30"), e("10.0.1.0/24", "22")]
        ));
        assert!(boxes_overlap(
            &f,
            &[e("10.0.0.1-10.0.0.9", "22"), e("10.0.0.5", "22")]
        ));
    }
}
