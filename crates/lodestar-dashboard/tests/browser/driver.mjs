// Drives the dashboard page in headless Chromium (Debian's `chromium`, through
// playwright-core; no browser is downloaded) for crates/lodestar-dashboard/tests/browser.rs.
//
// Usage: node driver.mjs URL
// The Rust test holds the scenario: it writes one command per line on stdin and
// reads one answer per command on stdout, `ok ...` or `fail ...`:
//   wait SELECTOR           until an element matches and is visible (10 s)
//   gone SELECTOR           until no element matches (10 s)
//   text SELECTOR || TEXT   until the element's text contains TEXT (10 s)
//   hash ROUTE              sets location.hash (in-page navigation, no reload)
//   fill SELECTOR || VALUE  types VALUE into an input
//   click SELECTOR          clicks
//   shot PATH               saves a full-page screenshot
//   same-page               whether the page was never reloaded since start
//   quit
// The browser's console errors and failed requests are reported as `log ...` lines.
import { chromium } from "playwright-core";
import readline from "node:readline";

const url = process.argv[2];
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
// Generous: CI runs these beside other tests on two cores.
const TIMEOUT = 10000;

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
let code = 0;
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 800 } });
  page.on("console", (m) => { if (m.type() === "error") console.log(`log console: ${m.text()}`); });
  page.on("pageerror", (e) => console.log(`log pageerror: ${e.message}`));
  await page.goto(url, { waitUntil: "load", timeout: 15000 });
  // Gone on a reload: `same-page` tells whether changes came without one.
  await page.evaluate(() => { window.__lodestarMark = 1; });
  console.log("ok ready");

  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    const [command, ...rest] = line.split(" ");
    const arg = rest.join(" ");
    const started = Date.now();
    try {
      if (command === "quit") break;
      if (command === "wait") {
        await page.waitForSelector(arg, { state: "visible", timeout: TIMEOUT });
      } else if (command === "gone") {
        await page.waitForSelector(arg, { state: "detached", timeout: TIMEOUT });
      } else if (command === "text") {
        const [selector, want] = arg.split(" || ");
        await page.waitForFunction(
          ([s, w]) => document.querySelector(s)?.textContent.includes(w),
          [selector, want],
          { timeout: TIMEOUT },
        );
      } else if (command === "hash") {
        await page.evaluate((h) => { location.hash = h; }, arg);
      } else if (command === "fill") {
        const [selector, value] = arg.split(" || ");
        await page.fill(selector, value, { timeout: TIMEOUT });
      } else if (command === "click") {
        await page.click(arg, { timeout: TIMEOUT });
      } else if (command === "shot") {
        await page.screenshot({ path: arg, fullPage: true });
      } else if (command === "same-page") {
        const marked = await page.evaluate(() => window.__lodestarMark === 1);
        if (!marked) throw new Error("the page was reloaded");
      } else {
        throw new Error(`unknown command ${command}`);
      }
      console.log(`ok ${line} (${Date.now() - started} ms)`);
    } catch (e) {
      const text = await page.evaluate(() => document.body.innerText).catch(() => "");
      console.log(`fail ${line}: ${String(e.message).split("\n")[0]} | page: ${text.replace(/\s+/g, " ").slice(0, 800)}`);
    }
  }
} catch (e) {
  console.log(`fail start: ${e.message}`);
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
