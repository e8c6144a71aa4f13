// browser.mjs: launches Debian's headless Chromium (/usr/bin/chromium, or
// $CHROMIUM) through playwright-core, with a fresh user-data-dir per context.
// Never downloads a browser.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
export const ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/** A browser context on a fresh profile; close() also removes the profile. */
export async function launch(options = {}) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "connmix-chromium-"));
    const context = await chromium.launchPersistentContext(dir, {
        executablePath: CHROMIUM,
        headless: true,
        args: ARGS,
        viewport: { width: 1200, height: 900 },
        ...options,
    });
    const page = context.pages()[0] ?? (await context.newPage());
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    return {
        context,
        page,
        errors,
        async close() {
            await context.close();
            fs.rmSync(dir, { recursive: true, force: true });
        },
    };
}
