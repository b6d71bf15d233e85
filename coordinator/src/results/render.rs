//! Renders a raw terminal log as a standalone HTML page.
//!
//! Build logs are captured from a pseudo-terminal so that cargo emits colours
//! and progress bars, but the raw bytes are unreadable in a browser: escape
//! sequences show up as garbage and every progress-bar redraw (`\r` followed by
//! erase-in-line) piles up as text. A small per-line terminal emulator keeps a
//! row of styled cells and a cursor, so redraws collapse to what a user would
//! have seen on screen, and colours become CSS classes. Only one line is held
//! at a time and input is read in chunks, so memory stays bounded even for
//! logs of gigabytes.

use std::fmt::Write as _;
use std::io::{self, BufWriter, Read, Write};

use vte::{Params, ParamsIter, Parser, Perform};

const CHUNK: usize = 64 * 1024;
/// Cells kept per line; a runaway line (e.g. a minified blob) must not grow
/// memory without bound, and nobody reads past this width anyway.
const MAX_CELLS: usize = 16384;
/// vte buffers an OSC string until it is terminated, without limit. If this
/// many bytes go by without the parser reporting anything, we assume a stray,
/// never-terminated OSC and start the parser afresh.
const MAX_SILENT: usize = 1024 * 1024;

/// The 16 base colours, as in VS Code's dark terminal theme.
const PALETTE: [&str; 16] = [
    "#000000", "#cd3131", "#0dbc79", "#e5e510", "#2472c8", "#bc3fbc", "#11a8cd", "#e5e5e5",
    "#666666", "#f14c4c", "#23d18b", "#f5f543", "#3b8eea", "#d670d6", "#29b8db", "#ffffff",
];

#[derive(Clone, Copy, PartialEq, Eq, Default)]
enum Color {
    #[default]
    Default,
    /// An xterm 256-colour index; 0–15 are themed via CSS classes.
    Index(u8),
    Rgb(u8, u8, u8),
}

#[derive(Clone, Copy, PartialEq, Eq, Default)]
struct Style {
    fg: Color,
    bg: Color,
    bold: bool,
    dim: bool,
    italic: bool,
    underline: bool,
}

/// Renders `input` (a raw terminal log) as a complete HTML page into `out`.
/// `title` is shown as the page header (e.g. "itoa 1.0.15 — check"); it must be escaped too.
pub fn render_html(title: &str, input: impl Read, out: impl Write) -> io::Result<()> {
    render_log_page(title, "", input, out, Jump::NONE)
}

/// Where a log page's "jump" link goes: the first line whose plain text contains one of
/// `markers`, and what the link says.
#[derive(Debug, Clone, Copy)]
pub struct Jump<'a> {
    pub markers: &'a [&'a str],
    pub label: &'a str,
}

impl Jump<'static> {
    /// No jump link: nothing is looked for.
    pub const NONE: Jump<'static> = Jump {
        markers: &[],
        label: "",
    };
}

