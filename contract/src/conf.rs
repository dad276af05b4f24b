//! `controller.conf`: a YAML document whose top-level key `db-bind-addresses` maps each
//! controller's agent id to the bare IP its Dqlite node binds to. The charm owns that key;
//! every other key in the file belongs to the agent and survives a rewrite byte for byte:
//! a rewrite replaces only the text of the `db-bind-addresses` block (or appends it), so
//! comments, tags and number forms the YAML library would normalise (`0644`, integers
//! beyond 64 bits) are never re-rendered.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::de::{
    self, Deserialize, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

/// The top-level key the charm owns.
pub const BIND_ADDRESSES_KEY: &str = "db-bind-addresses";

/// The largest `controller.conf` either side reads ([`crate::files::read_capped`]); a bigger
/// one is not a map of controllers.
pub const MAX_BYTES: u64 = 1024 * 1024;

/// Agent id (`"0"`, `"1"`, ...) to that controller's Dqlite bind IP, sorted by agent id.
pub type BindAddresses = BTreeMap<String, IpAddr>;

/// Why a `controller.conf` could not be read as one, or its map not replaced.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfError {
    #[error("controller.conf is empty")]
    Empty,
    #[error("controller.conf is not valid YAML: {0}")]
    Yaml(String),
    #[error("controller.conf is not a YAML mapping at the top level")]
    NotAMapping,
    #[error("controller.conf key {BIND_ADDRESSES_KEY} is not a mapping of agent id to address")]
    BindAddressesNotAMapping,
    #[error("controller.conf key {BIND_ADDRESSES_KEY} has a key that is not an agent id: {0}")]
    BadAgentId(String),
    #[error("controller.conf gives agent {agent_id} the address {value:?}, which is not an IP")]
    BadAddress { agent_id: String, value: String },
    #[error(
        "controller.conf's {BIND_ADDRESSES_KEY} cannot be replaced without touching other keys \
         ({0}); write it as a top-level block mapping"
    )]
    CannotReplace(String),
}

/// A parsed `controller.conf`: its exact text, and the validated bind addresses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ControllerConf {
    /// The file's text as read (or as rewritten by [`Self::set_bind_addresses`]): what a
    /// rewrite starts from, so that every other key keeps its exact bytes.
    text: String,
    /// The whole document's top-level entries in file order, to check that a rewrite changed
    /// only the map.
    document: Vec<(Node, Node)>,
    /// The validated view of `db-bind-addresses` (empty when the key is absent).
    bind_addresses: BindAddresses,
    /// Whether the file carried `db-bind-addresses` at all (absent differs from empty).
    has_bind_addresses: bool,
}

impl ControllerConf {
    /// Parses the file's text. Every malformed part is an error; nothing is guessed.
    pub fn parse(text: &str) -> Result<Self, ConfError> {
        if text.trim().is_empty() {
            return Err(ConfError::Empty);
        }
        let value: Node =
            serde_yaml_ng::from_str(text).map_err(|e| ConfError::Yaml(e.to_string()))?;
        let document = match value {
            Node::Map(entries) => entries,
            Node::Null => return Err(ConfError::Empty),
            _ => return Err(ConfError::NotAMapping),
        };
        let map = document
            .iter()
            .find(|(key, _)| key.as_str() == Some(BIND_ADDRESSES_KEY))
            .map(|(_, value)| value);
        let (bind_addresses, has_bind_addresses) = match map {
            None | Some(Node::Null) => (BindAddresses::new(), false),
            Some(Node::Map(entries)) => (parse_bind_addresses(entries)?, true),
            Some(_) => return Err(ConfError::BindAddressesNotAMapping),
        };
        Ok(Self {
            text: text.to_owned(),
            document,
            bind_addresses,
            has_bind_addresses,
        })
    }

    /// The map of agent id to bind IP (empty when the key is absent).
    pub fn bind_addresses(&self) -> &BindAddresses {
        &self.bind_addresses
    }

    /// Whether the file names `db-bind-addresses` at all.
    pub fn has_bind_addresses(&self) -> bool {
        self.has_bind_addresses
    }

