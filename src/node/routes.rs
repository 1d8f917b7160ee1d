//! The panel's routes as target rules: which targets a user's streams and UDP
//! associations may not reach.
//!
//! An Xboard node config carries `routes`, each
//! `{"id": 1, "match": [...], "action": "block", "action_value": null}`. [`Route`]
//! reads one leniently: `match` may be an array of strings, one comma-separated
//! string, `null`, or an object of strings (what Xboard sends when PHP's
//! `array_filter` left holes in the array); a `null` action is the empty one; `id`
//! may be a number or a numeric string. [`RouteRules::from_routes`] compiles the
//! `block` routes once into sets that answer [`RouteRules::blocks_name`] and
//! [`RouteRules::blocks_ip`] without allocating, and lists, one line each,
//! everything it leaves out. It never fails as a whole: the caller logs those
//! lines once and serves with the rest.
//!
//! # What a `block` route's items mean
//!
//! Each item stands on its own: a route blocks a target when ANY of its items
//! matches it, and the rules block a target when any route does. Prefixes are read
//! without regard to case; a value is trimmed.
//!
//! | item | blocks |
//! |---|---|
//! | `domain:example.com` | the name `example.com` and every name under it (`a.example.com`), not `badexample.com` |
//! | `full:example.com` | exactly the name `example.com` |
//! | `keyword:ads` | every name containing `ads` |
//! | `regexp:^ads\.` | every name the pattern matches (anywhere in the name unless anchored) |
//! | `example` (no prefix, not an address) | like `keyword:example`, as in Xray |
//! | `1.2.3.4`, `10.0.0.0/8`, `2001:db8::/32`, `ip:…` | a target address in that range |
//! | `port:25`, `port:6881-6889`, `port:25,465` | every target on those ports, names and addresses alike (the comma form only in a list item: the text form's commas separate items) |
//! | `protocol:tcp`, `protocol:udp` | every TCP stream, or every UDP-over-TCP association |
//!
//! Names are compared without regard to ASCII case and without a trailing dot, on
//! both sides. A `regexp:` pattern (the `regex` crate's syntax, close to Go's RE2)
//! is compiled once, case-insensitively, and runs in ASCII mode over the name's
//! bytes: `\d`, `\w`, `\s` and `\b` are their ASCII forms, which is all a name on
//! the wire (punycode) needs. Name rules (`domain:`, `full:`, `keyword:`,
//! `regexp:`, bare words) apply to names only, and address rules to addresses
//! only: [`RouteRules::blocks_name`] is asked about a name before it is resolved,
//! [`RouteRules::blocks_ip`] about an address target or each address a name
//! resolved to. An IPv4-mapped IPv6 address (`::ffff:1.2.3.4`) meets the IPv4
//! ranges too.
//!
//! Left out, each with its line: routes whose action is not `block` (`direct` is
//! what happens anyway; `dns` and `proxy` need a resolver per rule and an upstream
//! this server does not have), a `block` route without items, `geosite:`,
//! `geoip:`, `ext:`, `ext-domain:`, `ext-ip:` and `dotless:` (no rule data files
//! here), a `protocol:` other than `tcp` and `udp` (sniffed protocols such as
//! `bittorrent` are not detected), a pattern that does not compile, a port or
//! address that does not parse, and an empty value (`domain:`, `keyword:`), which
//! would otherwise match everything.
//!
//! # How this differs from other backends
//!
//! - MoeclubM/NodeRS-AnyTLS (`src/server/rules.rs`) compiles every block item but
//!   `protocol:` as a regular expression, `regexp:` prefix or not, and matches it
//!   against both the host and `host:port` text, so a bare `example.com` there is
//!   a regex (its dot matches any character) and `domain:`/`full:`/`keyword:` are
//!   regexes that never match; one bad pattern fails the whole config. It also
//!   honours `dns` routes. Here a bare word is a substring, prefixed items mean
//!   what Xray means by them, ports are `port:` items, and a bad pattern is left
//!   out alone.
//! - wyx2685/V2bX (`api/panel/node.go`, `limiter/rule.go`) also turns every
//!   non-`protocol:` item into a Go regular expression (stripping `regexp:`),
//!   matched against the target's address text, a name or an IP literal (so
//!   `regexp:^1\.2\.3\.4$` blocks that address there; here write `1.2.3.4`); it
//!   panics on a bad pattern. Its `protocol:` is compared with the network
//!   (`tcp`/`udp`) under the sing-box core but with the sniffed protocol
//!   (`bittorrent`, `http`, `tls`) under the Xray core.
//! - Xray's own routing syntax, the reference for the prefixes, keeps domains,
//!   IPs, ports and networks in separate fields of one rule, all of which must
//!   match; Xboard's single `match` list has no such fields, so here every item is
//!   its own condition.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use regex::bytes::{Regex as BytesRegex, RegexBuilder as BytesRegexBuilder};
use regex::Regex;
use rustc_hash::FxHashSet;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use thiserror::Error;

/// How a target is reached: a TCP stream, or a UDP-over-TCP association.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// A TCP stream (a SOCKS CONNECT-like stream of the session).
    Tcp,
    /// A UDP-over-TCP association.
    Udp,
}

/// One entry of the node config's `routes`, read leniently: `null` anywhere
/// becomes the default, and unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Route {
    /// The panel's id of the route, named in the lines about what is ignored; a
    /// number or a numeric string, 0 when absent or `null`.
    #[serde(default, deserialize_with = "lenient_id")]
    pub id: i64,
    /// What the route applies to.
    #[serde(rename = "match", default, deserialize_with = "default_on_null")]
    pub r#match: RouteMatch,
    /// `block`, `direct`, `dns` or `proxy`; empty when absent or `null`.
    #[serde(default, deserialize_with = "default_on_null")]
    pub action: String,
    /// The action's parameter (a DNS server for `dns`); a number or other
    /// non-string value is kept as its JSON text.
    #[serde(default, deserialize_with = "lenient_text")]
    pub action_value: Option<String>,
}

