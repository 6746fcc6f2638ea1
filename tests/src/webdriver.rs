//! A WebDriver (W3C) client over the raw HTTP client, for driving Debian's
//! `chromium` through `chromedriver` headless: enough to log in, fill forms,
//! upload files, read text and take screenshots.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::dicom_net::{free_port, tool, wait_until};
use crate::http::request_open as request;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session; the driver is killed on drop.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = request(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            &[],
            b"",
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Start `chromedriver` and a headless `chromium` session, or `None`
    /// after [`crate::data::missing`] (CI installs both).
    pub fn start() -> Option<Browser> {
        let driver_bin = tool("chromedriver")?;
        let chromium = tool("chromium")?;
        let port = free_port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting chromedriver: {e}"));
        let up = wait_until(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "chromedriver did not listen on {port}");
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1440,1100"],
            },
        } } });
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
        };
        let reply = browser.call("POST", "/session", &capabilities);
        browser.session = reply["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {reply}"))
            .to_owned();
        Some(browser)
    }

    /// One WebDriver command; its `value`.
    fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        let body = if method == "GET" || method == "DELETE" {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let headers = [("content-type", "application/json")];
        if std::env::var_os("CXR_WEBDRIVER_TRACE").is_some() {
            eprintln!("webdriver: {method} {path}");
        }
        let reply = request(self.port, method, path, &headers, &body);
        let value: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        value["value"].clone()
    }

    fn session_call(&self, method: &str, path: &str, body: &Value) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", &json!({ "url": url }));
    }

    /// The element matching `css`, waiting up to `wait` for it to exist.
    pub fn find(&self, css: &str, wait: Duration) -> Option<String> {
        let start = Instant::now();
        loop {
            let found = self.session_call(
                "POST",
                "/element",
                &json!({ "using": "css selector", "value": css }),
            );
            if let Some(id) = found[ELEMENT].as_str() {
                return Some(id.to_owned());
            }
            if start.elapsed() > wait {
                return None;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn must_find(&self, css: &str) -> String {
        self.find(css, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("no element {css} on the page: {}", self.text("body")))
    }

    /// Type `text` into the element (for a file input: the file's path).
    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.must_find(css);
        self.session_call(
            "POST",
            &format!("/element/{id}/value"),
            &json!({ "text": text }),
        );
    }

    pub fn click(&self, css: &str) {
        let id = self.must_find(css);
        self.session_call("POST", &format!("/element/{id}/click"), &json!({}));
    }

    /// The visible text of the first element matching `css` (empty if none).
    pub fn text(&self, css: &str) -> String {
        let script = "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';";
        self.script(script, &[json!(css)])
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Run `script` in the page with `args`; its return value.
    pub fn script(&self, script: &str, args: &[Value]) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            &json!({ "script": script, "args": args }),
        )
    }

    /// Wait up to `wait` for `css`'s text to satisfy `done`; the last text.
    pub fn wait_for_text(
        &self,
        css: &str,
        wait: Duration,
        done: impl Fn(&str) -> bool,
    ) -> (bool, String) {
        let start = Instant::now();
        loop {
            let text = self.text(css);
            if done(&text) {
                return (true, text);
            }
            if start.elapsed() > wait {
                return (false, text);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Save a PNG screenshot of the window to `path`.
    pub fn screenshot(&self, path: &Path) {
        let data = self.session_call("GET", "/screenshot", &Value::Null);
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .unwrap_or_default();
        assert!(png.starts_with(b"\x89PNG"), "no screenshot");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}