    /// Replaces the bind addresses by replacing only the text of the top-level
    /// `db-bind-addresses` block (appending one when the key is absent). The result is
    /// parsed again and must hold exactly `addresses` and every other key unchanged;
    /// otherwise (the key inside a flow mapping, an anchor, a document end marker) nothing
    /// changes and the error says why.
    pub fn set_bind_addresses(&mut self, addresses: BindAddresses) -> Result<(), ConfError> {
        let block = render_block(&addresses);
        let text = match find_block(&self.text) {
            Some((start, end)) => {
                format!("{}{block}{}", &self.text[..start], &self.text[end..])
            }
            None if self.text.is_empty() || self.text.ends_with('\n') => {
                format!("{}{block}", self.text)
            }
            None => format!("{}\n{block}", self.text),
        };
        let next = Self::parse(&text)
            .map_err(|e| ConfError::CannotReplace(format!("the result does not parse: {e}")))?;
        if next.bind_addresses != addresses || !next.has_bind_addresses {
            return Err(ConfError::CannotReplace(
                "the result holds a different map".into(),
            ));
        }
        if without_map(&next.document) != without_map(&self.document) {
            return Err(ConfError::CannotReplace(
                "the result changes other keys".into(),
            ));
        }
        *self = next;
        Ok(())
    }

    /// The document's text, borrowed.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The document's text.
    pub fn render(&self) -> String {
        self.text.clone()
    }
}

/// The document without the charm's key, to compare everything else.
fn without_map(document: &[(Node, Node)]) -> Vec<&(Node, Node)> {
    document
        .iter()
        .filter(|(key, _)| key.as_str() != Some(BIND_ADDRESSES_KEY))
        .collect()
}

/// The `db-bind-addresses` block as the charm writes it: quoted agent ids (so YAML never
/// reads them as numbers), bare IPs, one per line; `{}` when empty.
fn render_block(addresses: &BindAddresses) -> String {
    if addresses.is_empty() {
        return format!("{BIND_ADDRESSES_KEY}: {{}}\n");
    }
    let mut block = format!("{BIND_ADDRESSES_KEY}:\n");
    for (id, ip) in addresses {
        let ip = ip.to_string();
        // A plain scalar may not start with `:` (`::1`-style IPv6); quote those.
        if ip.starts_with(':') {
            block.push_str(&format!("  '{id}': '{ip}'\n"));
        } else {
            block.push_str(&format!("  '{id}': {ip}\n"));
        }
    }
    block
}

/// The byte range of the top-level `db-bind-addresses` block: its key line (a line that
/// starts in column 0 with the key, plain or quoted, then `:`) and every following line up
/// to the last indented one before the next line in column 0. Blank lines after the block
/// and column-0 comments stay outside it.
fn find_block(text: &str) -> Option<(usize, usize)> {
    let mut lines = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        lines.push((offset, line));
        offset += line.len();
    }
    let start = lines.iter().position(|(_, line)| is_key_line(line))?;
    let mut end = lines[start].0 + lines[start].1.len();
    for (line_start, line) in &lines[start + 1..] {
        let body = line.trim_end_matches(['\n', '\r']);
        if body.trim().is_empty() {
            continue;
        }
        if body.starts_with([' ', '\t']) {
            end = line_start + line.len();
        } else {
            break;
        }
    }
    Some((lines[start].0, end))
}

/// Whether a line starts the top-level `db-bind-addresses` key.
fn is_key_line(line: &str) -> bool {
    [
        BIND_ADDRESSES_KEY.to_owned(),
        format!("'{BIND_ADDRESSES_KEY}'"),
        format!("\"{BIND_ADDRESSES_KEY}\""),
    ]
    .iter()
    .any(|key| {
        line.strip_prefix(key.as_str())
            .map(|rest| rest.trim_start_matches([' ', '\t']))
            .and_then(|rest| rest.strip_prefix(':'))
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\n', '\r']))
    })
}

fn parse_bind_addresses(entries: &[(Node, Node)]) -> Result<BindAddresses, ConfError> {
    let mut addresses = BindAddresses::new();
    for (key, value) in entries {
        let agent_id = match key {
            Node::Str(s) if is_agent_id(s) => s.clone(),
            Node::UInt(n) if u64::try_from(*n).is_ok() => n.to_string(),
            other => return Err(ConfError::BadAgentId(other.to_string())),
        };
        let text = value.to_string();
        let ip = text.parse::<IpAddr>().map_err(|_| ConfError::BadAddress {
            agent_id: agent_id.clone(),
            value: text,
        })?;
        if addresses.insert(agent_id.clone(), ip).is_some() {
            return Err(ConfError::BadAgentId(format!("{agent_id} (given twice)")));
        }
    }
    Ok(addresses)
}

