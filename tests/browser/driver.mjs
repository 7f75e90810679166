// A thin JSON-lines RPC in front of playwright-core driving Debian's headless chromium, for
// tests/integration/test_90_browser.py (pytest keeps the brokers, the bridge and the asserts;
// this only runs the browser). One request per stdin line, one answer per stdout line:
//   {"id":1,"cmd":"open","page":"p","url":"http://app.test/x","html":"..."}  (html: served at url)
//   {"id":2,"cmd":"eval","page":"p","expr":"1+1"}            -> {"id":2,"ok":true,"value":2}
//   {"id":3,"cmd":"wait","page":"p","expr":"window.x>3","ms":5000}
//   {"id":4,"cmd":"screenshot","page":"p","path":"/tmp/x.png"}
//   {"id":5,"cmd":"close","page":"p"}   {"id":6,"cmd":"quit"}
// Errors answer {"id":N,"ok":false,"error":"..."}; page errors and console errors are kept
// per page and returned by {"cmd":"errors","page":"p"}.
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const executablePath = process.env.WSB_CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
        "--no-sandbox", // root in CI
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ],
});
const context = await browser.newContext();
const pages = new Map();

function answer(obj) {
    process.stdout.write(JSON.stringify(obj) + "\n");
}

async function handle(req) {
    switch (req.cmd) {
        case "open": {
            const page = await context.newPage();
            const errors = [];
            page.on("pageerror", (e) => errors.push("pageerror: " + e.message));
            page.on("console", (m) => {
                if (m.type() === "error") errors.push("console: " + m.text());
            });
            pages.set(req.page, { page, errors });
            if (req.html !== undefined) {
                const base = req.url.split("?")[0];
                await page.route((u) => u.href.split("?")[0] === base, (route) =>
                    route.fulfill({ status: 200, contentType: "text/html; charset=utf-8", body: req.html })
                );
            }
            await page.goto(req.url, { waitUntil: "load", timeout: req.ms || 15000 });
            return null;
        }
        case "eval":
            return await pages.get(req.page).page.evaluate(req.expr);
        case "wait":
            await pages.get(req.page).page.waitForFunction(req.expr, null, {
                timeout: req.ms || 10000,
                polling: 50,
            });
            return await pages.get(req.page).page.evaluate(req.expr);
        case "screenshot":
            await pages.get(req.page).page.screenshot({ path: req.path, fullPage: true });
            return req.path;
        case "errors":
            return pages.get(req.page).errors;
        case "close": {
            const p = pages.get(req.page);
            pages.delete(req.page);
            if (p) await p.page.close();
            return null;
        }
        case "quit":
            await browser.close();
            answer({ id: req.id, ok: true, value: null });
            process.exit(0);
        default:
            throw new Error("unknown command " + req.cmd);
    }
}

answer({ id: 0, ok: true, value: browser.version() });
const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
    if (!line.trim()) continue;
    let req;
    try {
        req = JSON.parse(line);
    } catch (e) {
        answer({ id: null, ok: false, error: "bad request: " + e.message });
        continue;
    }
    try {
        answer({ id: req.id, ok: true, value: (await handle(req)) ?? null });
    } catch (e) {
        answer({ id: req.id, ok: false, error: String((e && e.message) || e) });
    }
}
await browser.close();
