//! A headless Chromium driven over WebDriver, for tests of what the report pages do in a real
//! browser: their scripts run, their console stays clean, what a user types finds what it should.
//!
//! Debian's `chromium` and `chromium-driver` are installed on first use if missing (as root, once
//! per machine). Each [`Browser`] has a `chromedriver` of its own on a loopback port, killed on
//! drop. The API blocks (the tests are plain `#[test]` functions) and panics with a message on
//! failure.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

pub use fantoccini::key::Key;

/// How long chromedriver may take to answer once started (longer on two cores busy compiling).
const STARTUP: Duration = Duration::from_secs(30);

pub struct Browser {
    client: Option<Client>,
    /// Dropped after the session is closed (fields drop after `Drop::drop`).
    driver: Driver,
    port: u16,
    session: String,
    /// Driver tasks run while a call blocks on this runtime.
    rt: tokio::runtime::Runtime,
    /// chromedriver's `TMPDIR`, so Chromium's too: its profile and the shared memory files it
    /// leaves behind (`--disable-dev-shm-usage`) go with it. Dropped last.
    tmp: tempfile::TempDir,
}

impl Browser {
    /// A new headless Chromium with an 1280×800 window and an empty profile.
    pub fn start() -> Browser {
        let chromium = chromium();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let log_path = tmp.path().join("chromedriver.log");
        let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        // The port is free when picked but may be taken before chromedriver binds it; it then
        // exits, and another port is tried.
        for attempt in 1.. {
            let port = super::free_port();
            let log = std::fs::File::create(&log_path).unwrap();
            let mut driver = Driver(
                Command::new("chromedriver")
                    .arg(format!("--port={port}"))
                    .stdin(Stdio::null())
                    .env("TMPDIR", tmp.path())
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    // Chromium's processes join this group, so that all of them can be killed.
                    .process_group(0)
                    .spawn()
                    .expect("starting chromedriver"),
            );
            let start = Instant::now();
            while driver.0.try_wait().unwrap().is_none()
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            {
                assert!(start.elapsed() < STARTUP, "chromedriver: no answer");
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Some(status) = driver.0.try_wait().unwrap() {
                assert!(
                    attempt < 5,
                    "chromedriver exited ({status}):\n{}",
                    read_log()
                );
                continue;
            }
            let capabilities = json!({
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                             "--disable-gpu", "--window-size=1280,800"],
                },
                // Makes the console readable through the `se/log` endpoint.
                "goog:loggingPrefs": {"browser": "ALL"},
            });
            let connect = rt.block_on(
                ClientBuilder::new(HttpConnector::new())
                    .capabilities(capabilities.as_object().unwrap().clone())
                    .connect(&format!("http://127.0.0.1:{port}")),
            );
            let client =
                connect.unwrap_or_else(|e| panic!("starting Chromium: {e}\n{}", read_log()));
            let session = rt.block_on(client.session_id()).unwrap().unwrap();
            return Browser {
                client: Some(client),
                driver,
                port,
                session,
                rt,
                tmp,
            };
        }
        unreachable!()
    }

    fn block<F: Future>(&self, future: F) -> F::Output {
        self.rt.block_on(future)
    }

    fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    /// Loads `url` (`file://` or `http://`), returning once it has loaded. Chromium shows a
    /// `file://` page whose name has no `.html` as plain text, and so does it an `http://` one
    /// served without `Content-Type: text/html`.
    pub fn open(&self, url: &str) {
        let done = self.block(self.client().goto(url));
        done.unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    /// Sets the viewport, what the page sees as `innerWidth`×`innerHeight` and its media queries
    /// test. Not through WebDriver's window size: headless Chromium takes ~140 px of that height
    /// for browser UI it does not draw and widens windows under 500 px.
    pub fn set_window_size(&self, width: u32, height: u32) {
        let params =
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false});
        let cdp = json!({"cmd": "Emulation.setDeviceMetricsOverride", "params": params});
        self.driver_command("goog/cdp/execute", cdp);
    }

    pub fn current_url(&self) -> String {
        self.block(self.client().current_url()).unwrap().into()
    }

    /// Clears the first element matching `css` and types `text` into it, key by key (each key
    /// fires its `input` event, as a user's would).
    pub fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.block(element.clear()).unwrap();
        let typed = self.block(element.send_keys(text));
        typed.unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    /// Presses `key` (e.g. [`Key::Enter`], [`Key::Down`]) in the first element matching `css`.
    pub fn press_key(&self, css: &str, key: Key) {
        let element = self.find(css);
        let pressed = self.block(element.send_keys(&char::from(key).to_string()));
        pressed.unwrap_or_else(|e| panic!("pressing {key:?} in {css}: {e}"));
    }

    pub fn click(&self, css: &str) {
        let clicked = self.block(self.find(css).click());
        clicked.unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    /// The `innerText` of every element matching `css`, in document order.
    pub fn texts(&self, css: &str) -> Vec<String> {
        let js = "return Array.from(document.querySelectorAll(arguments[0]), e => e.innerText)";
        serde_json::from_value(self.eval_with(js, vec![json!(css)])).unwrap()
    }

    /// Attribute `attr` of every element matching `css`, in document order.
    pub fn attr_all(&self, css: &str, attr: &str) -> Vec<Option<String>> {
        let js = "return Array.from(document.querySelectorAll(arguments[0]), \
                  e => e.getAttribute(arguments[1]))";
        serde_json::from_value(self.eval_with(js, vec![json!(css), json!(attr)])).unwrap()
    }

    /// Polls until an element matches `css`, failing the test after `timeout`.
    pub fn wait_for(&self, css: &str, timeout: Duration) {
        let start = Instant::now();
        while self.count(css) == 0 {
            assert!(
                start.elapsed() < timeout,
                "nothing matched {css} within {timeout:?} on {}",
                self.current_url()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many elements match `css`.
    pub fn count(&self, css: &str) -> usize {
        let found = self.block(self.client().find_all(Locator::Css(css)));
        found.unwrap_or_else(|e| panic!("finding {css}: {e}")).len()
    }

    /// Runs `js` as the body of a function in the page, returning what it `return`s.
    pub fn eval(&self, js: &str) -> Value {
        self.eval_with(js, Vec::new())
    }

    fn eval_with(&self, js: &str, args: Vec<Value>) -> Value {
        let result = self.block(self.client().execute(js, args));
        result.unwrap_or_else(|e| panic!("running {js}: {e}"))
    }

    /// The console errors since the previous call (chromedriver hands each entry out once), as
    /// `URL LINE:COLUMN TEXT`: `console.error` calls, uncaught exceptions and unhandled promise
    /// rejections (`Uncaught ReferenceError: f is not defined`), failed loads.
    pub fn console_errors(&self) -> Vec<String> {
        let answer = self.driver_command("se/log", json!({"type": "browser"}));
        let entries = answer["value"].as_array().expect("a list of log entries");
        entries
            .iter()
            .filter(|entry| entry["level"] == "SEVERE")
            .map(|entry| entry["message"].as_str().unwrap_or_default().to_owned())
            // Chromium asks every http:// server for /favicon.ico unbidden; its 404 is no fault
            // of the page.
            .filter(|message| !message.contains("/favicon.ico - Failed to load resource"))
            .collect()
    }

    /// POSTs `body` to chromedriver's `/session/{id}/{command}`: its own commands, which neither
    /// WebDriver nor fantoccini have.
    fn driver_command(&self, command: &str, body: Value) -> Value {
        let url = format!(
            "http://127.0.0.1:{}/session/{}/{command}",
            self.port, self.session
        );
        let answer = self.block(async {
            let response = reqwest::Client::new()
                .post(&url)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await?;
            response.error_for_status()?.bytes().await
        });
        let answer = answer.unwrap_or_else(|e| panic!("chromedriver {command} {body}: {e}"));
        serde_json::from_slice(&answer).unwrap()
    }

    pub fn screenshot_png(&self) -> Vec<u8> {
        self.block(self.client().screenshot()).unwrap()
    }

    fn find(&self, css: &str) -> fantoccini::elements::Element {
        let found = self.block(self.client().find(Locator::Css(css)));
        found.unwrap_or_else(|e| panic!("finding {css} on {}: {e}", self.current_url()))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closing the session lets Chromium end cleanly (and remove its profile); what is left
        // is killed with the driver.
        if let Some(client) = self.client.take() {
            let close =
                async { tokio::time::timeout(Duration::from_secs(10), client.close()).await };
            let _ = self.block(close);
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.tmp.path().join("chromedriver.log"));
            eprintln!("chromedriver's log:\n{}", log.unwrap_or_default());
        }
    }
}

/// chromedriver, killed with every process of its group (Chromium's) when dropped: killing
/// chromedriver alone would leave Chromium running.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}

/// The Chromium binary, installed with its chromedriver if either is missing.
fn chromium() -> &'static PathBuf {
    static CHROMIUM: OnceLock<PathBuf> = OnceLock::new();
    CHROMIUM.get_or_init(|| {
        super::install::apt_install(
            &["chromium", "chromedriver"],
            &["chromium", "chromium-driver"],
        );
        super::install::on_path("chromium").unwrap()
    })
}
