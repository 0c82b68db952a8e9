//! The sysconfig file's syntax: shell variable assignments, read without a shell.

/// One `NAME=value` line, the value unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub name: String,
    pub value: String,
    pub line: usize,
}

/// Reads shell variable assignments without running anything: comments, blank lines,
/// `export NAME=value`, single and double quotes, backslash escapes. Refused, with the line:
/// `$` expansions and `` ` ``/`$(...)` substitutions (their value would depend on a shell),
/// anything after the value but a comment (`A=b cmd` runs a command), line continuations,
/// shell operators and lines that are not assignments.
pub fn parse_assignments(text: &str) -> Result<Vec<Assignment>, (usize, String)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = match line.strip_prefix("export") {
            Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start(),
            _ => line,
        };
        let eq = line.find('=').ok_or_else(|| {
            (
                n,
                "not a NAME=value assignment (the file is read, never run)".to_string(),
            )
        })?;
        let name = &line[..eq];
        let valid_name = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err((
                n,
                "not a NAME=value assignment (the file is read, never run)".to_string(),
            ));
        }
        let value = parse_value(&line[eq + 1..]).map_err(|r| (n, format!("{name}: {r}")))?;
        out.push(Assignment {
            name: name.to_string(),
            value,
            line: n,
        });
    }
    Ok(out)
}

fn expansion(c: char) -> String {
    format!("'{c}': expansions and command substitutions are not run; write the value out")
}

/// One shell word, unquoted, then nothing but blanks or a comment.
fn parse_value(s: &str) -> Result<String, String> {
    let mut v = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                let rest: String = chars.collect();
                let rest = rest.trim_start();
                if rest.is_empty() || rest.starts_with('#') {
                    return Ok(v);
                }
                return Err(
                    "more than one word after '=' (a shell would run it as a command): quote the value"
                        .into(),
                );
            }
            '\'' => loop {
                match chars.next() {
                    Some('\'') => break,
                    Some(c) => v.push(c),
                    None => return Err("unterminated ' quote (values span one line)".into()),
                }
            },
            '"' => loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(e @ ('"' | '\\' | '$' | '`')) => v.push(e),
                        Some(e) => {
                            v.push('\\');
                            v.push(e);
                        }
                        None => return Err("line continuation: values span one line".into()),
                    },
                    Some(c @ ('$' | '`')) => return Err(expansion(c)),
                    Some(c) => v.push(c),
                    None => return Err("unterminated \" quote (values span one line)".into()),
                }
            },
            '\\' => match chars.next() {
                Some(e) => v.push(e),
                None => return Err("line continuation: values span one line".into()),
            },
            '$' | '`' => return Err(expansion(c)),
            ';' | '&' | '|' | '<' | '>' | '(' | ')' => {
                return Err(format!(
                "'{c}': shell syntax (arrays, commands, redirections) is not read; quote the value"
            ))
            }
            c => v.push(c),
        }
    }
    Ok(v)
}