/// A route's `match`: the items it applies to, in one of the shapes panels send.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RouteMatch {
    /// One string of comma-separated items.
    Text(String),
    /// A list of items (Xboard's usual shape).
    List(Vec<String>),
    /// An object whose values are the items: a PHP array with holes, which
    /// `json_encode` writes as `{"0": "a", "2": "b"}`.
    Map(BTreeMap<String, String>),
}

impl Default for RouteMatch {
    /// No items (what `null` becomes).
    fn default() -> RouteMatch {
        RouteMatch::List(Vec::new())
    }
}

impl RouteMatch {
    /// The items, each trimmed, empty ones dropped. Only the text form is split at
    /// commas: an item of a list may hold a pattern such as `a{1,3}`.
    pub fn items(&self) -> Vec<&str> {
        let items: Vec<&str> = match self {
            RouteMatch::Text(text) => text.split(',').collect(),
            RouteMatch::List(items) => items.iter().map(String::as_str).collect(),
            RouteMatch::Map(items) => items.values().map(String::as_str).collect(),
        };
        items
            .into_iter()
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .collect()
    }
}

/// `null` as the type's default.
fn default_on_null<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A number, a numeric string, or `null` (0).
fn lenient_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Number(i64),
        Text(String),
    }
    match Option::<Id>::deserialize(deserializer)? {
        None => Ok(0),
        Some(Id::Number(id)) => Ok(id),
        Some(Id::Text(text)) => text
            .trim()
            .parse()
            .map_err(|_| D::Error::custom(format!("route id {text:?} is not a number"))),
    }
}

/// A string as itself, `null` as `None`, anything else as its JSON text.
fn lenient_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(
        match Option::<serde_json::Value>::deserialize(deserializer)? {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(text)) => Some(text),
            Some(other) => Some(other.to_string()),
        },
    )
}

/// Why part of a route is left out (the text after `route N: `).
#[derive(Debug, Error)]
enum Ignored {
    #[error("action {0} is not supported")]
    Action(String),
    #[error("no action")]
    NoAction,
    #[error("block has no match items")]
    NoItems,
    #[error("{item} is not supported ({why})")]
    Unsupported { item: String, why: &'static str },
    #[error("{item} is not a valid regular expression ({reason})")]
    BadRegex { item: String, reason: String },
    #[error("{0} is empty")]
    Empty(String),
    #[error("{0} is not a port or port range")]
    BadPort(String),
    #[error("{0} is not an IP address or CIDR")]
    BadIp(String),
}

/// One `block` item, parsed.
enum Item {
    Suffix(String),
    Full(String),
    Keyword(String),
    Regex(String, BytesRegex),
    Net(IpNet),
    Ports(Vec<(u16, u16)>),
    Protocol(Protocol),
}

/// Why items naming rule data files (geosite, geoip, ext) are left out.
const NO_RULE_DATA: &str = "no geosite/geoip rule data here";

/// One trimmed, non-empty item of a `block` route.
fn parse_item(item: &str) -> Result<Item, Ignored> {
    let Some((prefix, value)) = item.split_once(':') else {
        return Ok(bare(item));
    };
    let value = value.trim();
    let unsupported = |why| Ignored::Unsupported {
        item: item.to_owned(),
        why,
    };
    match prefix.trim().to_ascii_lowercase().as_str() {
        "domain" => {
            let domain = normalize_rule_name(value.trim_start_matches('.'));
            nonempty(item, domain).map(Item::Suffix)
        }
        "full" => nonempty(item, normalize_rule_name(value)).map(Item::Full),
        "keyword" => nonempty(item, value.to_ascii_lowercase()).map(Item::Keyword),
        "regexp" => {
            let pattern = nonempty(item, value.to_owned())?;
            match compile_pattern(&pattern) {
                Ok(regex) => Ok(Item::Regex(pattern, regex)),
                Err(reason) => Err(Ignored::BadRegex {
                    item: item.to_owned(),
                    reason,
                }),
            }
        }
        "ip" => parse_net(value).ok_or_else(|| Ignored::BadIp(item.to_owned())),
        "port" => parse_ports(value)
            .map(Item::Ports)
            .ok_or_else(|| Ignored::BadPort(item.to_owned())),
        "protocol" => match value.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Item::Protocol(Protocol::Tcp)),
            "udp" => Ok(Item::Protocol(Protocol::Udp)),
            _ => Err(unsupported(
                "only protocol:tcp and protocol:udp; sniffed protocols are not detected",
            )),
        },
        "geosite" | "geoip" | "ext" | "ext-domain" | "ext-ip" => Err(unsupported(NO_RULE_DATA)),
        "dotless" => Err(unsupported("use regexp:")),
        // Not a prefix: an IPv6 address, or a word with a colon in it.
        _ => Ok(bare(item)),
    }
}

/// An item without a prefix: an address or range, else a substring of the name
/// (as in Xray's domain lists).
fn bare(item: &str) -> Item {
    parse_net(item).unwrap_or_else(|| Item::Keyword(item.to_ascii_lowercase()))
}

fn nonempty(item: &str, value: String) -> Result<String, Ignored> {
    if value.is_empty() {
        Err(Ignored::Empty(item.to_owned()))
    } else {
        Ok(value)
    }
}

/// An address (as its one-address range) or a CIDR range, truncated to its network.
fn parse_net(text: &str) -> Option<Item> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(Item::Net(IpNet::from(ip)));
    }
    text.parse::<IpNet>().ok().map(|net| Item::Net(net.trunc()))
}

/// `N`, `N-M`, or several of them separated by commas.
fn parse_ports(text: &str) -> Option<Vec<(u16, u16)>> {
    let mut ranges = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let (low, high) = match part.split_once('-') {
            Some((low, high)) => (low.trim().parse().ok()?, high.trim().parse().ok()?),
            None => {
                let port = part.parse().ok()?;
                (port, port)
            }
        };
        if low > high {
            return None;
        }
        ranges.push((low, high));
    }
    Some(ranges)
}

/// A `regexp:` pattern, compiled as the module doc says; the error is the last
/// line of the regex crate's message (the rest repeats the pattern).
fn compile_pattern(pattern: &str) -> Result<BytesRegex, String> {
    BytesRegexBuilder::new(pattern)
        .unicode(false)
        .case_insensitive(true)
        .build()
        .map_err(|error| {
            let text = error.to_string();
            let last = text.lines().rev().find(|line| !line.trim().is_empty());
            let last = last.unwrap_or("invalid").trim();
            last.strip_prefix("error: ").unwrap_or(last).to_owned()
        })
}