/// One YAML node as the file holds it. serde_yaml_ng's own `Value` refuses integers beyond
/// 64 bits, which the agent's files may hold; this keeps every scalar it is given, so that
/// any valid file can be read and a rewrite checked against it.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Null,
    Bool(bool),
    Int(i128),
    UInt(u128),
    /// The float's bits: equal floats compare equal, NaN included.
    Float(u64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in file order.
    Map(Vec<(Node, Node)>),
    /// A node with a tag YAML does not resolve itself (`!foo x`).
    Tagged(String, Box<Node>),
}

impl Node {
    fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl std::fmt::Display for Node {
    /// The scalar's text, for error messages and for addresses given as non-strings.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Node::Null => f.write_str("~"),
            Node::Bool(b) => write!(f, "{b}"),
            Node::Int(n) => write!(f, "{n}"),
            Node::UInt(n) => write!(f, "{n}"),
            Node::Float(bits) => write!(f, "{}", f64::from_bits(*bits)),
            Node::Str(s) => f.write_str(s),
            Node::Seq(_) => f.write_str("a sequence"),
            Node::Map(_) => f.write_str("a mapping"),
            Node::Tagged(tag, node) => write!(f, "{tag} {node}"),
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML node")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::UInt(v.into()))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Node, E> {
        Ok(Node::UInt(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v.to_bits()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries: Vec<(Node, Node)> = Vec::new();
        while let Some((key, value)) = map.next_entry::<Node, Node>()? {
            if entries.iter().any(|(seen, _)| *seen == key) {
                return Err(de::Error::custom(format!("duplicate key {key}")));
            }
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Node, A::Error> {
        let (tag, variant): (String, _) = data.variant()?;
        let node = variant.newtype_variant::<Node>()?;
        Ok(Node::Tagged(tag, Box::new(node)))
    }
}

/// Controller agent ids are machine ids: decimal numbers.
pub fn is_agent_id(text: &str) -> bool {
    !text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit())
}

/// An agent id in the one form Juju writes it: decimal without leading zeros (`1`, never
/// `01`), so that two spellings can never name one controller twice.
pub fn is_canonical_agent_id(text: &str) -> bool {
    is_agent_id(text) && (text == "0" || !text.starts_with('0')) && text.parse::<u64>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test ip")
    }

    #[test]
    fn parse_table() {
        let check = |text: &str, expected: Result<Vec<(&str, &str)>, ConfError>| {
            let got = ControllerConf::parse(text).map(|c| {
                c.bind_addresses()
                    .iter()
                    .map(|(k, v)| (k.clone(), *v))
                    .collect::<Vec<_>>()
            });
            let expected = expected.map(|pairs| {
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), ip(v)))
                    .collect()
            });
            assert_eq!(got, expected, "{text:?}");
        };
        check(
            "db-bind-addresses:\n  '0': 10.0.0.1\n",
            Ok(vec![("0", "10.0.0.1")]),
        );
        check(
            "db-bind-addresses:\n  1: 10.0.0.2\n  0: fc00::1\n",
            Ok(vec![("0", "fc00::1"), ("1", "10.0.0.2")]),
        );
        check("other: 1\n", Ok(vec![]));
        check("db-bind-addresses: {}\n", Ok(vec![]));
        check("", Err(ConfError::Empty));
        check("  \n", Err(ConfError::Empty));
        check("~\n", Err(ConfError::Empty));
        check("- a\n", Err(ConfError::NotAMapping));
        check(
            "db-bind-addresses: [1]\n",
            Err(ConfError::BindAddressesNotAMapping),
        );
        check(
            "db-bind-addresses:\n  x: 10.0.0.1\n",
            Err(ConfError::BadAgentId("x".into())),
        );
        check(
            "db-bind-addresses:\n  '0': 10.0.0\n",
            Err(ConfError::BadAddress {
                agent_id: "0".into(),
                value: "10.0.0".into(),
            }),
        );
        check(
            "db-bind-addresses:\n  '0': 10.0.0.1:17666\n",
            Err(ConfError::BadAddress {
                agent_id: "0".into(),
                value: "10.0.0.1:17666".into(),
            }),
        );
        assert!(matches!(
            ControllerConf::parse("db-bind-addresses: {'0': [\n"),
            Err(ConfError::Yaml(_))
        ));
    }

    #[test]
    fn rewrite_keeps_other_keys_in_place() {
        let mut conf = ControllerConf::parse(
            "api-port: 17070\ndb-bind-addresses:\n  '0': 10.0.0.1\nzz-last: keep\n",
        )
        .expect("valid conf");
        let mut map = BindAddresses::new();
        map.insert("1".into(), ip("10.0.0.2"));
        map.insert("0".into(), ip("10.0.0.1"));
        conf.set_bind_addresses(map.clone()).expect("replaceable");
        let text = conf.render();
        assert_eq!(
            text,
            "api-port: 17070\ndb-bind-addresses:\n  '0': 10.0.0.1\n  '1': 10.0.0.2\nzz-last: keep\n"
        );
        let again = ControllerConf::parse(&text).expect("rendered conf parses");
        assert_eq!(again.bind_addresses(), &map);
        assert_eq!(again, conf);
    }

    #[test]
    fn absent_and_empty_differ() {
        let absent = ControllerConf::parse("x: 1\n").expect("valid");
        assert!(!absent.has_bind_addresses());
        let empty = ControllerConf::parse("db-bind-addresses: {}\n").expect("valid");
        assert!(empty.has_bind_addresses());
    }

    fn replaced(text: &str, pairs: &[(&str, &str)]) -> Result<String, ConfError> {
        let mut conf = if text.is_empty() {
            ControllerConf::default()
        } else {
            ControllerConf::parse(text).expect("valid conf")
        };
        let map: BindAddresses = pairs.iter().map(|(k, v)| (k.to_string(), ip(v))).collect();
        conf.set_bind_addresses(map.clone())?;
        assert_eq!(conf.bind_addresses(), &map);
        Ok(conf.render())
    }

    #[test]
    fn rewrite_keeps_every_other_byte() {
        let check = |before: &str, pairs: &[(&str, &str)], after: &str| {
            assert_eq!(replaced(before, pairs).as_deref(), Ok(after), "{before:?}");
        };
        let map = "db-bind-addresses:\n  '0': 10.0.0.1\n  '1': 10.0.0.2\n";
        // Comments, octal-looking numbers, integers beyond 64 bits, tags, quoting styles and
        // key order outside the block are kept byte for byte.
        let head = "# written by jujud\nmode: 0644   # octal for Go\nhuge: 123456789012345678901234567890\n\
                    tagged: !!str 17070\nquoted: \"x\"\n";
        let tail = "\n# trailing comment\nzz-last:\n  - a\n  - b\n";
        check(
            &format!(
                "{head}db-bind-addresses:\n  # old\n  '0': 10.0.0.9\n\n  '5': 10.0.0.8\n{tail}"
            ),
            &[("0", "10.0.0.1"), ("1", "10.0.0.2")],
            &format!("{head}{map}{tail}"),
        );
        // Absent key: appended (with a newline first when the file lacks one).
        check(
            "a: 0644",
            &[("0", "10.0.0.1"), ("1", "10.0.0.2")],
            &format!("a: 0644\n{map}"),
        );
        check("", &[("0", "10.0.0.1"), ("1", "10.0.0.2")], map);
        // Flow style and a quoted key are replaced as blocks; an empty map is `{}`.
        check(
            "\"db-bind-addresses\": {'0': 10.0.0.9}\nb: 1\n",
            &[("0", "10.0.0.1"), ("1", "10.0.0.2")],
            &format!("{map}b: 1\n"),
        );
        check(
            "db-bind-addresses:\n  '0': 10.0.0.9\nb: 1\n",
            &[],
            "db-bind-addresses: {}\nb: 1\n",
        );
        // IPv6 addresses are bare unless YAML needs quotes.
        check(
            "b: 1\n",
            &[("0", "fc00::1"), ("1", "::1")],
            "b: 1\ndb-bind-addresses:\n  '0': fc00::1\n  '1': '::1'\n",
        );
        // A document the block cannot be cut out of is refused, not re-rendered.
        assert!(matches!(
            replaced(
                "{a: 1, db-bind-addresses: {'0': 10.0.0.9}}\n",
                &[("0", "10.0.0.1")]
            ),
            Err(ConfError::CannotReplace(_))
        ));
    }

    #[test]
    fn canonical_agent_ids() {
        for (text, expected) in [
            ("0", true),
            ("1", true),
            ("17", true),
            ("01", false),
            ("00", false),
            ("", false),
            ("-1", false),
            ("1a", false),
            ("99999999999999999999", false),
        ] {
            assert_eq!(is_canonical_agent_id(text), expected, "{text:?}");
        }
    }
}
