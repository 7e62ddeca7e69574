//! Applying a [`Ruleset`] as one nf_tables netlink batch, without the nft
//! program.
//!
//! The batch holds, for each table netd owns: create it (if missing),
//! delete it, create it again, then its chains, its sets with their
//! elements, its verdict maps and its rules, each rule's matches turned
//! into nf_tables expressions (`meta`, `payload`, `cmp`, `range`,
//! `lookup`, `ct`, `bitwise`, `log`, `reject`, `immediate`). The kernel
//! commits the batch as one transaction or rejects it whole, exactly as
//! with `nft -f`. Errors come back as netlink error messages tied to the
//! sequence number of the message that failed, which is mapped back to
//! the object it describes.

use std::net::IpAddr;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use crate::apply::{Applier, ApplyError};
use crate::config::PortRange;
use crate::macros::icmp_type_number;
use crate::nft::{
    AddrValue, Chain, ConcatField, Hook, Match, Rule, Ruleset, Table, TableFamily, Verdict,
};

// netlink
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLMSG_ERROR: u16 = 0x2;
const NLA_F_NESTED: u16 = 0x8000;

// nfnetlink
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;

// nf_tables messages
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_NEWSETELEM: u16 = 12;

// attributes
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_LOOKUP_SREG: u16 = 2;
const NFTA_LOOKUP_DREG: u16 = 3;
const NFTA_LOOKUP_SET_ID: u16 = 4;
const NFTA_LOOKUP_FLAGS: u16 = 5;
const NFTA_RANGE_SREG: u16 = 1;
const NFTA_RANGE_OP: u16 = 2;
const NFTA_RANGE_FROM_DATA: u16 = 3;
const NFTA_RANGE_TO_DATA: u16 = 4;
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFTA_LOG_PREFIX: u16 = 2;
const NFTA_LOG_LEVEL: u16 = 5;
const NFTA_REJECT_TYPE: u16 = 1;
const NFTA_REJECT_ICMP_CODE: u16 = 2;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_USERDATA: u16 = 13;
/// nft's set user data (libnftnl's TLVs): the key's byte order, which
/// `nft list` needs to print string keys such as interface names.
const NFTNL_UDATA_SET_KEYBYTEORDER: u8 = 0;
/// nftables' `BYTEORDER_HOST_ENDIAN`.
const NFT_BYTEORDER_HOST: u32 = 1;
const NFTA_SET_DESC_CONCAT: u16 = 2;
const NFTA_SET_FIELD_LEN: u16 = 1;
const NFTA_SET_ELEM_KEY_END: u16 = 10;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_FLAGS: u16 = 3;

// values
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_RANGE_EQ: u32 = 0;
const NFT_RANGE_NEQ: u32 = 1;
const NFT_LOOKUP_F_INV: u32 = 1;
const NFT_META_PROTOCOL: u32 = 1;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFT_PAYLOAD_LL_HEADER: u32 = 0;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_CT_STATE: u32 = 0;
const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_CONSTANT: u32 = 0x2;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_MAP: u32 = 0x8;
const NFT_SET_CONCAT: u32 = 0x80;
const NFT_REG32_00: u32 = 8;
/// Bits per type in nft's encoding of a concatenated key type.
const TYPE_BITS: u32 = 6;
const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_RETURN: i32 = -5;
const NFT_REJECT_ICMPX_UNREACH: u32 = 2;
const NFT_REJECT_ICMPX_PORT_UNREACH: u8 = 1;
const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_BRIDGE: u8 = 7;
const NFPROTO_IPV6: u8 = 10;
const NFPROTO_UNSPEC: u8 = 0;
const NF_BR_PRI_FILTER_BRIDGED: i32 = -200;
const IFNAMSIZ: usize = 16;

// nft's data types, so that `nft list` prints the keys properly.
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_ICMP_TYPE: u32 = 14;
const TYPE_ICMP6_TYPE: u32 = 29;
const TYPE_IFNAME: u32 = 41;

/// What a message of the batch creates, for error messages; rules are
/// described only when one fails.
#[derive(Debug, Clone)]
enum What {
    Text(String),
    /// Table, chain and rule index in the ruleset.
    Rule(usize, usize, usize),
}

/// The bytes of one netlink batch under construction.
struct Batch {
    buf: Vec<u8>,
    seq: u32,
    /// What each sequence number stands for, for error messages.
    what: Vec<(u32, What)>,
    next_set_id: u32,
    /// Nested attributes being built (start offsets).
    nests: Vec<usize>,
    /// An attribute grew past the 16-bit length netlink allows.
    overflow: bool,
    /// Where the last finished message starts, and its sequence number.
    last: (usize, u32),
}

impl Batch {
    fn new() -> Batch {
        let mut b = Batch {
            buf: Vec::with_capacity(1 << 20),
            seq: 1,
            what: Vec::new(),
            next_set_id: 1,
            nests: Vec::new(),
            overflow: false,
            last: (0, 0),
        };
        b.message(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            NFPROTO_UNSPEC,
            NFNL_SUBSYS_NFTABLES,
        );
        b.finish("batch begin".into());
        b
    }

