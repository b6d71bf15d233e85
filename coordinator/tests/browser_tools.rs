//! The tools the report-page tests stand on, proven on pages made here: a headless Chromium
//! runs a page's script and reports its uncaught errors, and vnu tells valid HTML from invalid.

mod common;

use common::browser::Browser;
use common::html_check::validate_html;

const SEARCH_PAGE: &str = r#"<!DOCTYPE html><html lang="en"><head><title>t</title></head><body>
<input id="q"><ul id="out"></ul>
<script>
const words = ["alpha", "beta", "alphabet"];
document.getElementById("q").addEventListener("input", e => {
  document.getElementById("out").replaceChildren(...words
    .filter(w => w.startsWith(e.target.value))
    .map(w => Object.assign(document.createElement("li"), {textContent: w})));
});
</script></body></html>"#;

#[test]
fn browser_runs_scripts_and_reports_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("search.html");
    std::fs::write(&page, SEARCH_PAGE).unwrap();
    let broken = dir.path().join("broken.html");
    std::fs::write(&broken, "<!DOCTYPE html><script>undefined_fn()</script>").unwrap();

    let browser = Browser::start();
    browser.open(&format!("file://{}", page.display()));
    browser.type_into("#q", "alph");
    assert_eq!(browser.texts("#out li"), ["alpha", "alphabet"]);
    assert_eq!(browser.console_errors(), Vec::<String>::new());

    browser.open(&format!("file://{}", broken.display()));
    let errors = browser.console_errors();
    assert!(
        errors.iter().any(|e| e.contains("undefined_fn")),
        "{errors:?}"
    );
}

#[test]
fn vnu_tells_valid_html_from_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let valid = dir.path().join("valid.html");
    std::fs::write(
        &valid,
        "<!DOCTYPE html>\n<html lang=en><head><title>t</title></head>\n<body><p>hi</p></body></html>\n",
    )
    .unwrap();
    // No extension, like the per-crate log pages; two elements with one id, on line 3.
    let invalid = dir.path().join("0.1.0");
    std::fs::write(
        &invalid,
        "<!DOCTYPE html>\n<html lang=en><head><title>t</title></head>\n<body><p id=a>1</p><p id=a>2</p></body></html>\n",
    )
    .unwrap();

    validate_html(&[&valid]).unwrap();
    let errors = validate_html(&[&valid, &invalid]).unwrap_err();
    let expected = format!("{}:3: Duplicate ID", invalid.display());
    assert!(errors.contains(&expected), "{errors}");
    assert!(!errors.contains("valid.html"), "{errors}");
}