/// A log page: `title` as its header, `links` (HTML, already escaped) under it, then the log,
/// with its first line matching `jump`'s markers anchored as `first-report`.
///
/// The page is streamed, so whether a line matches is known only at the end: the jump link, its
/// style (shown right under the header) and the scrolling script come after the log, and only
/// if a line matched; otherwise the page is exactly `render_html`'s.
pub fn render_log_page(
    title: &str,
    links: &str,
    mut input: impl Read,
    out: impl Write,
    jump: Jump<'_>,
) -> io::Result<()> {
    let markers = jump.markers;
    let mut out = BufWriter::new(out);
    let mut title_html = String::new();
    title.chars().for_each(|c| escape_into(&mut title_html, c));
    write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title_html}</title>\n\
         <style>\nbody{{background:#1e1e1e;color:#d4d4d4;font-family:monospace;margin:1em}}\n\
         h1{{font-size:1.2em}}\npre{{white-space:pre-wrap;word-break:break-all;margin:0}}\n\
         nav{{margin-bottom:1em}}nav a{{color:#3b8eea}}\n\
         body{{display:flex;flex-direction:column}}h1,nav{{order:0}}pre{{order:2}}\n\
         .jump{{order:1;color:#3b8eea;margin-bottom:1em}}#first-report{{background:#5a1d1d}}\n\
         .b{{font-weight:bold}}.d{{opacity:.6}}.i{{font-style:italic}}.u{{text-decoration:underline}}\n"
    )?;
    for (i, c) in PALETTE.iter().enumerate() {
        writeln!(out, ".fg{i}{{color:{c}}}.bg{i}{{background-color:{c}}}")?;
    }
    // HTML drops a newline right after `<pre>`, so add one of our own lest an
    // empty first log line vanish.
    write!(
        out,
        "</style>\n</head>\n<body>\n<h1>{title_html}</h1>\n{links}<pre>\n"
    )?;

    let mut term = Term {
        out,
        error: None,
        line: Vec::new(),
        cursor: 0,
        style: Style::default(),
        html: String::new(),
        active: false,
        markers,
        marked: false,
        plain: String::new(),
    };
    let mut parser = Parser::new();
    let mut buf = vec![0u8; CHUNK];
    let mut silent = 0;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        term.active = false;
        parser.advance(&mut term, &buf[..n]);
        term.error.take().map_or(Ok(()), Err)?;
        silent = if term.active { 0 } else { silent + n };
        if silent > MAX_SILENT {
            parser = Parser::new();
            silent = 0;
        }
    }
    if !term.line.is_empty() {
        term.emit_line();
    }
    term.error.take().map_or(Ok(()), Err)?;
    let mut out = term.out;
    out.write_all(b"</pre>\n")?;
    if term.marked {
        out.write_all(first_report_link(jump.label).as_bytes())?;
    }
    out.write_all(b"</body>\n</html>\n")?;
    out.flush()
}

/// One URL path segment, percent-encoded but for unreserved characters (a version's `+` would
/// otherwise read as a space on S3's website endpoint).
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The jump link is placed under the header by the flex order (see the head's style), as it
/// can only be written after the log. The script scrolls this page's own window (not
/// `scrollIntoView`, which would scroll a page showing it in a frame too, such as the UB page).
fn first_report_link(label: &str) -> String {
    format!(
        "<a class=\"jump\" href=\"#first-report\">{label}</a>\n<script>\
         var r=document.getElementById(\"first-report\").getBoundingClientRect();\
         window.scrollTo(0,r.top+window.scrollY-window.innerHeight/3);</script>\n"
    )
}

/// One line of terminal state. `Perform` callbacks cannot return errors, so
/// the first write error is parked in `error` and checked after each chunk.
struct Term<'m, W: Write> {
    out: W,
    error: Option<io::Error>,
    line: Vec<(char, Style)>,
    cursor: usize,
    style: Style,
    /// Reused per line to avoid an allocation for every line.
    html: String,
    /// Whether the parser reported anything during the current chunk.
    active: bool,
    /// The first line containing one of these gets the `first-report` anchor.
    markers: &'m [&'m str],
    /// Whether a line got it already.
    marked: bool,
    /// Reused for the plain text of a line, to look for the markers.
    plain: String,
}

impl<W: Write> Term<'_, W> {
    fn emit_line(&mut self) {
        self.html.clear();
        let anchor = !self.marked && !self.markers.is_empty() && {
            self.plain.clear();
            self.plain.extend(self.line.iter().map(|&(c, _)| c));
            self.markers.iter().any(|m| self.plain.contains(m))
        };
        if anchor {
            self.marked = true;
            self.html.push_str("<span id=\"first-report\">");
        }
        for run in self.line.chunk_by(|a, b| a.1 == b.1) {
            let styled = run[0].1 != Style::default();
            if styled {
                open_span(&mut self.html, &run[0].1);
            }
            run.iter()
                .for_each(|&(c, _)| escape_into(&mut self.html, c));
            if styled {
                self.html.push_str("</span>");
            }
        }
        if anchor {
            self.html.push_str("</span>");
        }
        self.html.push('\n');
        if self.error.is_none() {
            self.error = self.out.write_all(self.html.as_bytes()).err();
        }
        self.line.clear();
        self.cursor = 0;
    }

    fn sgr(&mut self, params: &Params) {
        let mut it = params.iter();
        while let Some(p) = it.next() {
            let s = &mut self.style;
            match p[0] {
                0 => *s = Style::default(),
                1 => s.bold = true,
                2 => s.dim = true,
                3 => s.italic = true,
                4 => s.underline = true,
                22 => (s.bold, s.dim) = (false, false),
                23 => s.italic = false,
                24 => s.underline = false,
                n @ 30..=37 => s.fg = Color::Index((n - 30) as u8),
                n @ 90..=97 => s.fg = Color::Index((n - 90 + 8) as u8),
                n @ 40..=47 => s.bg = Color::Index((n - 40) as u8),
                n @ 100..=107 => s.bg = Color::Index((n - 100 + 8) as u8),
                38 => s.fg = extended_color(p, &mut it).unwrap_or(s.fg),
                48 => s.bg = extended_color(p, &mut it).unwrap_or(s.bg),
                39 => s.fg = Color::Default,
                49 => s.bg = Color::Default,
                _ => {}
            }
        }
    }
}

/// Parses the tail of SGR 38/48. Programs use either the colon form, where
/// everything is a subparameter of one parameter (`38:2::r:g:b`, with an
/// optional colour-space id), or the older semicolon form spread over the
/// following parameters, which must then be consumed from `it`.
fn extended_color(p: &[u16], it: &mut ParamsIter<'_>) -> Option<Color> {
    let byte = |v: u16| u8::try_from(v).ok();
    if p.len() > 1 {
        return match p[1] {
            5 => Some(Color::Index(byte(*p.get(2)?)?)),
            2 => {
                let v = &p[2..];
                let v = if v.len() >= 4 { &v[1..4] } else { v.get(..3)? };
                Some(Color::Rgb(byte(v[0])?, byte(v[1])?, byte(v[2])?))
            }
            _ => None,
        };
    }
    let kind = it.next()?[0];
    let mut next = || it.next().and_then(|q| byte(q[0]));
    match kind {
        5 => Some(Color::Index(next()?)),
        2 => Some(Color::Rgb(next()?, next()?, next()?)),
        _ => None,
    }
}

/// Standard xterm palette for indices 16–255.
fn xterm_rgb(n: u8) -> (u8, u8, u8) {
    const LEVELS: [u8; 6] = [0, 95, 135, 175, 215, 255];
    if n >= 232 {
        let v = 8 + 10 * (n - 232);
        return (v, v, v);
    }
    let n = n.saturating_sub(16) as usize;
    (LEVELS[n / 36], LEVELS[n / 6 % 6], LEVELS[n % 6])
}

fn open_span(html: &mut String, s: &Style) {
    let mut classes = Vec::new();
    let mut css = String::new();
    for (color, class, prop) in [(s.fg, "fg", "color"), (s.bg, "bg", "background-color")] {
        let (r, g, b) = match color {
            Color::Default => continue,
            Color::Index(n) if n < 16 => {
                classes.push(format!("{class}{n}"));
                continue;
            }
            Color::Index(n) => xterm_rgb(n),
            Color::Rgb(r, g, b) => (r, g, b),
        };
        let _ = write!(css, "{prop}:#{r:02x}{g:02x}{b:02x};");
    }
    let flags = [s.bold, s.dim, s.italic, s.underline];
    let names = flags.iter().zip(["b", "d", "i", "u"]).filter(|f| *f.0);
    classes.extend(names.map(|(_, name)| name.to_string()));
    html.push_str("<span");
    if !classes.is_empty() {
        let _ = write!(html, " class=\"{}\"", classes.join(" "));
    }
    if !css.is_empty() {
        let _ = write!(html, " style=\"{}\"", css.trim_end_matches(';'));
    }
    html.push('>');
}

fn escape_into(html: &mut String, c: char) {
    match c {
        '&' => html.push_str("&amp;"),
        '<' => html.push_str("&lt;"),
        '>' => html.push_str("&gt;"),
        '"' => html.push_str("&quot;"),
        '\'' => html.push_str("&#39;"),
        c => html.push(c),
    }
}

impl<W: Write> Perform for Term<'_, W> {
    fn print(&mut self, c: char) {
        self.active = true;
        // vte hands DEL to `print`; a terminal would not draw it.
        if c == '\x7f' || self.cursor >= MAX_CELLS {
            return;
        }
        if self.cursor < self.line.len() {
            self.line[self.cursor] = (c, self.style);
        } else {
            self.line.resize(self.cursor, (' ', Style::default()));
            self.line.push((c, self.style));
        }
        self.cursor += 1;
    }

    fn execute(&mut self, byte: u8) {
        self.active = true;
        match byte {
            b'\n' => self.emit_line(),
            b'\r' => self.cursor = 0,
            0x08 => self.cursor = self.cursor.saturating_sub(1),
            // Like a terminal, a tab only moves the cursor: it must not blank
            // text it skips over, and gaps are padded when something is printed.
            b'\t' => self.cursor = ((self.cursor / 8 + 1) * 8).min(MAX_CELLS),
            _ => {}
        }
    }

    fn csi_dispatch(&mut self, params: &Params, intermediates: &[u8], ignore: bool, action: char) {
        self.active = true;
        // Private-mode sequences (`ESC [ ? ...`) arrive with intermediates and
        // mean something else entirely.
        if ignore || !intermediates.is_empty() {
            return;
        }
        let arg = params.iter().next().map_or(0, |p| p[0]) as usize;
        match action {
            'm' => self.sgr(params),
            'K' => match arg {
                0 => self.line.truncate(self.cursor),
                1 => {
                    let end = (self.cursor + 1).min(self.line.len());
                    self.line[..end].fill((' ', Style::default()));
                }
                2 => self.line.clear(),
                _ => {}
            },
            'G' => self.cursor = (arg.max(1) - 1).min(MAX_CELLS),
            'C' => self.cursor = (self.cursor + arg.max(1)).min(MAX_CELLS),
            'D' => self.cursor = self.cursor.saturating_sub(arg.max(1)),
            _ => {}
        }
    }

    fn esc_dispatch(&mut self, _: &[u8], _: bool, _: u8) {
        self.active = true;
    }

    fn osc_dispatch(&mut self, _: &[&[u8]], _: bool) {
        self.active = true;
    }

    fn hook(&mut self, _: &Params, _: &[u8], _: bool, _: char) {
        self.active = true;
    }

    fn put(&mut self, _: u8) {
        self.active = true;
    }

    fn unhook(&mut self) {
        self.active = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(input: impl Read) -> String {
        let mut out = Vec::new();
        render_html("t", input, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Just the log part of the page.
    fn body(input: &[u8]) -> String {
        let page = page(input);
        let start = page.find("<pre>\n").unwrap() + "<pre>\n".len();
        let end = page.rfind("</pre>").unwrap();
        page[start..end].to_string()
    }

    /// Hands out 1–3 bytes per read, to split escapes and UTF-8 sequences.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.1 += 1;
            let n = (self.1 % 3 + 1).min(self.0.len()).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn page_structure_and_escaping() {
        let mut out = Vec::new();
        let log = &b"<script>alert('x&y')</script>"[..];
        render_html("a<b> & \"c\" — 'd'", log, &mut out).unwrap();
        let page = String::from_utf8(out).unwrap();
        assert!(page.starts_with("<!DOCTYPE html>\n"));
        assert!(page.contains("<meta charset=\"utf-8\">"));
        let title = "a&lt;b&gt; &amp; &quot;c&quot; — &#39;d&#39;";
        assert!(page.contains(&format!("<title>{title}</title>")));
        assert!(page.contains(&format!("<h1>{title}</h1>")));
        // The last line has no newline but is still emitted.
        assert!(
            page.contains("<pre>\n&lt;script&gt;alert(&#39;x&amp;y&#39;)&lt;/script&gt;\n</pre>")
        );
        assert!(!page.contains("<script>"));
        assert!(page.trim_end().ends_with("</html>"));
    }

    #[test]
    fn progress_bar_redraw_collapses() {
        let log = b"   Building [==> ] 1/3: foo\r\x1b[K   Compiling bar\n";
        assert_eq!(body(log), "   Compiling bar\n");
    }

    #[test]
    fn cursor_movement() {
        assert_eq!(body(b"abc\rX\n"), "Xbc\n");
        assert_eq!(body(b"abc\r\ndef\r\n"), "abc\ndef\n");
        assert_eq!(body(b"ab\x08X\n"), "aX\n");
        assert_eq!(body(b"a\tb\n"), "a       b\n");
        assert_eq!(body(b"abcdefghij\ra\tb\n"), "abcdefghbj\n");
        assert_eq!(body(b"abcdef\x1b[2GX\x1b[2CY\n"), "aXcdYf\n");
        assert_eq!(body(b"ab\x1b[3CZ\n"), "ab   Z\n");
        assert_eq!(body(b"\n\nx"), "\n\nx\n");
    }

    #[test]
    fn erase_in_line_variants() {
        assert_eq!(body(b"abcdef\x1b[3D\x1b[K\n"), "abc\n");
        assert_eq!(body(b"abcdef\x1b[3D\x1b[0K\n"), "abc\n");
        assert_eq!(body(b"abcdef\x1b[3D\x1b[1K\n"), "    ef\n");
        assert_eq!(body(b"abcdef\x1b[2D\x1b[2Kx\n"), "    x\n");
    }

    #[test]
    fn other_escapes_are_dropped() {
        let log = b"\x1b]0;title\x07a\x1b[?25lb\x1b(Bc\x07\x1bPq#0\x1b\\d\x0b\n";
        assert_eq!(body(log), "abcd\n");
    }

    #[test]
    fn bold_bright_green() {
        let log = b"\x1b[1m\x1b[92mCompiling\x1b[0m foo\n";
        assert_eq!(body(log), "<span class=\"fg10 b\">Compiling</span> foo\n");
        let log = b"\x1b[31;44;2;3;4mx\x1b[22;23;24my\x1b[39;49mz\n";
        assert_eq!(
            body(log),
            "<span class=\"fg1 bg4 d i u\">x</span><span class=\"fg1 bg4\">y</span>z\n"
        );
        assert!(page(&b""[..]).contains(".fg10{color:#23d18b}"));
    }

    #[test]
    fn extended_colours_become_hex() {
        let cases: [(&[u8], &str); 7] = [
            (b"38;5;196", "style=\"color:#ff0000\""),
            (b"38;5;67", "style=\"color:#5f87af\""),
            (b"38;5;244", "style=\"color:#808080\""),
            (b"48:5:232", "style=\"background-color:#080808\""),
            (b"38;5;9", "class=\"fg9\""),
            (b"38:2::10:20:30", "style=\"color:#0a141e\""),
            (
                b"1;38;2;10;20;30;48;2;1;2;3",
                "class=\"b\" style=\"color:#0a141e;background-color:#010203\"",
            ),
        ];
        for (sgr, attrs) in cases {
            let log = [b"\x1b[", sgr, b"mX\n"].concat();
            assert_eq!(body(&log), format!("<span {attrs}>X</span>\n"));
        }
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let out = body(b"ok \xff\xfe x\xc3\n\xe2\x82 end \xf0\x9f");
        assert!(out.starts_with("ok \u{fffd}"), "{out:?}");
        assert!(out.contains(" end"), "{out:?}");
    }

    #[test]
    fn long_line_is_capped() {
        let mut log = vec![b'x'; MAX_CELLS + 1000];
        log.extend_from_slice(b"\x1b[31mmore\x1b[0m\nnext\n");
        let out = body(&log);
        let (first, rest) = out.split_once('\n').unwrap();
        assert_eq!(first, "x".repeat(MAX_CELLS));
        assert_eq!(rest, "next\n");
    }

    #[test]
    fn unterminated_osc_does_not_swallow_everything() {
        let mut log = b"\x1b]0;".to_vec();
        log.resize(3 * MAX_SILENT, b'a');
        log.extend_from_slice(b"\nvisible\n");
        assert!(body(&log).ends_with("visible\n"));
    }

    #[test]
    fn first_report_is_anchored_once() {
        let markers = ["Undefined Behavior: ", "ERROR: AddressSanitizer: "];
        let marked = |input: &mut dyn Read, markers: &[&str]| {
            let mut out = Vec::new();
            let jump = Jump {
                markers,
                label: "Jump to the first report",
            };
            render_log_page("t", "", input, &mut out, jump).unwrap();
            String::from_utf8(out).unwrap()
        };
        // The marker is looked for in the text shown, whatever the colours and redraws.
        let log = b"ok\r\n\x1b[1;31merror\x1b[0m: Undefined \x1b[1mBehavior\x1b[0m: x\r\n\
                    progress\rerror: Undefined Behavior: y\n";
        let html = marked(&mut &log[..], &markers);
        assert_eq!(html.matches("id=\"first-report\"").count(), 1);
        let line = "<span id=\"first-report\"><span class=\"fg1 b\">error</span>: Undefined \
                    <span class=\"b\">Behavior</span>: x</span>\nerror: Undefined Behavior: y\n</pre>";
        assert!(html.contains(&format!(
            "<pre>\nok\n{line}\n{}</body>",
            first_report_link("Jump to the first report")
        )));
        assert_eq!(marked(&mut Trickle(log, 0), &markers), html);
        // No marker matches, or none given: no anchor and no link.
        let plain = page(&b"all fine\n"[..]);
        assert_eq!(marked(&mut &b"all fine\n"[..], &markers), plain);
        assert_eq!(marked(&mut &log[..], &[]), page(&log[..]));
        assert!(!page(&log[..]).contains("id=\"first-report\""));
    }

    #[test]
    fn chunk_boundaries_do_not_matter() {
        let log = "\x1b[1m\x1b[38;5;208mé🦀 — ok\x1b[0m\r\x1b[K<done> 日本\x1b[38;2;1;2;3mz\tq\n"
            .repeat(5)
            .into_bytes();
        let whole = page(&log[..]);
        assert!(whole.contains("&lt;done&gt; 日本"));
        assert_eq!(page(Trickle(&log, 0)), whole);
    }
}