    /// Starts a message; `finish` completes it.
    fn message(&mut self, ty: u16, flags: u16, family: u8, res_id: u16) {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&[0; 4]); // length, patched
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        // nfgenmsg
        self.buf.push(family);
        self.buf.push(0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
    }

    fn nft(&mut self, msg: u16, flags: u16, family: u8) {
        self.message(
            (NFNL_SUBSYS_NFTABLES << 8) | msg,
            NLM_F_REQUEST | flags,
            family,
            0,
        );
    }

    fn finish(&mut self, what: String) {
        self.finish_as(What::Text(what));
    }

    fn finish_as(&mut self, what: What) {
        let start = self.nests.pop().expect("message open");
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
        self.last = (start, self.seq);
        self.what.push((self.seq, what));
        self.seq += 1;
    }

    fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    fn str(&mut self, ty: u16, s: &str) {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(ty, &v);
    }

    fn u32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    fn begin(&mut self, ty: u16) {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&[0; 2]);
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    }

    fn end(&mut self) {
        let start = self.nests.pop().expect("nest open");
        let len = u16::try_from(self.buf.len() - start).unwrap_or_else(|_| {
            self.overflow = true;
            0
        });
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn data(&mut self, ty: u16, value: &[u8]) {
        self.begin(ty);
        self.attr(NFTA_DATA_VALUE, value);
        self.end();
    }

    fn verdict_data(&mut self, ty: u16, code: i32, chain: Option<&str>) {
        self.begin(ty);
        self.begin(NFTA_DATA_VERDICT);
        self.attr(NFTA_VERDICT_CODE, &code.to_be_bytes());
        if let Some(c) = chain {
            self.str(NFTA_VERDICT_CHAIN, c);
        }
        self.end();
        self.end();
    }

    /// Opens an expression of the rule being built.
    fn expr(&mut self, name: &str) {
        self.begin(NFTA_LIST_ELEM);
        self.str(NFTA_EXPR_NAME, name);
        self.begin(NFTA_EXPR_DATA);
    }

    fn expr_end(&mut self) {
        self.end();
        self.end();
    }

    fn meta(&mut self, key: u32) {
        self.expr("meta");
        self.u32(NFTA_META_KEY, key);
        self.u32(NFTA_META_DREG, NFT_REG_1);
        self.expr_end();
    }

    fn payload(&mut self, base: u32, offset: u32, len: u32) {
        self.payload_to(base, offset, len, NFT_REG_1);
    }

    fn payload_to(&mut self, base: u32, offset: u32, len: u32, dreg: u32) {
        self.expr("payload");
        self.u32(NFTA_PAYLOAD_DREG, dreg);
        self.u32(NFTA_PAYLOAD_BASE, base);
        self.u32(NFTA_PAYLOAD_OFFSET, offset);
        self.u32(NFTA_PAYLOAD_LEN, len);
        self.expr_end();
    }

    fn cmp(&mut self, op: u32, value: &[u8]) {
        self.expr("cmp");
        self.u32(NFTA_CMP_SREG, NFT_REG_1);
        self.u32(NFTA_CMP_OP, op);
        self.data(NFTA_CMP_DATA, value);
        self.expr_end();
    }

    fn range(&mut self, negate: bool, from: &[u8], to: &[u8]) {
        self.expr("range");
        self.u32(NFTA_RANGE_SREG, NFT_REG_1);
        self.u32(
            NFTA_RANGE_OP,
            if negate { NFT_RANGE_NEQ } else { NFT_RANGE_EQ },
        );
        self.data(NFTA_RANGE_FROM_DATA, from);
        self.data(NFTA_RANGE_TO_DATA, to);
        self.expr_end();
    }

    fn lookup(&mut self, set: &str, id: Option<u32>, negate: bool, verdict_map: bool) {
        self.lookup_from(set, id, negate, verdict_map, NFT_REG_1);
    }

    fn lookup_from(
        &mut self,
        set: &str,
        id: Option<u32>,
        negate: bool,
        verdict_map: bool,
        sreg: u32,
    ) {
        self.expr("lookup");
        self.str(NFTA_LOOKUP_SET, set);
        if let Some(id) = id {
            self.u32(NFTA_LOOKUP_SET_ID, id);
        }
        self.u32(NFTA_LOOKUP_SREG, sreg);
        if verdict_map {
            self.u32(NFTA_LOOKUP_DREG, NFT_REG_VERDICT);
        }
        if negate {
            self.u32(NFTA_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
        }
        self.expr_end();
    }
}

fn family_of(f: TableFamily) -> u8 {
    match f {
        TableFamily::Inet => NFPROTO_INET,
        TableFamily::Bridge => NFPROTO_BRIDGE,
    }
}

fn ifname(n: &str) -> [u8; IFNAMSIZ] {
    let mut b = [0u8; IFNAMSIZ];
    for (d, s) in b.iter_mut().zip(n.bytes().take(IFNAMSIZ - 1)) {
        *d = s;
    }
    b
}

fn proto_number(p: &str) -> Option<u8> {
    Some(match p {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "ipv6-icmp" => 58,
        "sctp" => 132,
        "udplite" => 136,
        "dccp" => 33,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "igmp" => 2,
        n => n.parse().ok()?,
    })
}

/// An inclusive interval of big-endian keys.
type Interval = (Vec<u8>, Vec<u8>);

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// An nft address element (`10.0.0.0/8`, `10.0.0.1-10.0.0.9`,
/// `10.0.0.1`) as an inclusive interval.
fn addr_interval(e: &str) -> Option<Interval> {
    if let Some((a, b)) = e.split_once('-') {
        let a: IpAddr = a.parse().ok()?;
        let b: IpAddr = b.parse().ok()?;
        return Some((ip_bytes(a), ip_bytes(b)));
    }
    let net: ipnet::IpNet = match e.parse() {
        Ok(n) => n,
        Err(_) => ipnet::IpNet::from(e.parse::<IpAddr>().ok()?),
    };
    Some((ip_bytes(net.network()), ip_bytes(net.broadcast())))
}

/// Sorts and merges overlapping or adjacent intervals (what nft's
/// `auto-merge` does).
fn merge(mut v: Vec<Interval>) -> Vec<Interval> {
    v.sort();
    let mut out: Vec<Interval> = Vec::new();
    for (a, b) in v {
        if let Some(last) = out.last_mut() {
            let next = increment(&last.1);
            if a <= last.1 || next.as_deref() == Some(&a[..]) {
                if b > last.1 {
                    last.1 = b;
                }
                continue;
            }
        }
        out.push((a, b));
    }
    out
}

/// The big-endian number one higher, or `None` on overflow.
fn increment(v: &[u8]) -> Option<Vec<u8>> {
    let mut out = v.to_vec();
    for byte in out.iter_mut().rev() {
        if *byte == 0xff {
            *byte = 0;
        } else {
            *byte += 1;
            return Some(out);
        }
    }
    None
}

/// Elements per NEWSETELEM message, so that the element list stays
/// within a 16-bit attribute length (about 100 bytes per element at most).
const ELEMENTS_PER_MESSAGE: usize = 500;

/// Encodes the elements of an interval set into an open element list:
/// each interval is a start element and an end element one past its last
/// key.
fn interval_elements(b: &mut Batch, intervals: &[Interval]) {
    for (from, to) in intervals {
        b.begin(NFTA_LIST_ELEM);
        b.data(NFTA_SET_ELEM_KEY, from);
        b.end();
        if let Some(end) = increment(to) {
            b.begin(NFTA_LIST_ELEM);
            b.data(NFTA_SET_ELEM_KEY, &end);
            b.u32(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
            b.end();
        }
    }
}

/// Length in bytes of a concatenation field's value.
fn field_len(f: &ConcatField) -> u32 {
    match f {
        ConcatField::Addr { v6: true, .. } => 16,
        ConcatField::Addr { v6: false, .. } => 4,
        ConcatField::Port { .. } => 2,
    }
}

/// A concatenation field's value as an inclusive interval of big-endian
/// bytes.
fn field_interval(f: &ConcatField, v: &str) -> Option<Interval> {
    match f {
        ConcatField::Addr { .. } => addr_interval(v),
        ConcatField::Port { .. } => {
            let (a, b) = v.split_once('-').unwrap_or((v, v));
            let a: u16 = a.parse().ok()?;
            let b: u16 = b.parse().ok()?;
            Some((a.to_be_bytes().to_vec(), b.to_be_bytes().to_vec()))
        }
    }
}

fn pad4(v: &mut Vec<u8>) {
    while v.len() % 4 != 0 {
        v.push(0);
    }
}

struct Encoder<'a> {
    table: &'a Table,
    /// The table's index in the ruleset.
    index: usize,
    family: u8,
}

impl Encoder<'_> {
    fn new_set(
        &self,
        b: &mut Batch,
        name: &str,
        anonymous: bool,
        key_type: u32,
        key_len: u32,
        interval: bool,
    ) -> u32 {
        let id = b.next_set_id;
        b.next_set_id += 1;
        b.nft(NFT_MSG_NEWSET, NLM_F_CREATE, self.family);
        b.str(NFTA_SET_TABLE, &self.table.name);
        b.str(NFTA_SET_NAME, name);
        let mut flags = if interval { NFT_SET_INTERVAL } else { 0 };
        if anonymous {
            flags |= NFT_SET_ANONYMOUS | NFT_SET_CONSTANT;
        }
        b.u32(NFTA_SET_FLAGS, flags);
        b.u32(NFTA_SET_KEY_TYPE, key_type);
        b.u32(NFTA_SET_KEY_LEN, key_len);
        b.u32(NFTA_SET_ID, id);
        b.finish(format!("set {name} of table {}", self.table.name));
        id
    }

    /// Opens a NEWSETELEM message and its element list.
    fn elements_begin(&self, b: &mut Batch, name: &str, id: Option<u32>) {
        b.nft(NFT_MSG_NEWSETELEM, NLM_F_CREATE, self.family);
        b.str(NFTA_SET_ELEM_LIST_TABLE, &self.table.name);
        b.str(NFTA_SET_ELEM_LIST_SET, name);
        if let Some(id) = id {
            b.u32(NFTA_SET_ELEM_LIST_SET_ID, id);
        }
        b.begin(NFTA_SET_ELEM_LIST_ELEMENTS);
    }

    fn elements_end(&self, b: &mut Batch, name: &str) {
        b.end();
        b.finish(format!("elements of set {name}"));
    }

    fn set_elements(&self, b: &mut Batch, name: &str, id: Option<u32>, intervals: &[Interval]) {
        // An attribute's length is 16 bits: many elements take several
        // messages.
        for chunk in intervals.chunks(ELEMENTS_PER_MESSAGE) {
            self.elements_begin(b, name, id);
            interval_elements(b, chunk);
            self.elements_end(b, name);
        }
    }

    /// An anonymous interval set for a rule, created before the rule's
    /// message; returns its name and id.
    fn anonymous(&self, b: &mut Batch, key_type: u32, key_len: u32, iv: Vec<Interval>) -> u32 {
        let id = self.new_set(b, "__set%d", true, key_type, key_len, true);
        self.set_elements(b, "__set%d", Some(id), &merge(iv));
        id
    }

    /// Sets the rule's anonymous sets need, in order of its matches.
    fn prepare(&self, b: &mut Batch, rule: &Rule) -> Result<Vec<u32>, String> {
        let mut ids = Vec::new();
        for m in &rule.matches {
            match m {
                Match::Addr {
                    v6,
                    value: AddrValue::List(l),
                    ..
                } if l.len() > 1 => {
                    let iv = l
                        .iter()
                        .map(|e| addr_interval(e).ok_or_else(|| format!("bad address {e}")))
                        .collect::<Result<Vec<_>, _>>()?;
                    let (t, len) = if *v6 {
                        (TYPE_IP6ADDR, 16)
                    } else {
                        (TYPE_IPADDR, 4)
                    };
                    ids.push(self.anonymous(b, t, len, iv));
                }
                Match::Ports { ranges, .. } if ranges.len() > 1 => {
                    let iv = ranges
                        .iter()
                        .map(|&(a, z)| (a.to_be_bytes().to_vec(), z.to_be_bytes().to_vec()))
                        .collect();
                    ids.push(self.anonymous(b, TYPE_INET_SERVICE, 2, iv));
                }
                Match::IcmpType { v6, types } if types.len() > 1 => {
                    let iv = types
                        .iter()
                        .map(|t| {
                            let n = icmp_type_number(t, *v6)
                                .ok_or_else(|| format!("unknown ICMP type {t}"))?;
                            Ok((vec![n], vec![n]))
                        })
                        .collect::<Result<Vec<_>, String>>()?;
                    let t = if *v6 { TYPE_ICMP6_TYPE } else { TYPE_ICMP_TYPE };
                    ids.push(self.anonymous(b, t, 1, iv));
                }
                Match::Concat { fields, elements } => {
                    ids.push(self.concat_set(b, fields, elements)?);
                }
                _ => {}
            }
        }
        Ok(ids)
    }

    /// An anonymous set of boxes for a concatenation.
    fn concat_set(
        &self,
        b: &mut Batch,
        fields: &[ConcatField],
        elements: &[Vec<String>],
    ) -> Result<u32, String> {
        let key_len: u32 = fields.iter().map(|f| field_len(f).div_ceil(4) * 4).sum();
        let key_type = fields.iter().fold(0u32, |t, f| {
            let ty = match f {
                ConcatField::Addr { v6: true, .. } => TYPE_IP6ADDR,
                ConcatField::Addr { v6: false, .. } => TYPE_IPADDR,
                ConcatField::Port { .. } => TYPE_INET_SERVICE,
            };
            (t << TYPE_BITS) | ty
        });
        let id = b.next_set_id;
        b.next_set_id += 1;
        b.nft(NFT_MSG_NEWSET, NLM_F_CREATE, self.family);
        b.str(NFTA_SET_TABLE, &self.table.name);
        b.str(NFTA_SET_NAME, "__set%d");
        b.u32(
            NFTA_SET_FLAGS,
            NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | NFT_SET_INTERVAL | NFT_SET_CONCAT,
        );
        b.u32(NFTA_SET_KEY_TYPE, key_type);
        b.u32(NFTA_SET_KEY_LEN, key_len);
        b.u32(NFTA_SET_ID, id);
        b.begin(NFTA_SET_DESC);
        b.begin(NFTA_SET_DESC_CONCAT);
        for f in fields {
            b.begin(NFTA_LIST_ELEM);
            b.u32(NFTA_SET_FIELD_LEN, field_len(f));
            b.end();
        }
        b.end();
        b.end();
        b.finish(format!("concatenated set of table {}", self.table.name));

        for chunk in elements.chunks(ELEMENTS_PER_MESSAGE) {
            self.elements_begin(b, "__set%d", Some(id));
            for e in chunk {
                let mut start = Vec::new();
                let mut end = Vec::new();
                for (f, v) in fields.iter().zip(e) {
                    let (a, z) = field_interval(f, v).ok_or_else(|| format!("bad value {v}"))?;
                    start.extend_from_slice(&a);
                    end.extend_from_slice(&z);
                    pad4(&mut start);
                    pad4(&mut end);
                }
                b.begin(NFTA_LIST_ELEM);
                b.data(NFTA_SET_ELEM_KEY, &start);
                b.data(NFTA_SET_ELEM_KEY_END, &end);
                b.end();
            }
            self.elements_end(b, "a concatenated set");
        }
        Ok(id)
    }

    /// The layer 3 check an address match depends on.
    fn l3_dependency(&self, b: &mut Batch, v6: bool) {
        if self.family == NFPROTO_INET {
            b.meta(NFT_META_NFPROTO);
            b.cmp(NFT_CMP_EQ, &[if v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 }]);
        } else {
            b.meta(NFT_META_PROTOCOL);
            let ethertype: u16 = if v6 { 0x86dd } else { 0x0800 };
            b.cmp(NFT_CMP_EQ, &ethertype.to_be_bytes());
        }
    }

    fn ports(
        &self,
        b: &mut Batch,
        src: bool,
        ranges: &[PortRange],
        ids: &mut impl Iterator<Item = u32>,
    ) {
        b.payload(NFT_PAYLOAD_TRANSPORT_HEADER, if src { 0 } else { 2 }, 2);
        match ranges {
            [(a, z)] if a == z => b.cmp(NFT_CMP_EQ, &a.to_be_bytes()),
            [(a, z)] => b.range(false, &a.to_be_bytes(), &z.to_be_bytes()),
            _ => {
                let id = ids.next().expect("prepared");
                b.lookup("__set%d", Some(id), false, false);
            }
        }
    }

    fn rule(
        &self,
        b: &mut Batch,
        chain: &Chain,
        at: (usize, usize),
        rule: &Rule,
    ) -> Result<(), String> {
        let ids = self.prepare(b, rule)?;
        let mut ids = ids.into_iter();
        b.nft(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, self.family);
        b.str(NFTA_RULE_TABLE, &self.table.name);
        b.str(NFTA_RULE_CHAIN, &chain.name);
        b.begin(NFTA_RULE_EXPRESSIONS);
        let mut l3_done: Option<bool> = None;
        for m in &rule.matches {
            match m {
                Match::IifName(n) | Match::OifName(n) => {
                    let key = if matches!(m, Match::IifName(_)) {
                        NFT_META_IIFNAME
                    } else {
                        NFT_META_OIFNAME
                    };
                    b.meta(key);
                    b.cmp(NFT_CMP_EQ, &ifname(n));
                }
                Match::Addr {
                    v6,
                    src,
                    negate,
                    value,
                } => {
                    if l3_done != Some(*v6) {
                        self.l3_dependency(b, *v6);
                        l3_done = Some(*v6);
                    }
                    let (offset, len) = match (v6, src) {
                        (false, true) => (12, 4),
                        (false, false) => (16, 4),
                        (true, true) => (8, 16),
                        (true, false) => (24, 16),
                    };
                    b.payload(NFT_PAYLOAD_NETWORK_HEADER, offset, len);
                    match value {
                        AddrValue::Set(s) => b.lookup(s, None, *negate, false),
                        AddrValue::List(l) if l.len() == 1 => {
                            let (from, to) = addr_interval(&l[0])
                                .ok_or_else(|| format!("bad address {}", l[0]))?;
                            if from == to {
                                b.cmp(if *negate { NFT_CMP_NEQ } else { NFT_CMP_EQ }, &from);
                            } else {
                                b.range(*negate, &from, &to);
                            }
                        }
                        AddrValue::List(_) => {
                            let id = ids.next().expect("prepared");
                            b.lookup("__set%d", Some(id), *negate, false);
                        }
                    }
                }
                Match::NfProto { v6 } => {
                    self.l3_dependency(b, *v6);
                    l3_done = Some(*v6);
                }
                Match::L4Proto(p) => {
                    let n = proto_number(p).ok_or_else(|| format!("unknown protocol {p}"))?;
                    b.meta(NFT_META_L4PROTO);
                    b.cmp(NFT_CMP_EQ, &[n]);
                }
                Match::Ports { src, ranges } => self.ports(b, *src, ranges, &mut ids),
                Match::IcmpType { v6, types } => {
                    b.payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1);
                    if let [t] = types.as_slice() {
                        let n = icmp_type_number(t, *v6)
                            .ok_or_else(|| format!("unknown ICMP type {t}"))?;
                        b.cmp(NFT_CMP_EQ, &[n]);
                    } else {
                        let id = ids.next().expect("prepared");
                        b.lookup("__set%d", Some(id), false, false);
                    }
                }
                Match::CtState(states) => {
                    let mut mask = 0u32;
                    for s in states {
                        mask |= match *s {
                            "invalid" => 1,
                            "established" => 2,
                            "related" => 4,
                            "new" => 8,
                            "untracked" => 64,
                            other => return Err(format!("unknown ct state {other}")),
                        };
                    }
                    b.expr("ct");
                    b.u32(NFTA_CT_DREG, NFT_REG_1);
                    b.u32(NFTA_CT_KEY, NFT_CT_STATE);
                    b.expr_end();
                    b.expr("bitwise");
                    b.u32(NFTA_BITWISE_SREG, NFT_REG_1);
                    b.u32(NFTA_BITWISE_DREG, NFT_REG_1);
                    b.u32(NFTA_BITWISE_LEN, 4);
                    b.data(NFTA_BITWISE_MASK, &mask.to_ne_bytes());
                    b.data(NFTA_BITWISE_XOR, &0u32.to_ne_bytes());
                    b.expr_end();
                    b.cmp(NFT_CMP_NEQ, &0u32.to_ne_bytes());
                }
                Match::EtherSaddrNot(mac) => {
                    let bytes: Vec<u8> = mac
                        .split(':')
                        .map(|h| u8::from_str_radix(h, 16))
                        .collect::<Result<_, _>>()
                        .map_err(|_| format!("bad MAC {mac}"))?;
                    b.payload(NFT_PAYLOAD_LL_HEADER, 6, 6);
                    b.cmp(NFT_CMP_NEQ, &bytes);
                }
                Match::Concat { fields, .. } => {
                    let mut reg = NFT_REG32_00;
                    for f in fields {
                        match f {
                            ConcatField::Addr { v6, src } => {
                                if l3_done != Some(*v6) {
                                    self.l3_dependency(b, *v6);
                                    l3_done = Some(*v6);
                                }
                                let (offset, len) = match (v6, src) {
                                    (false, true) => (12, 4),
                                    (false, false) => (16, 4),
                                    (true, true) => (8, 16),
                                    (true, false) => (24, 16),
                                };
                                b.payload_to(NFT_PAYLOAD_NETWORK_HEADER, offset, len, reg);
                            }
                            ConcatField::Port { src } => {
                                b.payload_to(
                                    NFT_PAYLOAD_TRANSPORT_HEADER,
                                    if *src { 0 } else { 2 },
                                    2,
                                    reg,
                                );
                            }
                        }
                        reg += field_len(f).div_ceil(4);
                    }
                    let id = ids.next().expect("prepared");
                    b.lookup_from("__set%d", Some(id), false, false, NFT_REG32_00);
                }
                Match::EtherType(t) => {
                    let v: u16 = match *t {
                        "arp" => 0x0806,
                        "ip" => 0x0800,
                        "ip6" => 0x86dd,
                        other => return Err(format!("unknown ether type {other}")),
                    };
                    b.meta(NFT_META_PROTOCOL);
                    b.cmp(NFT_CMP_EQ, &v.to_be_bytes());
                }
            }
        }
        if let Some((prefix, level)) = &rule.log {
            b.expr("log");
            b.str(NFTA_LOG_PREFIX, prefix);
            b.u32(NFTA_LOG_LEVEL, level.syslog());
            b.expr_end();
        }
        match &rule.verdict {
            Verdict::Reject => {
                b.expr("reject");
                b.u32(NFTA_REJECT_TYPE, NFT_REJECT_ICMPX_UNREACH);
                b.attr(NFTA_REJECT_ICMP_CODE, &[NFT_REJECT_ICMPX_PORT_UNREACH]);
                b.expr_end();
            }
            Verdict::IifVmap(map) | Verdict::OifVmap(map) => {
                let key = if matches!(rule.verdict, Verdict::IifVmap(_)) {
                    NFT_META_IIFNAME
                } else {
                    NFT_META_OIFNAME
                };
                b.meta(key);
                b.lookup(map, None, false, true);
            }
            v => {
                let (code, chain) = match v {
                    Verdict::Accept => (NF_ACCEPT, None),
                    Verdict::Drop => (NF_DROP, None),
                    Verdict::Return => (NFT_RETURN, None),
                    Verdict::Jump(c) => (NFT_JUMP, Some(c.as_str())),
                    _ => unreachable!("handled above"),
                };
                b.expr("immediate");
                b.u32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
                b.verdict_data(NFTA_IMMEDIATE_DATA, code, chain);
                b.expr_end();
            }
        }
        b.end();
        if let Some(c) = &rule.comment {
            // nft's user data: type 0 (comment), length, text with NUL.
            let text: Vec<u8> = c.bytes().take(250).chain([0]).collect();
            let mut udata = vec![0u8, text.len() as u8];
            udata.extend_from_slice(&text);
            b.attr(NFTA_RULE_USERDATA, &udata);
        }
        b.finish_as(What::Rule(self.index, at.0, at.1));
        Ok(())
    }

    fn table(&self, b: &mut Batch) -> Result<(), String> {
        let t = self.table;
        b.nft(NFT_MSG_NEWTABLE, NLM_F_CREATE, self.family);
        b.str(NFTA_TABLE_NAME, &t.name);
        b.finish(format!("table {}", t.name));
        for c in &t.chains {
            b.nft(NFT_MSG_NEWCHAIN, NLM_F_CREATE, self.family);
            b.str(NFTA_CHAIN_TABLE, &t.name);
            b.str(NFTA_CHAIN_NAME, &c.name);
            if let Some(h) = c.hook {
                let num: u32 = match h {
                    Hook::Input => 1,
                    Hook::Forward => 2,
                    Hook::Output => 3,
                };
                let prio = if t.family == TableFamily::Bridge {
                    NF_BR_PRI_FILTER_BRIDGED
                } else {
                    0
                };
                b.begin(NFTA_CHAIN_HOOK);
                b.u32(NFTA_HOOK_HOOKNUM, num);
                b.attr(NFTA_HOOK_PRIORITY, &prio.to_be_bytes());
                b.end();
                b.u32(NFTA_CHAIN_POLICY, NF_ACCEPT as u32);
                b.str(NFTA_CHAIN_TYPE, "filter");
            }
            b.finish(format!("chain {} of table {}", c.name, t.name));
        }
        for s in &t.sets {
            let (ty, len) = if s.ipv6 {
                (TYPE_IP6ADDR, 16)
            } else {
                (TYPE_IPADDR, 4)
            };
            self.new_set(b, &s.name, false, ty, len, true);
            if !s.elements.is_empty() {
                let iv = s
                    .elements
                    .iter()
                    .map(|e| {
                        addr_interval(e).ok_or_else(|| format!("set {}: bad element {e}", s.name))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                self.set_elements(b, &s.name, None, &merge(iv));
            }
        }
        for m in &t.maps {
            let id = b.next_set_id;
            b.next_set_id += 1;
            b.nft(NFT_MSG_NEWSET, NLM_F_CREATE, self.family);
            b.str(NFTA_SET_TABLE, &t.name);
            b.str(NFTA_SET_NAME, &m.name);
            b.u32(NFTA_SET_FLAGS, NFT_SET_MAP);
            b.u32(NFTA_SET_KEY_TYPE, TYPE_IFNAME);
            b.u32(NFTA_SET_KEY_LEN, IFNAMSIZ as u32);
            b.u32(NFTA_SET_DATA_TYPE, NFT_DATA_VERDICT);
            let mut udata = vec![NFTNL_UDATA_SET_KEYBYTEORDER, 4];
            udata.extend_from_slice(&NFT_BYTEORDER_HOST.to_ne_bytes());
            b.attr(NFTA_SET_USERDATA, &udata);
            b.u32(NFTA_SET_ID, id);
            b.finish(format!("map {} of table {}", m.name, t.name));
            if m.elements.is_empty() {
                continue;
            }
            for chunk in m.elements.chunks(ELEMENTS_PER_MESSAGE) {
                self.elements_begin(b, &m.name, None);
                for (iface, chain) in chunk {
                    b.begin(NFTA_LIST_ELEM);
                    b.data(NFTA_SET_ELEM_KEY, &ifname(iface));
                    b.verdict_data(NFTA_SET_ELEM_DATA, NFT_JUMP, Some(chain));
                    b.end();
                }
                self.elements_end(b, &m.name);
            }
        }
        for (ci, c) in t.chains.iter().enumerate() {
            for (ri, r) in c.rules.iter().enumerate() {
                self.rule(b, c, (ci, ri), r)?;
            }
        }
        Ok(())
    }
}

/// Builds the whole batch for `ruleset`; returns the bytes and what each
/// sequence number stands for.
fn encode(ruleset: &Ruleset) -> Result<Batch, String> {
    let mut b = Batch::new();
    for (family, name) in ruleset.replaced_tables() {
        let fam = family_of(family);
        b.nft(NFT_MSG_NEWTABLE, NLM_F_CREATE, fam);
        b.str(NFTA_TABLE_NAME, name);
        b.finish(format!("add table {family} {name}"));
        b.nft(NFT_MSG_DELTABLE, 0, fam);
        b.str(NFTA_TABLE_NAME, name);
        b.finish(format!("delete table {family} {name}"));
    }
    for (index, t) in ruleset.tables.iter().enumerate() {
        Encoder {
            table: t,
            index,
            family: family_of(t.family),
        }
        .table(&mut b)?;
    }
    // The last operation asks for an acknowledgement: the kernel sends
    // its answers once the whole batch is committed or aborted, so a zero
    // answer to it means the transaction went through. (Kernels from 6.10
    // also acknowledge the end message itself; 6.1 does not.)
    let (start, _) = b.last;
    let flags_at = start + 6;
    let flags = u16::from_ne_bytes([b.buf[flags_at], b.buf[flags_at + 1]]) | NLM_F_ACK;
    b.buf[flags_at..flags_at + 2].copy_from_slice(&flags.to_ne_bytes());
    b.message(
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST | NLM_F_ACK,
        NFPROTO_UNSPEC,
        NFNL_SUBSYS_NFTABLES,
    );
    b.finish("batch end".into());
    if b.overflow {
        return Err("an object is too large for one netlink attribute".into());
    }
    Ok(b)
}

/// Applies over an nf_tables netlink socket, in one batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetlinkApplier;

impl NetlinkApplier {
    fn send(&self, batch: &Batch, ruleset: &Ruleset) -> Result<(), ApplyError> {
        let io = |e: std::io::Error| ApplyError::Netlink(e.to_string());
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(io)?;
        socket.bind_auto().map_err(io)?;
        // The batch goes out in one message; make room for it.
        let size = batch.buf.len() + 4096;
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::SndBufForce, &size)
            .map_err(|e| ApplyError::Netlink(format!("cannot size the send buffer: {e}")))?;
        let _ = socket.set_rx_buf_sz(1 << 20);
        let kernel = SocketAddr::new(0, 0);
        let sent = socket.send_to(&batch.buf, &kernel, 0).map_err(io)?;
        if sent != batch.buf.len() {
            return Err(ApplyError::Netlink(format!(
                "sent {sent} of {} bytes",
                batch.buf.len()
            )));
        }
        // The kernel handled the batch while sending; its answers are
        // queued already.
        socket.set_non_blocking(true).map_err(io)?;
        let end_seq = batch.seq - 1;
        let last_op_seq = end_seq - 1;
        let mut errors = Vec::new();
        let mut acked = false;
        loop {
            let data = match socket.recv_from_full() {
                Ok((d, _)) => d,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(io(e)),
            };
            let mut rest = &data[..];
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
                let ty = u16::from_ne_bytes(rest[4..6].try_into().expect("2 bytes"));
                let seq = u32::from_ne_bytes(rest[8..12].try_into().expect("4 bytes"));
                if len < 16 || len > rest.len() {
                    break;
                }
                if ty == NLMSG_ERROR && len >= 20 {
                    let code = i32::from_ne_bytes(rest[16..20].try_into().expect("4 bytes"));
                    if code == 0 {
                        if seq == end_seq || seq == last_op_seq {
                            acked = true;
                        }
                    } else {
                        let what = match batch.what.iter().find(|(s, _)| *s == seq) {
                            Some((_, What::Text(t))) => t.clone(),
                            Some((_, What::Rule(t, c, r))) => {
                                let table = &ruleset.tables[*t];
                                let chain = &table.chains[*c];
                                format!(
                                    "rule {} of chain {} in table {}: {}",
                                    r + 1,
                                    chain.name,
                                    table.name,
                                    chain.rules[*r]
                                )
                            }
                            None => "?".to_string(),
                        };
                        errors.push(format!(
                            "{what}: {}",
                            std::io::Error::from_raw_os_error(-code)
                        ));
                    }
                }
                let aligned = (len + 3) & !3;
                rest = &rest[aligned.min(rest.len())..];
            }
        }
        if !errors.is_empty() {
            return Err(ApplyError::Refused(errors.join("; ")));
        }
        if !acked {
            return Err(ApplyError::Netlink(
                "the kernel did not acknowledge the batch".into(),
            ));
        }
        Ok(())
    }
}

