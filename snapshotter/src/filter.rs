//! containerd's filter syntax (`filters.ParseAll` in containerd), as Walk receives it:
//!
//! ```text
//! selectors := selector ("," selector)*
//! selector  := fieldpath [operator value]
//! fieldpath := field ("." field)*
//! field     := quoted | [A-Za-z0-9_]+
//! operator  := "==" | "!=" | "~="
//! value     := quoted | [^\s,]+          (so `sha256:...` needs no quotes)
//! quoted    := Go string syntax in "..."; a `~=` value may also be quoted with /.../ or |...|
//! ```
//!
//! Several filter strings are ORed; an empty list or an empty string matches everything. The
//! snapshot fields are `kind` (active, view, committed), `name`, `parent` and `labels.<key>`
//! (the rest of the path joined with dots, so `labels."containerd.io/snapshot.ref"` and
//! `labels.a.b` both work). Unknown fields are absent, as in containerd's adaptor, so they
//! never match `==` and always match `!=`.

use blkdrv_pool::snapshot::{SnapshotInfo, SnapshotKind};
use regex::Regex;

/// A filter that could not be parsed (containerd's InvalidArgument).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter {input:?}: {reason} at byte {pos}")]
pub struct FilterError {
    pub input: String,
    pub pos: usize,
    pub reason: String,
}

#[derive(Debug, Clone)]
enum Op {
    Present,
    Equal(String),
    NotEqual(String),
    Matches(Regex),
}

#[derive(Debug, Clone)]
struct Selector {
    path: Vec<String>,
    op: Op,
}

/// One filter string: every selector must match (`,` is AND).
#[derive(Debug, Clone)]
struct All(Vec<Selector>);

/// Walk's filters: any of them may match (several strings are OR); none matches everything.
#[derive(Debug, Clone, Default)]
pub struct Filters(Vec<All>);

impl Filters {
    pub fn parse_all<S: AsRef<str>>(filters: &[S]) -> Result<Filters, FilterError> {
        let mut out = Vec::new();
        for f in filters {
            match parse(f.as_ref())? {
                Some(all) => out.push(all),
                // An empty string matches everything, which makes the whole OR true.
                None => return Ok(Filters(Vec::new())),
            }
        }
        Ok(Filters(out))
    }

    pub fn matches(&self, info: &SnapshotInfo) -> bool {
        self.0.is_empty()
            || self
                .0
                .iter()
                .any(|all| all.0.iter().all(|s| s.matches(info)))
    }
}

impl Selector {
    fn matches(&self, info: &SnapshotInfo) -> bool {
        let value = field(info, &self.path);
        match &self.op {
            Op::Present => value.is_some(),
            Op::Equal(v) => value.is_some_and(|x| x == v),
            // containerd compares the absent field as "": `!=` is true when it is absent.
            Op::NotEqual(v) => value.unwrap_or("") != v,
            Op::Matches(re) => re.is_match(value.unwrap_or("")),
        }
    }
}

/// The value of a field path on a snapshot, as containerd's snapshot adaptor gives it.
fn field<'a>(info: &'a SnapshotInfo, path: &[String]) -> Option<&'a str> {
    match path.first().map(String::as_str) {
        Some("kind") => Some(match info.kind {
            SnapshotKind::Active => "active",
            SnapshotKind::View => "view",
            SnapshotKind::Committed => "committed",
        }),
        Some("name") => Some(&info.key),
        // containerd reports a missing parent as present and empty.
        Some("parent") => Some(info.parent.as_deref().unwrap_or("")),
        Some("labels") if path.len() > 1 => {
            info.labels.get(&path[1..].join(".")).map(String::as_str)
        }
        _ => None,
    }
}

struct Parser<'a> {
    input: &'a str,
    pos: usize,
}

/// Parses one filter string; `None` for an empty one (match everything).
fn parse(input: &str) -> Result<Option<All>, FilterError> {
    let mut p = Parser { input, pos: 0 };
    p.skip_space();
    if p.at_end() {
        return Ok(None);
    }
    let mut selectors = vec![p.selector()?];
    loop {
        p.skip_space();
        match p.peek() {
            None => break,
            Some(',') => {
                p.pos += 1;
                selectors.push(p.selector()?);
            }
            Some(c) => return Err(p.err(format!("unexpected {c:?}"))),
        }
    }
    Ok(Some(All(selectors)))
}