/// A rule's name: trimmed, without trailing dots, ASCII-lowercased.
fn normalize_rule_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// A target's name as the rules compare it: without trailing dots and
/// ASCII-lowercased, borrowed when it already is, else lowered in `buf`, and only
/// a name too long for any DNS name allocates.
fn normalize_target<'a>(host: &'a str, buf: &'a mut [u8; 256]) -> Cow<'a, str> {
    let host = host.trim_end_matches('.');
    if !host.bytes().any(|byte| byte.is_ascii_uppercase()) {
        return Cow::Borrowed(host);
    }
    if let Some(buf) = buf.get_mut(..host.len()) {
        buf.copy_from_slice(host.as_bytes());
        if let Ok(lowered) = std::str::from_utf8_mut(buf) {
            lowered.make_ascii_lowercase();
            return Cow::Borrowed(lowered);
        }
    }
    Cow::Owned(host.to_ascii_lowercase())
}

/// Keywords, asked in one pass: one literal alternation (the regex crate answers
/// it with Aho-Corasick) when there are several, else (or should it not build) a
/// scan.
#[derive(Clone, Default)]
struct Keywords {
    list: Vec<Box<str>>,
    combined: Option<Regex>,
}

impl Keywords {
    /// The keywords, combined into one alternation when `combine` says so.
    fn new(list: Vec<Box<str>>, combine: bool) -> Keywords {
        let combined = if combine && !list.is_empty() {
            let pattern = list
                .iter()
                .map(|keyword| regex::escape(keyword))
                .collect::<Vec<_>>()
                .join("|");
            Regex::new(&pattern).ok()
        } else {
            None
        };
        Keywords { list, combined }
    }

    fn matches(&self, name: &str) -> bool {
        match &self.combined {
            Some(combined) => combined.is_match(name),
            None => self.list.iter().any(|keyword| name.contains(&**keyword)),
        }
    }
}

/// Ports as one bit each.
#[derive(Clone)]
struct PortSet(Box<[u64; 1024]>);

impl PortSet {
    fn new() -> PortSet {
        PortSet(Box::new([0; 1024]))
    }

    fn insert(&mut self, low: u16, high: u16) {
        for port in low..=high {
            self.0[usize::from(port >> 6)] |= 1 << (port & 63);
        }
    }

    fn contains(&self, port: u16) -> bool {
        self.0[usize::from(port >> 6)] & (1 << (port & 63)) != 0
    }
}

/// Address ranges of one family, by prefix length: a lookup masks the address
/// once per distinct length present, however many ranges there are.
#[derive(Clone, Default)]
struct Ranges<T> {
    by_len: Vec<(u8, FxHashSet<T>)>,
}

impl<T: Copy + Eq + std::hash::Hash> Ranges<T> {
    fn insert(&mut self, len: u8, network: T) {
        match self.by_len.iter_mut().find(|(l, _)| *l == len) {
            Some((_, set)) => {
                set.insert(network);
            }
            None => {
                let mut set = FxHashSet::default();
                set.insert(network);
                self.by_len.push((len, set));
                self.by_len.sort_by_key(|(l, _)| *l);
            }
        }
    }

    fn contains(&self, mask: impl Fn(u8) -> T) -> bool {
        self.by_len
            .iter()
            .any(|(len, set)| set.contains(&mask(*len)))
    }

    fn len(&self) -> usize {
        self.by_len.iter().map(|(_, set)| set.len()).sum()
    }
}

fn mask_v4(address: u32, len: u8) -> u32 {
    match len {
        0 => 0,
        len => address & (u32::MAX << (32 - u32::from(len.min(32)))),
    }
}

fn mask_v6(address: u128, len: u8) -> u128 {
    match len {
        0 => 0,
        len => address & (u128::MAX << (128 - u32::from(len.min(128)))),
    }
}

/// The `block` routes of a node config, compiled for cheap questions about
/// targets. [`Default`] is no rules.
#[derive(Clone, Default)]
pub struct RouteRules {
    /// `domain:` names: a name is blocked when it or a suffix of it at a label
    /// boundary is here.
    suffixes: FxHashSet<Box<str>>,
    /// `full:` names.
    full: FxHashSet<Box<str>>,
    keywords: Keywords,
    regexes: Vec<BytesRegex>,
    v4: Ranges<u32>,
    v6: Ranges<u128>,
    /// The `port:` ranges as given (distinct), for counting.
    port_ranges: Vec<(u16, u16)>,
    ports: Option<PortSet>,
    tcp: bool,
    udp: bool,
}

impl RouteRules {
    /// Compiles the `block` routes of `routes`; the second element has one line
    /// per route or item left out and why (see the module doc), for the caller
    /// to log once. Never fails: what is left out does not stop the rest.
    pub fn from_routes(routes: &[Route]) -> (RouteRules, Vec<String>) {
        let mut rules = RouteRules::default();
        let mut ignored = Vec::new();
        let mut keywords: Vec<Box<str>> = Vec::new();
        let mut seen_keywords = FxHashSet::<Box<str>>::default();
        let mut seen_patterns = FxHashSet::<String>::default();
        for route in routes {
            let mut report =
                |why: Ignored| ignored.push(format!("route {}: {why}; ignored", route.id));
            let action = route.action.trim();
            if action.is_empty() {
                report(Ignored::NoAction);
                continue;
            }
            if !action.eq_ignore_ascii_case("block") {
                report(Ignored::Action(action.to_owned()));
                continue;
            }
            let items = route.r#match.items();
            if items.is_empty() {
                report(Ignored::NoItems);
                continue;
            }
            for item in items {
                match parse_item(item) {
                    Err(why) => report(why),
                    Ok(Item::Suffix(domain)) => {
                        rules.suffixes.insert(domain.into());
                    }
                    Ok(Item::Full(domain)) => {
                        rules.full.insert(domain.into());
                    }
                    Ok(Item::Keyword(keyword)) => {
                        let keyword: Box<str> = keyword.into();
                        if seen_keywords.insert(keyword.clone()) {
                            keywords.push(keyword);
                        }
                    }
                    Ok(Item::Regex(pattern, regex)) => {
                        if seen_patterns.insert(pattern) {
                            rules.regexes.push(regex);
                        }
                    }
                    Ok(Item::Net(IpNet::V4(net))) => {
                        rules.v4.insert(net.prefix_len(), u32::from(net.network()));
                    }
                    Ok(Item::Net(IpNet::V6(net))) => {
                        rules.v6.insert(net.prefix_len(), u128::from(net.network()));
                    }
                    Ok(Item::Ports(ranges)) => {
                        let ports = rules.ports.get_or_insert_with(PortSet::new);
                        for (low, high) in ranges {
                            ports.insert(low, high);
                            if !rules.port_ranges.contains(&(low, high)) {
                                rules.port_ranges.push((low, high));
                            }
                        }
                    }
                    Ok(Item::Protocol(Protocol::Tcp)) => rules.tcp = true,
                    Ok(Item::Protocol(Protocol::Udp)) => rules.udp = true,
                }
            }
        }
        let combine = keywords.len() > 1;
        rules.keywords = Keywords::new(keywords, combine);
        (rules, ignored)
    }

