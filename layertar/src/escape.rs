//! Text that came from outside (tar headers, paths, tool output) on its way to a terminal or a
//! log line: one line, control characters escaped, so it can neither forge output lines nor
//! send escape sequences. Used by every error of this crate, and by the CLI for all it prints.

/// `s` with every control character (C0, DEL, C1) and bidirectional override written as an
/// escape (`\n`, `\t`, `\r`, `\x1b`, `\u{202e}`); everything else unchanged.
pub fn escape_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if (0x80..0xa0).contains(&(c as u32))
                || matches!(c as u32, 0x200e | 0x200f | 0x202a..=0x202e | 0x2066..=0x2069) =>
            {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_text_kept() {
        assert_eq!(escape_controls("plain /päth"), "plain /päth");
        assert_eq!(
            escape_controls("a\nb\tc\r\u{1b}[31m\u{7f}"),
            "a\\nb\\tc\\r\\x1b[31m\\x7f"
        );
        assert_eq!(escape_controls("x\u{202e}y\u{85}"), "x\\u{202e}y\\u{85}");
        assert!(!escape_controls("created layer x\ncreated layer y").contains('\n'));
    }
}
