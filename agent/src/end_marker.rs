//! Finds a job's end line in a container's output stream.
//!
//! The worker loop ends every job with `\n@@crater-end NONCE STEP EXIT TIMED_OUT OOM PEAK NO_SPACE\n`,
//! where NONCE
//! is fresh per job and known only to the agent and the worker loop. Output arrives in arbitrary
//! pieces, so the marker may be split across them; the scanner holds back only the few bytes
//! that could still be the start of the marker and passes everything else through at once, so its
//! memory stays bounded whatever the crate prints.

use memchr::memmem::Finder;

/// What the end line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndLine {
    /// The step that failed, `None` when all passed.
    pub failed_step: Option<String>,
    pub exit_code: i32,
    pub timed_out: bool,
    /// The kernel OOM-killed one of the job's processes.
    pub oom: bool,
    /// The container's peak memory use during the job.
    pub peak_memory_bytes: u64,
    /// The job filled its disk (`--disk-gb`) or its tmpfs; if it kept it full it was stopped.
    pub no_space: bool,
}

/// The longest end line we accept after the marker; anything longer is a broken worker.
const MAX_TAIL: usize = 256;

pub struct EndScanner {
    finder: Finder<'static>,
    /// Bytes held back: a possible start of the marker, or the end line after it.
    held: Vec<u8>,
    in_tail: bool,
}

/// The result of feeding one piece of output.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scanned {
    /// Log bytes that are certainly not part of the marker.
    pub log: Vec<u8>,
    /// Set once the complete end line has been seen.
    pub end: Option<Result<EndLine, String>>,
}

impl EndScanner {
    pub fn new(nonce: &str) -> EndScanner {
        let needle = format!("\n@@crater-end {nonce} ").into_bytes();
        EndScanner {
            finder: Finder::new(&needle).into_owned(),
            held: Vec::new(),
            in_tail: false,
        }
    }

    pub fn feed(&mut self, piece: &[u8]) -> Scanned {
        let mut out = Scanned::default();
        if self.in_tail {
            self.held.extend_from_slice(piece);
            out.end = self.parse_tail();
            return out;
        }
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(piece);
        if let Some(pos) = self.finder.find(&buf) {
            out.log = buf[..pos].to_vec();
            self.held = buf[pos + self.finder.needle().len()..].to_vec();
            self.in_tail = true;
            out.end = self.parse_tail();
        } else {
            let keep = partial_match_len(&buf, self.finder.needle());
            self.held = buf[buf.len() - keep..].to_vec();
            buf.truncate(buf.len() - keep);
            out.log = buf;
        }
        out
    }

    /// Bytes held back when the stream ended without an end line: they are log, not marker.
    pub fn into_remainder(self) -> Vec<u8> {
        if self.in_tail { Vec::new() } else { self.held }
    }

    fn parse_tail(&mut self) -> Option<Result<EndLine, String>> {
        let Some(nl) = memchr::memchr(b'\n', &self.held) else {
            return (self.held.len() > MAX_TAIL)
                .then(|| Err("the worker's end line is too long".to_owned()));
        };
        let line = String::from_utf8_lossy(&self.held[..nl]).into_owned();
        Some(parse_end_line(&line))
    }
}

fn parse_end_line(line: &str) -> Result<EndLine, String> {
    let bad = || format!("malformed end line from the worker: {line:?}");
    let flag = |s: &str| match s {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(bad()),
    };
    let fields: Vec<&str> = line.split(' ').collect();
    let [step, exit, timed_out, oom, peak, no_space] = fields[..] else {
        return Err(bad());
    };
    Ok(EndLine {
        failed_step: (step != "-").then(|| step.to_owned()),
        exit_code: exit.parse().map_err(|_| bad())?,
        timed_out: flag(timed_out)?,
        oom: flag(oom)?,
        peak_memory_bytes: peak.parse().map_err(|_| bad())?,
        no_space: flag(no_space)?,
    })
}

/// The length of the longest suffix of `buf` that is a proper prefix of `needle`.
fn partial_match_len(buf: &[u8], needle: &[u8]) -> usize {
    let max = (needle.len() - 1).min(buf.len());
    (1..=max)
        .rev()
        .find(|&n| buf[buf.len() - n..] == needle[..n])
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_pieces(input: &[u8], piece: usize) -> (Vec<u8>, Option<Result<EndLine, String>>) {
        let mut scanner = EndScanner::new("n0nce");
        let mut log = Vec::new();
        for chunk in input.chunks(piece) {
            let scanned = scanner.feed(chunk);
            log.extend(scanned.log);
            if let Some(end) = scanned.end {
                return (log, Some(end));
            }
        }
        log.extend(scanner.into_remainder());
        (log, None)
    }

    #[test]
    fn finds_the_end_line_however_the_output_is_split() {
        let input = b"Compiling foo\r\n\n@@crater-end n0nce build 101 0 1 123456 1\n";
        for piece in 1..=input.len() {
            let (log, end) = scan_in_pieces(input, piece);
            assert_eq!(log, b"Compiling foo\r\n", "piece size {piece}");
            assert_eq!(
                end,
                Some(Ok(EndLine {
                    failed_step: Some("build".into()),
                    exit_code: 101,
                    timed_out: false,
                    oom: true,
                    peak_memory_bytes: 123456,
                    no_space: true,
                }))
            );
        }
    }

    #[test]
    fn a_marker_with_another_nonce_is_just_log() {
        let input = b"a\n@@crater-end guess - 0 0 0 0 0\nb\n@@crater-end n0nce - 0 1 0 7 0\n";
        let (log, end) = scan_in_pieces(input, 3);
        assert_eq!(log, b"a\n@@crater-end guess - 0 0 0 0 0\nb");
        let end = end.unwrap().unwrap();
        assert_eq!(
            (end.failed_step, end.exit_code, end.timed_out),
            (None, 0, true)
        );
    }

    #[test]
    fn output_that_ends_without_marker_loses_no_bytes() {
        let input = b"partial output\n@@crater-en";
        let (log, end) = scan_in_pieces(input, 4);
        assert_eq!(end, None);
        assert_eq!(log, input);
    }

    #[test]
    fn holds_back_at_most_the_marker_length() {
        let mut scanner = EndScanner::new("n0nce");
        let big = vec![b'x'; 1 << 20];
        let scanned = scanner.feed(&big);
        assert_eq!(scanned.log.len(), big.len());
        let scanned = scanner.feed(b"\n@@crater");
        assert!(scanned.log.is_empty());
        assert!(scanner.held.len() < 32);
    }

    #[test]
    fn malformed_end_lines_are_errors() {
        let (_, end) = scan_in_pieces(b"\n@@crater-end n0nce build x 0 0 0 0\n", 5);
        assert!(end.unwrap().unwrap_err().contains("malformed"));
        let (_, end) = scan_in_pieces(b"\n@@crater-end n0nce build 1 0 0 0\n", 5);
        assert!(end.unwrap().unwrap_err().contains("malformed"));
        let long = format!("\n@@crater-end n0nce {}", "y".repeat(300));
        let (_, end) = scan_in_pieces(long.as_bytes(), 50);
        assert!(end.unwrap().unwrap_err().contains("too long"));
    }
}