    /// Whether a target given as a name (before it is resolved) on `port` over
    /// `protocol` is blocked: by a name rule, a `port:` or a `protocol:` item.
    /// Address ranges do not apply to names; ask [`RouteRules::blocks_ip`] about
    /// the addresses the name resolves to.
    pub fn blocks_name(&self, host: &str, port: u16, protocol: Protocol) -> bool {
        if self.blocks_port_or_protocol(port, protocol) {
            return true;
        }
        if self.suffixes.is_empty()
            && self.full.is_empty()
            && self.keywords.list.is_empty()
            && self.regexes.is_empty()
        {
            return false;
        }
        let mut buf = [0; 256];
        let name = normalize_target(host, &mut buf);
        let name: &str = &name;
        self.full.contains(name)
            || self.under_suffix(name)
            || self.keywords.matches(name)
            || self
                .regexes
                .iter()
                .any(|regex| regex.is_match(name.as_bytes()))
    }

    /// Whether a target address (given as one, or one a name resolved to) on
    /// `port` over `protocol` is blocked: by an address range, a `port:` or a
    /// `protocol:` item.
    pub fn blocks_ip(&self, ip: IpAddr, port: u16, protocol: Protocol) -> bool {
        if self.blocks_port_or_protocol(port, protocol) {
            return true;
        }
        match ip {
            IpAddr::V4(v4) => self.blocks_v4(u32::from(v4)),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                self.v6.contains(|len| mask_v6(bits, len))
                    || v6
                        .to_ipv4_mapped()
                        .is_some_and(|v4| self.blocks_v4(u32::from(v4)))
            }
        }
    }

    /// Whether no rules are in force.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many distinct items are in force (a name, pattern, range or port range
    /// given twice counts once; so does each of `protocol:tcp` and `protocol:udp`).
    pub fn len(&self) -> usize {
        self.suffixes.len()
            + self.full.len()
            + self.keywords.list.len()
            + self.regexes.len()
            + self.v4.len()
            + self.v6.len()
            + self.port_ranges.len()
            + usize::from(self.tcp)
            + usize::from(self.udp)
    }

    fn blocks_port_or_protocol(&self, port: u16, protocol: Protocol) -> bool {
        match protocol {
            Protocol::Tcp if self.tcp => return true,
            Protocol::Udp if self.udp => return true,
            _ => {}
        }
        self.ports
            .as_ref()
            .is_some_and(|ports| ports.contains(port))
    }

    fn blocks_v4(&self, bits: u32) -> bool {
        self.v4.contains(|len| mask_v4(bits, len))
    }

    /// Whether `name` or a parent of it is a `domain:` rule, asked label by label.
    fn under_suffix(&self, name: &str) -> bool {
        if self.suffixes.is_empty() {
            return false;
        }
        let mut rest = name;
        loop {
            if self.suffixes.contains(rest) {
                return true;
            }
            match rest.find('.') {
                Some(dot) => rest = &rest[dot + 1..],
                None => return false,
            }
        }
    }
}

impl fmt::Debug for RouteRules {
    /// How many rules of each kind are in force (the sets can be large).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteRules")
            .field("domains", &self.suffixes.len())
            .field("full", &self.full.len())
            .field("keywords", &self.keywords.list.len())
            .field("regexps", &self.regexes.len())
            .field("ip_ranges", &(self.v4.len() + self.v6.len()))
            .field("port_ranges", &self.port_ranges)
            .field("tcp", &self.tcp)
            .field("udp", &self.udp)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use Protocol::{Tcp, Udp};

    fn block(id: i64, items: &[&str]) -> Route {
        Route {
            id,
            r#match: RouteMatch::List(items.iter().map(|item| item.to_string()).collect()),
            action: "block".to_owned(),
            action_value: None,
        }
    }