impl Parser<'_> {
    fn err(&self, reason: impl Into<String>) -> FilterError {
        FilterError {
            input: self.input.to_string(),
            pos: self.pos,
            reason: reason.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    fn skip_space(&mut self) {
        while let Some(c) = self.peek().filter(|c| c.is_whitespace()) {
            self.pos += c.len_utf8();
        }
    }

    fn selector(&mut self) -> Result<Selector, FilterError> {
        let path = self.fieldpath()?;
        self.skip_space();
        let op = match self.peek() {
            None | Some(',') => {
                return Ok(Selector {
                    path,
                    op: Op::Present,
                })
            }
            Some('=' | '!' | '~') => self.operator()?,
            Some(c) => return Err(self.err(format!("expected an operator, found {c:?}"))),
        };
        self.skip_space();
        let regex = op == "~=";
        let value = self.value(regex)?;
        let op = match op {
            "==" => Op::Equal(value),
            "!=" => Op::NotEqual(value),
            _ => Op::Matches(
                Regex::new(&value).map_err(|e| self.err(format!("bad regular expression: {e}")))?,
            ),
        };
        Ok(Selector { path, op })
    }

    fn fieldpath(&mut self) -> Result<Vec<String>, FilterError> {
        let mut path = vec![self.field()?];
        while self.peek() == Some('.') {
            self.pos += 1;
            path.push(self.field()?);
        }
        Ok(path)
    }

    fn field(&mut self) -> Result<String, FilterError> {
        self.skip_space();
        match self.peek() {
            Some('"') => self.quoted('"'),
            Some(c) if is_field_char(c) => {
                let start = self.pos;
                while self.peek().is_some_and(is_field_char) {
                    self.pos += 1;
                }
                Ok(self.input[start..self.pos].to_string())
            }
            Some(c) => Err(self.err(format!(
                "expected a field name or a quoted string, found {c:?}"
            ))),
            None => Err(self.err("expected a field name, found the end")),
        }
    }

    fn operator(&mut self) -> Result<&'static str, FilterError> {
        let start = self.pos;
        while matches!(self.peek(), Some('=' | '!' | '~')) {
            self.pos += 1;
        }
        match &self.input[start..self.pos] {
            "==" => Ok("=="),
            "!=" => Ok("!="),
            "~=" => Ok("~="),
            other => {
                self.pos = start;
                Err(self.err(format!(
                    "unsupported operator {other:?} (expected ==, != or ~=)"
                )))
            }
        }
    }

    fn value(&mut self, regex: bool) -> Result<String, FilterError> {
        match self.peek() {
            Some('"') => self.quoted('"'),
            // As in containerd: these open a quoted value, allowed for regular expressions only.
            Some(q @ ('/' | '|')) if regex => self.quoted(q),
            Some(q @ ('/' | '|')) => Err(self.err(format!(
                "{q:?} quotes only a regular expression (~=); quote the value with \"...\""
            ))),
            Some(c) if c != ',' && !c.is_whitespace() => {
                let start = self.pos;
                while let Some(c) = self.peek().filter(|c| *c != ',' && !c.is_whitespace()) {
                    self.pos += c.len_utf8();
                }
                Ok(self.input[start..self.pos].to_string())
            }
            _ => Err(self.err("expected a value")),
        }
    }

    /// A string in Go syntax between `quote`s (the opening one is at `pos`).
    fn quoted(&mut self, quote: char) -> Result<String, FilterError> {
        let open = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                self.pos = open;
                return Err(self.err("quoted string not terminated"));
            };
            self.pos += c.len_utf8();
            match c {
                c if c == quote => return Ok(out),
                '\n' => return Err(self.err("newline in quoted string")),
                '\\' => out.push(self.escape(quote)?),
                c => out.push(c),
            }
        }
    }

    fn escape(&mut self, quote: char) -> Result<char, FilterError> {
        let Some(c) = self.peek() else {
            return Err(self.err("unfinished escape"));
        };
        self.pos += c.len_utf8();
        let simple = match c {
            'a' => Some('\x07'),
            'b' => Some('\x08'),
            'f' => Some('\x0c'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\x0b'),
            '\\' => Some('\\'),
            c if c == quote => Some(c),
            _ => None,
        };
        if let Some(s) = simple {
            return Ok(s);
        }
        let (digits, radix) = match c {
            'x' => (2, 16),
            'u' => (4, 16),
            'U' => (8, 16),
            '0'..='7' => {
                self.pos -= 1;
                (3, 8)
            }
            c => return Err(self.err(format!("unknown escape \\{c}"))),
        };
        let end = self.pos + digits;
        let code = self
            .input
            .get(self.pos..end)
            .and_then(|d| u32::from_str_radix(d, radix).ok())
            .and_then(char::from_u32)
            .ok_or_else(|| self.err("bad escape"))?;
        self.pos = end;
        Ok(code)
    }
}

