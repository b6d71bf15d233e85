//! Text that came from the other side of the wire, made safe to show.
//!
//! Agent names, error messages and step names end up in `status` tables, log lines and pages.
//! An agent could put escape sequences in them (set a terminal's title, write its clipboard,
//! clear the screen, forge lines) or megabytes of text: [`printable`] keeps neither.

/// `text` without control characters (escape sequences lose their ESC, new lines become spaces)
/// and cut to at most `max_chars` characters, marked with `…` when cut.
pub fn printable(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars * 4));
    for (n, c) in text.chars().enumerate() {
        if n == max_chars {
            out.push('…');
            break;
        }
        match c {
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => {}
            // Bidirectional overrides can make a line read as something else.
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_long_text_do_not_survive() {
        let hostile = "bad\u{1b}]0;title\u{7}agent\u{1b}[2J\u{9b}31m\nforged line";
        let shown = printable(hostile, 64);
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert_eq!(shown, "bad]0;titleagent[2J31m forged line");
        assert_eq!(
            printable(&"x".repeat(100), 10),
            format!("{}…", "x".repeat(10))
        );
        assert_eq!(printable("agent-1 ünïcode", 64), "agent-1 ünïcode");
        assert_eq!(printable("a\u{202e}b", 8), "ab");
    }
}