    /// The rules of one block route, asserting nothing was left out.
    fn compile(items: &[&str]) -> RouteRules {
        let (rules, ignored) = RouteRules::from_routes(&[block(1, items)]);
        assert!(ignored.is_empty(), "{ignored:?}");
        rules
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn domain_blocks_the_name_and_its_subdomains_only() {
        let rules = compile(&["domain:example.com"]);
        for name in ["example.com", "www.example.com", "a.b.example.com"] {
            assert!(rules.blocks_name(name, 443, Tcp), "{name}");
        }
        for name in [
            "badexample.com",
            "example.com.evil.net",
            "example.co",
            "com",
            "example.org",
            "",
        ] {
            assert!(!rules.blocks_name(name, 443, Tcp), "{name}");
        }
        assert_eq!(rules.len(), 1);
    }

    #[test]
    fn names_compare_without_case_or_trailing_dot_on_either_side() {
        let rules = compile(&["domain:Example.COM.", "full:Exact.Example.ORG"]);
        for name in [
            "EXAMPLE.com",
            "WWW.Example.Com.",
            "example.com.",
            "exact.example.org",
            "EXACT.EXAMPLE.ORG.",
        ] {
            assert!(rules.blocks_name(name, 80, Tcp), "{name}");
        }
        assert!(!rules.blocks_name("www.exact.example.org", 80, Tcp));
    }

    #[test]
    fn a_leading_dot_in_a_domain_rule_is_dropped() {
        let rules = compile(&["domain:.example.com"]);
        assert!(rules.blocks_name("example.com", 80, Tcp));
        assert!(rules.blocks_name("a.example.com", 80, Tcp));
    }

    #[test]
    fn full_blocks_exactly_the_name() {
        let rules = compile(&["full:example.com"]);
        assert!(rules.blocks_name("example.com", 80, Tcp));
        assert!(rules.blocks_name("Example.Com.", 80, Udp));
        assert!(!rules.blocks_name("www.example.com", 80, Tcp));
        assert!(!rules.blocks_name("example.com.cn", 80, Tcp));
        assert!(!rules.blocks_name("xexample.com", 80, Tcp));
    }

    #[test]
    fn keyword_and_bare_words_are_substrings() {
        for items in [&["keyword:ads"][..], &["ads"][..], &["ADS"][..]] {
            let rules = compile(items);
            assert!(rules.blocks_name("ads.example.com", 80, Tcp), "{items:?}");
            assert!(rules.blocks_name("myADServer.net", 80, Tcp), "{items:?}");
            assert!(!rules.blocks_name("example.com", 80, Tcp), "{items:?}");
            assert!(!rules.blocks_name("ad.example.com", 80, Tcp), "{items:?}");
        }
    }

    #[test]
    fn many_keywords_are_matched_in_one_pass_or_a_scan_alike() {
        let list: Vec<Box<str>> = ["tracker", "ads", "telemetry"]
            .iter()
            .map(|keyword| Box::from(*keyword))
            .collect();
        let combined = Keywords::new(list.clone(), true);
        assert!(combined.combined.is_some());
        let scanned = Keywords::new(list, false);
        assert!(scanned.combined.is_none());
        for keywords in [&combined, &scanned] {
            assert!(keywords.matches("a.tracker.net"));
            assert!(keywords.matches("telemetry"));
            assert!(keywords.matches("xadsx"));
            assert!(!keywords.matches("example.com"));
            assert!(!keywords.matches("track.er"));
        }
        // Escaped: a keyword's dot is a dot.
        let dotted = Keywords::new(vec!["a.b".into(), "c+".into()], true);
        assert!(dotted.matches("xa.by"));
        assert!(!dotted.matches("axb"));
        assert!(dotted.matches("cc+"));
        assert!(!dotted.matches("cc"));
    }

    #[test]
    fn a_word_with_a_colon_that_is_no_prefix_is_a_keyword() {
        let rules = compile(&["foo:bar"]);
        assert!(rules.blocks_name("xfoo:barx", 80, Tcp));
        assert!(!rules.blocks_name("bar", 80, Tcp));
    }

    #[test]
    fn regexp_matches_the_name_case_insensitively() {
        let rules = compile(&[r"regexp:^ads\.", r"regexp:(^|\.)Tracker\d+\.net$"]);
        assert!(rules.blocks_name("ads.example.com", 80, Tcp));
        assert!(rules.blocks_name("ADS.example.com", 80, Tcp));
        assert!(!rules.blocks_name("myads.example.com", 80, Tcp));
        assert!(rules.blocks_name("tracker12.net", 80, Tcp));
        assert!(rules.blocks_name("a.TRACKER7.net.", 80, Tcp));
        assert!(!rules.blocks_name("tracker.net", 80, Tcp));
        assert!(!rules.blocks_name("xtracker1.net", 80, Tcp));
        assert_eq!(rules.len(), 2);
    }

    #[test]
    fn regexp_perl_classes_and_word_boundaries_are_ascii() {
        let rules = compile(&[r"regexp:\bad\w*\d\b", r"regexp:^\s*$"]);
        assert!(!rules.blocks_name("x.ad-1.com", 80, Tcp));
        assert!(rules.blocks_name("x.adserver9.com", 80, Tcp));
        assert!(!rules.blocks_name("x.badserver9.com", 80, Tcp));
        assert!(
            rules.blocks_name("", 80, Tcp),
            "^\\s*$ matches the empty name"
        );
    }

    #[test]
    fn regexp_may_hold_non_ascii_literals() {
        let rules = compile(&["regexp:^bücher\\."]);
        assert!(rules.blocks_name("bücher.example", 80, Tcp));
        assert!(!rules.blocks_name("bucher.example", 80, Tcp));
    }

    #[test]
    fn a_bad_regexp_is_reported_and_the_rest_still_applies() {
        let (rules, ignored) = RouteRules::from_routes(&[block(
            7,
            &["regexp:^(ads", "domain:example.com", r"regexp:^ok\."],
        )]);
        assert_eq!(ignored.len(), 1, "{ignored:?}");
        assert!(
            ignored[0].starts_with("route 7: regexp:^(ads is not a valid regular expression ("),
            "{}",
            ignored[0]
        );
        assert!(ignored[0].ends_with("); ignored"), "{}", ignored[0]);
        assert!(!ignored[0].contains('\n'), "one line: {}", ignored[0]);
        assert!(rules.blocks_name("www.example.com", 80, Tcp));
        assert!(rules.blocks_name("ok.net", 80, Tcp));
        assert!(!rules.blocks_name("ads", 80, Tcp));
        assert_eq!(rules.len(), 2);
    }

    #[test]
    fn bare_and_prefixed_ipv4_ranges_block_addresses() {
        let rules = compile(&["1.2.3.4", "10.0.0.0/8", "ip:192.168.1.0/24", "ip:8.8.8.8"]);
        for blocked in [
            "1.2.3.4",
            "10.0.0.1",
            "10.255.255.255",
            "192.168.1.77",
            "8.8.8.8",
        ] {
            assert!(rules.blocks_ip(ip(blocked), 443, Tcp), "{blocked}");
        }
        for allowed in [
            "1.2.3.5",
            "11.0.0.1",
            "192.168.2.1",
            "8.8.4.4",
            "9.255.255.255",
        ] {
            assert!(!rules.blocks_ip(ip(allowed), 443, Tcp), "{allowed}");
        }
        assert_eq!(rules.len(), 4);
    }

    #[test]
    fn ipv6_ranges_block_addresses_and_ipv4_mapped_ones_meet_ipv4_ranges() {
        let rules = compile(&["2001:db8::/32", "ip:::1", "10.0.0.0/8"]);
        assert!(rules.blocks_ip(ip("2001:db8::1"), 80, Tcp));
        assert!(rules.blocks_ip(ip("2001:db8:ffff::1"), 80, Udp));
        assert!(!rules.blocks_ip(ip("2001:db9::1"), 80, Tcp));
        assert!(rules.blocks_ip(ip("::1"), 80, Tcp));
        assert!(!rules.blocks_ip(ip("::2"), 80, Tcp));
        assert!(rules.blocks_ip(ip("::ffff:10.1.2.3"), 80, Tcp));
        assert!(!rules.blocks_ip(ip("::ffff:11.1.2.3"), 80, Tcp));
        let mapped = RouteRules::from_routes(&[block(1, &["::ffff:0:0/96"])]).0;
        assert!(mapped.blocks_ip(ip("::ffff:1.2.3.4"), 80, Tcp));
        assert!(!mapped.blocks_ip(ip("1.2.3.4"), 80, Tcp));
    }

    #[test]
    fn a_range_given_with_host_bits_is_its_network() {
        let rules = compile(&["10.1.2.3/16"]);
        assert!(rules.blocks_ip(ip("10.1.200.1"), 80, Tcp));
        assert!(!rules.blocks_ip(ip("10.2.0.1"), 80, Tcp));
    }

    #[test]
    fn the_whole_address_space_can_be_blocked() {
        let rules = compile(&["0.0.0.0/0"]);
        assert!(rules.blocks_ip(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)), 80, Tcp));
        assert!(!rules.blocks_ip(
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            80,
            Tcp
        ));
        let v6 = compile(&["::/0"]);
        assert!(v6.blocks_ip(ip("2001:db8::1"), 80, Tcp));
    }

    #[test]
    fn address_rules_do_not_apply_to_names_nor_name_rules_to_addresses() {
        let rules = compile(&["1.2.3.4", "domain:example.com", "keyword:1.2"]);
        assert!(
            rules.blocks_name("1.2.3.4.nip.io", 80, Tcp),
            "keyword:1.2 is in the name"
        );
        assert!(!rules.blocks_name("one.two", 80, Tcp));
        assert!(
            !rules.blocks_ip(ip("1.2.9.9"), 80, Tcp),
            "keyword:1.2 is a name rule"
        );
        assert!(rules.blocks_ip(ip("1.2.3.4"), 80, Tcp));
        let ip_only = RouteRules::from_routes(&[block(1, &["1.2.3.4"])]).0;
        assert!(!ip_only.blocks_name("1.2.3.4", 80, Tcp));
    }

    #[test]
    fn ports_and_port_ranges_block_names_and_addresses() {
        let rules = compile(&["port:25", "port:6881-6889", "port:465, 587"]);
        for port in [25, 6881, 6885, 6889, 465, 587] {
            assert!(rules.blocks_name("example.com", port, Tcp), "{port}");
            assert!(rules.blocks_ip(ip("1.1.1.1"), port, Udp), "{port}");
        }
        for port in [24, 26, 6880, 6890, 443, 0, 65535] {
            assert!(!rules.blocks_name("example.com", port, Tcp), "{port}");
            assert!(!rules.blocks_ip(ip("1.1.1.1"), port, Udp), "{port}");
        }
        assert_eq!(rules.len(), 4);
        let edges = compile(&["port:0", "port:65535"]);
        assert!(edges.blocks_ip(ip("1.1.1.1"), 0, Tcp));
        assert!(edges.blocks_ip(ip("1.1.1.1"), 65535, Tcp));
        assert!(!edges.blocks_ip(ip("1.1.1.1"), 1, Tcp));
        assert!(!edges.blocks_ip(ip("1.1.1.1"), 65534, Tcp));
    }

    #[test]
    fn bad_ports_are_reported() {
        let (rules, ignored) = RouteRules::from_routes(&[block(
            4,
            &["port:70000", "port:9-1", "port:x", "port:", "port:1-2-3"],
        )]);
        assert!(rules.is_empty());
        assert_eq!(
            ignored,
            [
                "route 4: port:70000 is not a port or port range; ignored",
                "route 4: port:9-1 is not a port or port range; ignored",
                "route 4: port:x is not a port or port range; ignored",
                "route 4: port: is not a port or port range; ignored",
                "route 4: port:1-2-3 is not a port or port range; ignored",
            ]
        );
    }

    #[test]
    fn protocol_blocks_every_stream_or_every_association() {
        let tcp = compile(&["protocol:tcp"]);
        assert!(tcp.blocks_name("example.com", 443, Tcp));
        assert!(tcp.blocks_ip(ip("1.1.1.1"), 443, Tcp));
        assert!(!tcp.blocks_name("example.com", 443, Udp));
        assert!(!tcp.blocks_ip(ip("1.1.1.1"), 443, Udp));
        let udp = compile(&["Protocol:UDP"]);
        assert!(udp.blocks_ip(ip("1.1.1.1"), 53, Udp));
        assert!(udp.blocks_name("dns.google", 53, Udp));
        assert!(!udp.blocks_ip(ip("1.1.1.1"), 53, Tcp));
        assert!(!udp.blocks_name("dns.google", 53, Tcp));
        assert_eq!(udp.len(), 1);
        let both = compile(&["protocol:tcp", "protocol:udp", "protocol:tcp"]);
        assert_eq!(both.len(), 2);
    }

    #[test]
    fn prefixes_are_read_without_regard_to_case() {
        let rules = compile(&[
            "DOMAIN:a.com",
            "Full:b.com",
            "KeyWord:zzz",
            "RegExp:^r\\.",
            "IP:1.1.1.1",
            "PORT:9",
        ]);
        assert!(rules.blocks_name("x.a.com", 1, Tcp));
        assert!(rules.blocks_name("b.com", 1, Tcp));
        assert!(rules.blocks_name("azzzb", 1, Tcp));
        assert!(rules.blocks_name("r.net", 1, Tcp));
        assert!(rules.blocks_ip(ip("1.1.1.1"), 1, Tcp));
        assert!(rules.blocks_ip(ip("2.2.2.2"), 9, Tcp));
        assert_eq!(rules.len(), 6);
    }

    #[test]
    fn unsupported_and_empty_items_are_reported_and_the_rest_applies() {
        let (rules, ignored) = RouteRules::from_routes(&[block(
            3,
            &[
                "geosite:cn",
                "geoip:cn",
                "ext:geo.dat:ads",
                "dotless:",
                "protocol:bittorrent",
                "ip:banana",
                "domain:",
                "keyword:",
                "regexp:",
                "full:.",
                "domain:ok.com",
            ],
        )]);
        assert_eq!(
            ignored,
            [
                "route 3: geosite:cn is not supported (no geosite/geoip rule data here); ignored",
                "route 3: geoip:cn is not supported (no geosite/geoip rule data here); ignored",
                "route 3: ext:geo.dat:ads is not supported (no geosite/geoip rule data here); ignored",
                "route 3: dotless: is not supported (use regexp:); ignored",
                "route 3: protocol:bittorrent is not supported (only protocol:tcp and protocol:udp; sniffed protocols are not detected); ignored",
                "route 3: ip:banana is not an IP address or CIDR; ignored",
                "route 3: domain: is empty; ignored",
                "route 3: keyword: is empty; ignored",
                "route 3: regexp: is empty; ignored",
                "route 3: full:. is empty; ignored",
            ]
        );
        assert_eq!(rules.len(), 1);
        assert!(rules.blocks_name("ok.com", 80, Tcp));
        assert!(
            !rules.blocks_name("cn", 80, Tcp),
            "geosite:cn is no keyword"
        );
        assert!(!rules.blocks_name("example.cn", 80, Tcp));
    }

    #[test]
    fn routes_whose_action_is_not_block_are_reported() {
        let mut dns = block(3, &["domain:example.com"]);
        dns.action = "dns".to_owned();
        dns.action_value = Some("1.1.1.1".to_owned());
        let mut direct = block(4, &["domain:example.com"]);
        direct.action = "direct".to_owned();
        let mut proxy = block(5, &["domain:example.com"]);
        proxy.action = "proxy".to_owned();
        let mut none = block(6, &["domain:example.com"]);
        none.action = String::new();
        let mut upper = block(8, &["domain:blocked.com"]);
        upper.action = " BLOCK ".to_owned();
        let empty = block(9, &[]);
        let (rules, ignored) = RouteRules::from_routes(&[dns, direct, proxy, none, upper, empty]);
        assert_eq!(
            ignored,
            [
                "route 3: action dns is not supported; ignored",
                "route 4: action direct is not supported; ignored",
                "route 5: action proxy is not supported; ignored",
                "route 6: no action; ignored",
                "route 9: block has no match items; ignored",
            ]
        );
        assert!(!rules.blocks_name("example.com", 80, Tcp));
        assert!(rules.blocks_name("blocked.com", 80, Tcp), "BLOCK is block");
        assert_eq!(rules.len(), 1);
    }

    #[test]
    fn any_item_of_any_route_blocks() {
        let (rules, ignored) = RouteRules::from_routes(&[
            block(1, &["domain:a.com", "port:25"]),
            block(2, &["10.0.0.0/8", "keyword:xyz"]),
        ]);
        assert!(ignored.is_empty());
        assert!(rules.blocks_name("a.com", 443, Tcp));
        assert!(rules.blocks_name("b.com", 25, Tcp));
        assert!(rules.blocks_name("axyz.org", 443, Tcp));
        assert!(rules.blocks_ip(ip("10.0.0.9"), 443, Tcp));
        assert!(!rules.blocks_name("b.com", 443, Tcp));
        assert!(!rules.blocks_ip(ip("11.0.0.9"), 443, Tcp));
        assert_eq!(rules.len(), 4);
    }

    #[test]
    fn duplicates_count_once() {
        let (rules, _) = RouteRules::from_routes(&[
            block(
                1,
                &[
                    "domain:a.com",
                    "keyword:k",
                    "regexp:^r",
                    "1.1.1.1",
                    "port:1-2",
                ],
            ),
            block(
                2,
                &[
                    "domain:A.com.",
                    "keyword:K",
                    "regexp:^r",
                    "1.1.1.1/32",
                    "port:1-2",
                ],
            ),
        ]);
        assert_eq!(rules.len(), 5);
    }

    #[test]
    fn no_rules_block_nothing() {
        for rules in [RouteRules::default(), RouteRules::from_routes(&[]).0] {
            assert!(rules.is_empty());
            assert_eq!(rules.len(), 0);
            assert!(!rules.blocks_name("example.com", 443, Tcp));
            assert!(!rules.blocks_ip(ip("1.1.1.1"), 53, Udp));
        }
        assert!(!compile(&["domain:a.com"]).is_empty());
    }

    #[test]
    fn debug_shows_counts() {
        let rules = compile(&[
            "domain:a.com",
            "domain:b.com",
            "full:c.com",
            "keyword:k",
            "regexp:r",
            "1.1.1.1",
            "::1",
            "port:5-6",
            "protocol:udp",
        ]);
        assert_eq!(
            format!("{rules:?}"),
            "RouteRules { domains: 2, full: 1, keywords: 1, regexps: 1, ip_ranges: 2, port_ranges: [(5, 6)], tcp: false, udp: true }"
        );
    }

    #[test]
    fn names_longer_than_the_stack_buffer_are_still_compared() {
        let long = format!("{}.Example.COM", "A".repeat(300));
        let rules = compile(&["domain:example.com"]);
        assert!(rules.blocks_name(&long, 80, Tcp));
        assert!(!rules.blocks_name(&format!("{}.Example.ORG", "A".repeat(300)), 80, Tcp));
        let mut buf = [0; 256];
        assert!(matches!(
            normalize_target("a.b", &mut buf),
            Cow::Borrowed("a.b")
        ));
        assert!(matches!(
            normalize_target("A.b.", &mut buf),
            Cow::Borrowed("a.b")
        ));
        assert!(matches!(normalize_target(&long, &mut buf), Cow::Owned(_)));
    }

    #[test]
    fn ten_thousand_domain_rules_are_answered() {
        let items: Vec<String> = (0..10_000)
            .map(|i| format!("domain:site{i}.example"))
            .collect();
        let items: Vec<&str> = items.iter().map(String::as_str).collect();
        let rules = compile(&items);
        assert_eq!(rules.len(), 10_000);
        assert!(rules.blocks_name("site0.example", 443, Tcp));
        assert!(rules.blocks_name("www.site9999.example", 443, Tcp));
        assert!(rules.blocks_name("a.b.SITE4242.example.", 443, Tcp));
        assert!(!rules.blocks_name("site10000.example", 443, Tcp));
        assert!(!rules.blocks_name("xsite5.example", 443, Tcp));
        assert!(!rules.blocks_name("site5.example.net", 443, Tcp));
        assert!(!rules.blocks_name("example", 443, Tcp));
        // Many routes of one item each are the same rules.
        let routes: Vec<Route> = (0..10_000)
            .map(|i| block(i, &[&format!("full:host{i}.test")]))
            .collect();
        let (many, ignored) = RouteRules::from_routes(&routes);
        assert!(ignored.is_empty());
        assert_eq!(many.len(), 10_000);
        assert!(many.blocks_name("host7777.test", 443, Tcp));
        assert!(!many.blocks_name("www.host7777.test", 443, Tcp));
    }

    #[test]
    fn many_keywords_and_ranges_are_answered() {
        let items: Vec<String> = (0..2_000)
            .map(|i| format!("keyword:kw{i}x"))
            .chain((0..2_000).map(|i| format!("10.{}.{}.0/24", i / 256, i % 256)))
            .collect();
        let items: Vec<&str> = items.iter().map(String::as_str).collect();
        let rules = compile(&items);
        assert_eq!(rules.len(), 4_000);
        assert!(rules.keywords.combined.is_some());
        assert!(rules.blocks_name("a.kw1999x.net", 443, Tcp));
        assert!(!rules.blocks_name("a.kw2000x.net", 443, Tcp));
        assert!(rules.blocks_ip(ip("10.7.207.9"), 443, Tcp));
        assert!(!rules.blocks_ip(ip("10.7.208.9"), 443, Tcp));
    }

    #[test]
    fn match_may_be_a_string_an_array_an_object_or_null() {
        let text: Route = serde_json::from_str(
            r#"{"id": 1, "match": " domain:a.com , keyword:b,, ", "action": "block", "action_value": null}"#,
        )
        .unwrap();
        assert_eq!(text.r#match.items(), ["domain:a.com", "keyword:b"]);
        let list: Route = serde_json::from_str(
            r#"{"id": 2, "match": ["regexp:^a{1,3}$", " full:c.com ", ""], "action": "block", "action_value": ""}"#,
        )
        .unwrap();
        assert_eq!(list.r#match.items(), ["regexp:^a{1,3}$", "full:c.com"]);
        let object: Route = serde_json::from_str(
            r#"{"id": 3, "match": {"0": "domain:a.com", "2": "port:25"}, "action": "block"}"#,
        )
        .unwrap();
        assert_eq!(object.r#match.items(), ["domain:a.com", "port:25"]);
        let null: Route = serde_json::from_str(
            r#"{"id": 4, "match": null, "action": null, "action_value": null}"#,
        )
        .unwrap();
        assert_eq!(null.r#match, RouteMatch::default());
        assert!(null.r#match.items().is_empty());
        assert_eq!(null.action, "");
        assert_eq!(null.action_value, None);
        let absent: Route = serde_json::from_str(r#"{}"#).unwrap();
        assert_eq!(absent, Route::default());

        let (rules, ignored) = RouteRules::from_routes(&[text, list, object, null]);
        assert_eq!(ignored, ["route 4: no action; ignored"]);
        assert!(rules.blocks_name("x.a.com", 443, Tcp));
        assert!(rules.blocks_name("abc", 443, Tcp), "keyword:b");
        assert!(
            rules.blocks_name("aa", 443, Tcp),
            "the list item's comma is kept"
        );
        assert!(rules.blocks_name("c.com", 443, Tcp));
        assert!(rules.blocks_ip(ip("1.1.1.1"), 25, Tcp));
        assert_eq!(rules.len(), 5);
    }

    #[test]
    fn ids_and_action_values_are_read_leniently() {
        let route: Route = serde_json::from_str(
            r#"{"id": "12", "match": "protocol:udp", "action": "block", "action_value": 53, "remarks": "x", "created_at": 1}"#,
        )
        .unwrap();
        assert_eq!(route.id, 12);
        assert_eq!(route.action_value.as_deref(), Some("53"));
        let route: Route = serde_json::from_str(
            r#"{"id": null, "match": [], "action": "dns", "action_value": "8.8.8.8"}"#,
        )
        .unwrap();
        assert_eq!(route.id, 0);
        assert_eq!(route.action_value.as_deref(), Some("8.8.8.8"));
        assert!(serde_json::from_str::<Route>(r#"{"id": "twelve"}"#).is_err());
        assert!(serde_json::from_str::<Route>(r#"{"id": 1, "match": 5}"#).is_err());
        let routes: Vec<Route> = serde_json::from_str(
            r#"[{"id": 1, "match": ["domain:example.com", "regexp:^ads\\."], "action": "block", "action_value": null},
                {"id": 2, "match": "main", "action": "dns", "action_value": "1.1.1.1"}]"#,
        )
        .unwrap();
        let (rules, ignored) = RouteRules::from_routes(&routes);
        assert_eq!(ignored, ["route 2: action dns is not supported; ignored"]);
        assert!(rules.blocks_name("ads.net", 443, Tcp));
        assert!(rules.blocks_name("example.com", 443, Tcp));
    }

    #[test]
    fn rules_can_be_shared_across_threads() {
        fn shared<T: Send + Sync + Clone>() {}
        shared::<RouteRules>();
    }
}