fn is_field_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;
    use blkdrv_pool::snapshot::{Labels, Timestamp};

    fn info(
        key: &str,
        kind: SnapshotKind,
        parent: Option<&str>,
        labels: &[(&str, &str)],
    ) -> SnapshotInfo {
        SnapshotInfo {
            key: key.into(),
            kind,
            parent: parent.map(Into::into),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Labels>(),
            created: Timestamp(1),
            updated: Timestamp(2),
        }
    }

    fn m(filters: &[&str], i: &SnapshotInfo) -> bool {
        Filters::parse_all(filters).expect("parses").matches(i)
    }

    const REF: &str = "containerd.io/snapshot.ref";

    #[test]
    fn containerds_remote_snapshot_filter() {
        let chain = "sha256:7d0a2c4e3f";
        let parent = "default/3/sha256:aa bb";
        let i = info(
            "default/4/x",
            SnapshotKind::Committed,
            Some(parent),
            &[(REF, chain)],
        );
        let f = format!(r#"labels."{REF}"=={chain},parent=="{parent}""#);
        assert!(m(&[&f], &i));
        let other = info(
            "default/4/x",
            SnapshotKind::Committed,
            Some("p2"),
            &[(REF, chain)],
        );
        assert!(!m(&[&f], &other));
        let unlabelled = info("default/4/x", SnapshotKind::Committed, Some(parent), &[]);
        assert!(!m(&[&f], &unlabelled));
    }

    #[test]
    fn fields_and_operators() {
        let a = info(
            "k1",
            SnapshotKind::Active,
            None,
            &[("x", "1"), ("a.b", "2")],
        );
        assert!(m(&["kind==active"], &a));
        assert!(!m(&["kind==committed"], &a));
        assert!(m(&["name==k1"], &a));
        assert!(m(&["parent==\"\""], &a), "no parent compares as empty");
        assert!(m(&["labels.x"], &a), "presence");
        assert!(!m(&["labels.y"], &a));
        assert!(m(&["labels.a.b==2"], &a), "unquoted dotted key joins");
        assert!(m(&["labels.\"a.b\"==2"], &a));
        assert!(m(&["labels.y!=1"], &a), "!= is true when absent");
        assert!(!m(&["labels.x!=1"], &a));
        assert!(m(&["name~=^k[0-9]$"], &a));
        assert!(m(&["name~=/^k.$/"], &a));
        assert!(m(&["name~=|k|"], &a));
        assert!(!m(&["name~=^z"], &a));
        assert!(!m(&["nosuch==x"], &a), "unknown fields are absent");
        assert!(m(&["nosuch!=x"], &a));
    }

    #[test]
    fn comma_is_and_several_strings_are_or() {
        let a = info("k1", SnapshotKind::Active, None, &[("x", "1")]);
        assert!(m(&["kind==active,labels.x==1"], &a));
        assert!(!m(&["kind==active,labels.x==2"], &a));
        assert!(m(&["kind==view", "labels.x==1"], &a));
        assert!(!m(&["kind==view", "labels.x==2"], &a));
        assert!(m(&[], &a));
        assert!(m(&[""], &a));
        assert!(
            m(&["kind==view", ""], &a),
            "an empty string matches everything"
        );
        assert!(
            m(&[" kind == active , name == k1 "], &a),
            "spaces between tokens"
        );
    }

    #[test]
    fn quoted_values_and_escapes() {
        let a = info(
            "a \"b\",c\\d",
            SnapshotKind::View,
            Some("p"),
            &[("k", "v\tw")],
        );
        assert!(m(&[r#"name=="a \"b\",c\\d""#], &a));
        assert!(m(&[r#"labels.k=="v\tw""#], &a));
        assert!(m(&[r#"labels.k=="v\x09w""#], &a));
        assert!(m(&[r#"labels.k=="v\u0009w""#], &a));
        assert!(m(&[r#"labels.k=="v\011w""#], &a));
        assert!(m(&[r#"labels."k"=="v	w""#], &a));
        let u = info("schön", SnapshotKind::View, None, &[]);
        assert!(
            m(&["name==schön"], &u),
            "unquoted values take any non-space"
        );
    }

    #[test]
    fn parse_errors() {
        for bad in [
            "labels.",
            "==x",
            "name=x",
            "name===x",
            "name==",
            "name==\"open",
            "name==/x/",
            "name~=\"(\"",
            "name==a b",
            "name==a,",
            ",name==a",
            "labels.\"k\\q\"",
            "na-me==x",
        ] {
            let e = Filters::parse_all(&[bad]);
            assert!(e.is_err(), "{bad:?} should not parse");
        }
        let e = Filters::parse_all(&["kind==active", "name=x"]).unwrap_err();
        assert_eq!(e.input, "name=x");
        assert!(e.to_string().contains("operator"), "{e}");
    }
}
