/**
 * A real headless Chromium for the console tests: the Debian package's /usr/bin/chromium, driven by
 * playwright-core (which downloads no browser of its own). Each launch gets a fresh profile.
 */
import { existsSync, mkdirSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { type Browser, chromium } from "playwright-core";

export const CHROMIUM = "/usr/bin/chromium";

/** Where the screenshots of a run go (not committed). */
export const SCREENSHOTS = fileURLToPath(new URL("../../test-results/console/", import.meta.url));

export async function launchBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} not found: the browser tests need Chromium (apt-get install chromium)`);
  }
  // launch() gives every browser a new temporary user-data-dir, removed when it closes.
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

export function screenshotPath(name: string): string {
  mkdirSync(SCREENSHOTS, { recursive: true });
  return resolve(SCREENSHOTS, `${name}.png`);
}
