//! A real headless Chromium for the console's browser tests, driven through `chromedriver`
//! (WebDriver) with fantoccini. [`Driver::start`] finds `chromium` and `chromedriver` (Debian's
//! packages, which the test command installs); without them the test says it was skipped, and
//! in CI (`CI=true`) it fails instead. Screenshots go to `$RAPPORT_SCREENSHOTS` when it is set.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// A running `chromedriver`, stopped when dropped.
pub struct Driver {
    child: tokio::process::Child,
    port: u16,
    profile: PathBuf,
}

fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

impl Driver {
    pub async fn start() -> Option<Driver> {
        let browser = find(&["chromium", "chromium-browser", "google-chrome"]);
        let driver = find(&["chromedriver"]);
        let (Some(browser), Some(driver)) = (browser, driver) else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must run the browser tests, but chromium or chromedriver is missing (scripts/setup installs them)"
            );
            eprintln!(
                "SKIPPED: the browser test needs chromium and chromedriver (scripts/setup installs them)"
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let profile =
            std::env::temp_dir().join(format!("rapport-chromium-{}", uuid::Uuid::now_v7()));
        let driver = Driver {
            child,
            port,
            profile,
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                let _ = BROWSER.set(browser.display().to_string());
                return Some(driver);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("chromedriver did not start on port {port}");
    }

    /// A new browser session: headless, sandbox off (the tests run as root), no background
    /// networking (the machine has no network beyond loopback).
    pub async fn session(&self) -> Browser {
        let binary = BROWSER.get().expect("a browser was found").clone();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": binary,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-quic", "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                         "--lang=en-US", format!("--user-data-dir={}", self.profile.display())]
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a chromium session");
        Browser { client }
    }
}

/// The browser binary [`Driver::start`] found.
static BROWSER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// One browser session, with the few steps the tests take.
pub struct Browser {
    client: Client,
}

impl Browser {
    pub async fn goto(&self, url: &str) -> Result<(), fantoccini::error::CmdError> {
        self.client.goto(url).await
    }

    /// Waits (up to 10 s) until `selector` matches an element.
    pub async fn wait_for(&self, selector: &str) {
        let found = self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(selector))
            .await;
        if found.is_err() {
            let source = self.client.source().await.unwrap_or_default();
            panic!(
                "`{selector}` did not appear on {}: {source}",
                self.current_url().await
            );
        }
    }

    pub async fn fill(&self, selector: &str, text: &str) {
        let element = self
            .client
            .find(Locator::Css(selector))
            .await
            .expect(selector);
        element.clear().await.expect("clear");
        element.send_keys(text).await.expect("type");
    }

    pub async fn click(&self, selector: &str) {
        self.client
            .find(Locator::Css(selector))
            .await
            .expect(selector)
            .click()
            .await
            .expect("click");
    }

    /// Chooses the option of value `value` in the `select` of `selector`.
    pub async fn select(&self, selector: &str, value: &str) {
        self.client
            .find(Locator::Css(selector))
            .await
            .expect(selector)
            .select_by_value(value)
            .await
            .expect("select");
    }

    pub async fn text(&self, selector: &str) -> String {
        self.client
            .find(Locator::Css(selector))
            .await
            .expect(selector)
            .text()
            .await
            .expect("text")
    }

    pub async fn value(&self, selector: &str) -> String {
        self.client
            .find(Locator::Css(selector))
            .await
            .expect(selector)
            .prop("value")
            .await
            .expect("value")
            .unwrap_or_default()
    }

    pub async fn current_url(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|url| url.to_string())
            .unwrap_or_default()
    }

    /// Scrolls the page so that `selector`'s element is at the top (before a screenshot).
    pub async fn scroll_to(&self, selector: &str) {
        self.client
            .execute(
                "document.querySelector(arguments[0]).scrollIntoView()",
                vec![serde_json::json!(selector)],
            )
            .await
            .expect("scroll");
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("resize");
    }

    /// Saves a screenshot as `$RAPPORT_SCREENSHOTS/<name>.png` when that is set.
    pub async fn shot(&self, name: &str) {
        let Some(dir) = std::env::var_os("RAPPORT_SCREENSHOTS") else {
            return;
        };
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::create_dir_all(&dir).expect("screenshot directory");
        std::fs::write(PathBuf::from(dir).join(format!("{name}.png")), png)
            .expect("write screenshot");
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}
