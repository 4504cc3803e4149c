/**
 * Per-account overrides from `partners.accounts` and the partners file (`partners.file`, for
 * thousands of accounts). Each entry is checked against PARTNER_ENTRY_KEYS, compiled once; only the
 * keys it sets are kept, to apply over its queue's settings. Also where parked batches go.
 */
import { readFileSync } from "node:fs";
import { PARTNER_ENTRY_KEYS } from "./definitions.ts";
import { type DestinationBlock, destinationProblems } from "./destinations.ts";
import { checkEntry, compile, type EntryProblems } from "./entries.ts";
import { isPlainObject } from "./formats.ts";
import { parseJson } from "./json.ts";
import { overDestination } from "./merge.ts";
import type {
  DestinationFields,
  DestinationOverride,
  DispatchConfig,
  PartnerOverride,
  PartnersConfig,
} from "./types.ts";

const PARTNER_SECTION = compile(PARTNER_ENTRY_KEYS);

export function loadPartners(
  section: { accounts: Record<string, unknown>; file: string; park: PartnersConfig["park"] },
  queueOutages: DispatchConfig["onOutage"][],
  dispatch: DispatchConfig,
  destination: DestinationFields,
  problems: string[],
): { partners: PartnersConfig; partnerBlocks: DestinationBlock[]; parks: boolean } {
  const entries: [string, unknown, string][] = Object.entries(section.accounts).map(([account, raw]) => [
    account,
    raw,
    `partners.accounts.${account}`,
  ]);
  const file = section.file;
  if (file) {
    try {
      const fromFile = parseJson(readFileSync(file, "utf8"), file);
      if (!isPlainObject(fromFile)) {
        problems.push(`partners.file: ${file} must hold an object { "account": { ... } }`);
      } else {
        for (const [account, raw] of Object.entries(fromFile))
          entries.push([account, raw, `partners.file[${account}]`]);
      }
    } catch (err) {
      problems.push(`partners.file: cannot read ${JSON.stringify(file)}: ${(err as Error).message}`);
    }
  }
  const overrides = new Map<string, PartnerOverride>();
  const partnerBlocks: DestinationBlock[] = [];
  let parks = dispatch.onOutage === "park" || queueOutages.includes("park");
  for (const [account, raw, at] of entries) {
    if (!isPlainObject(raw)) {
      problems.push(
        `${at}: must be an object of overrides like { "rateLimit": { "requests": 10 } }; got ${JSON.stringify(raw)}`,
      );
      continue;
    }
    const out: EntryProblems = { invalid: [], unknown: [] };
    const set = checkEntry(PARTNER_SECTION, raw, `${at}.`, out);
    const found = [...out.invalid, ...out.unknown];
    const { destination: setDestination, ...setDispatch } = set as {
      destination?: DestinationOverride;
    } & Partial<DispatchConfig>;
    if (setDestination && !found.some((p) => p.startsWith(`${at}.destination.`))) {
      found.push(...destinationProblems(overDestination(destination, setDestination), `${at}.destination`));
    }
    problems.push(...found);
    if (found.length > 0) continue;
    overrides.set(account, { dispatch: setDispatch, destination: setDestination });
    if (setDestination) partnerBlocks.push({ at: `${at}.destination`, set: setDestination });
    if (setDispatch.onOutage === "park") parks = true;
  }
  const park = section.park;
  if (
    parks &&
    !park.bucket &&
    (destination.type !== "s3" || !destination.bucket || destination.bucket.includes("{"))
  ) {
    problems.push(
      'partners.park.bucket: is required when a profile parks (onOutage "park") and destination.bucket is not one fixed S3 bucket; got ""',
    );
  }
  return {
    partners: { overrides, park: { bucket: park.bucket || destination.bucket, prefix: park.prefix } },
    partnerBlocks,
    parks,
  };
}