impl Applier for NetlinkApplier {
    fn apply(&self, ruleset: &Ruleset) -> Result<(), ApplyError> {
        let batch = encode(ruleset).map_err(ApplyError::Refused)?;
        self.send(&batch, ruleset)?;
        let rules: usize = ruleset.tables.iter().map(|t| t.rule_count()).sum();
        tracing::info!(
            "firewall: {} tables, {rules} rules in force (netlink)",
            ruleset.tables.len()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_merge_and_end_one_past() {
        let iv = |a: &str| addr_interval(a).unwrap();
        assert_eq!(
            iv("10.0.0.0/8"),
            (vec![10, 0, 0, 0], vec![10, 255, 255, 255])
        );
        assert_eq!(iv("10.0.0.1"), (vec![10, 0, 0, 1], vec![10, 0, 0, 1]));
        assert_eq!(iv("10.0.0.1-10.0.0.9").1, vec![10, 0, 0, 9]);
        let merged = merge(vec![
            iv("10.0.0.5"),
            iv("10.0.0.0/24"),
            iv("10.0.1.0/24"),
            iv("10.9.0.1"),
        ]);
        assert_eq!(
            merged,
            vec![
                (vec![10, 0, 0, 0], vec![10, 0, 1, 255]),
                (vec![10, 9, 0, 1], vec![10, 9, 0, 1])
            ]
        );
        assert_eq!(increment(&[0, 255]), Some(vec![1, 0]));
        assert_eq!(increment(&[255, 255]), None);
    }

    #[test]
    fn large_sets_take_several_messages() {
        use crate::nft::{Set, Table};
        let elements: Vec<String> = (0..3000u32)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
            .collect();
        let ruleset = Ruleset {
            tables: vec![Table {
                family: TableFamily::Inet,
                name: "oxbow".into(),
                sets: vec![Set {
                    name: "big".into(),
                    ipv6: false,
                    elements,
                }],
                maps: vec![],
                chains: vec![],
            }],
            keep_guest_table: false,
        };
        let b = encode(&ruleset).unwrap();
        let element_messages = b
            .what
            .iter()
            .filter(|(_, w)| matches!(w, What::Text(t) if t == "elements of set big"))
            .count();
        // Adjacent /24s merge into few intervals; spread ones would not.
        assert!(element_messages >= 1);
        let spread: Vec<String> = (0..3000u32)
            .map(|i| format!("10.{}.{}.1", i / 256, i % 256))
            .collect();
        let mut r2 = ruleset.clone();
        r2.tables[0].sets[0].elements = spread;
        let b = encode(&r2).unwrap();
        let element_messages = b
            .what
            .iter()
            .filter(|(_, w)| matches!(w, What::Text(t) if t == "elements of set big"))
            .count();
        assert_eq!(element_messages, 6);
    }

    #[test]
    fn batch_is_framed() {
        let b = encode(&Ruleset::default()).unwrap();
        // begin, 2 x (add, delete), end
        assert_eq!(b.what.len(), 6);
        let mut rest = &b.buf[..];
        let mut n = 0;
        while !rest.is_empty() {
            let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
            assert!(len >= 20 && len % 4 == 0);
            rest = &rest[len..];
            n += 1;
        }
        assert_eq!(n, 6);
    }
}
