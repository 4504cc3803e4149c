/**
 * Checks of destination blocks beyond each field's format: what a type requires, and fields set
 * where no destination reads them. URLs are shown without their secrets.
 */
import { DESTINATION_TYPE_KEYS } from "./definitions.ts";
import { isPlainObject } from "./formats.ts";
import { withoutSecrets } from "./redact.ts";
import type { DestinationFields, DestinationType } from "./types.ts";

/** The fields each type reads. */
const DESTINATION_FIELDS = Object.fromEntries(
  Object.entries(DESTINATION_TYPE_KEYS).map(([type, keys]) => [type, Object.keys(keys)]),
) as Record<DestinationType, string[]>;

const TEMPLATE_FIELDS = ["account", "queue"];

/** What a resolved destination (a queue's, or a partner's over it) is missing or has wrong. */
export function destinationProblems(d: DestinationFields, at: string): string[] {
  const problems: string[] = [];
  const templated = (key: "bucket" | "url" | "queueUrl", value: string, fix: string) => {
    if (!value) problems.push(`${at}.${key}: is required for a ${d.type} destination; got ""; ${fix}`);
    for (const [, field] of value.matchAll(/\{([^}]*)\}/g)) {
      if (!TEMPLATE_FIELDS.includes(field as string)) {
        problems.push(
          `${at}.${key}: unknown field {${field}} in ${JSON.stringify(withoutSecrets(value))}; valid: {account} {queue}`,
        );
      }
    }
  };
  if (d.type === "s3") {
    templated("bucket", d.bucket, "set destination.bucket in config or OCTORELAY_S3_BUCKET");
    if (d.serverSideEncryption !== "aws:kms" && d.kmsKeyId) {
      problems.push(
        `${at}.kmsKeyId: only used with serverSideEncryption "aws:kms"; got ${JSON.stringify(d.kmsKeyId)}`,
      );
    }
  } else if (d.type === "http") {
    templated("url", d.url, "set the partner's endpoint");
    if (d.url && !/^https?:\/\//.test(d.url))
      problems.push(`${at}.url: must be an http(s) URL; got ${JSON.stringify(withoutSecrets(d.url))}`);
  } else {
    templated("queueUrl", d.queueUrl, "set the partner's queue URL");
  }
  return problems;
}

/** A destination block (a queue's or a partner's): where it is, and the fields it sets itself. */
export interface DestinationBlock {
  at: string;
  set: Record<string, unknown>;
}

/** The destination keys the top-level block sets, with where: a file, the overrides or the environment. */
export function topDestinationKeys(
  layers: { source: string; values: Record<string, unknown> }[],
  env: NodeJS.ProcessEnv,
): Map<string, string> {
  const set = new Map<string, string>();
  for (const { source, values } of layers) {
    if (!isPlainObject(values.destination)) continue;
    for (const key of Object.keys(values.destination)) set.set(key, source);
  }
  if (env.OCTORELAY_S3_BUCKET) set.set("bucket", "OCTORELAY_S3_BUCKET");
  return set;
}

/**
 * Destination fields that no destination reads: set in a block whose type (or every type it
 * applies to) has no use for them, like `gzip` on an HTTP partner. A partner's block applies over
 * each queue's, which applies over the top-level one; a field counts as used if any destination
 * that takes it from that block reads it.
 */
export function unusedDestinationFields(
  top: { values: DestinationFields; set: Map<string, string> },
  queues: DestinationBlock[],
  partners: DestinationBlock[],
  parkUsesTopBucket: boolean,
): string[] {
  const problems: string[] = [];
  type Resolved = (field: string) => unknown;
  const resolved =
    (queue: DestinationBlock, partner: DestinationBlock | undefined): Resolved =>
    (field) =>
      partner?.set[field] ?? queue.set[field] ?? (top.values as unknown as Record<string, unknown>)[field];
  const typeOf = (r: Resolved) => r("type") as DestinationType;
  const reads = (r: Resolved, field: string) =>
    DESTINATION_FIELDS[typeOf(r)].includes(field) && (field !== "authScheme" || r("authTokenEnv") !== "");
  /** Refuses `field` of the block at `at` unless one of the destinations taking it from there reads it. */
  const unused = (at: string, field: string, takers: () => Iterable<Resolved>) => {
    for (const r of takers()) if (reads(r, field)) return;
    const types = [...new Set([...takers()].map(typeOf))];
    const owner = (Object.keys(DESTINATION_FIELDS) as DestinationType[]).find((t) =>
      DESTINATION_FIELDS[t].includes(field),
    );
    if (types.length === 0) {
      problems.push(
        `${at}.${field}: not used: every queue sets its own destination.${field}; remove it from the top level`,
      );
    } else if (field === "authScheme" && types.every((t) => t === "http")) {
      problems.push(
        `${at}.authScheme: not used without authTokenEnv (no token, no Authorization header); set authTokenEnv to the variable holding the token, or remove authScheme`,
      );
    } else if (owner) {
      const names = types.map((t) => `"${t}"`).join(" and ");
      problems.push(
        `${at}.${field}: not used by ${names} destinations (${field} is a setting of "${owner}" destinations); remove it, or set destination.type to "${owner}"`,
      );
    }
  };
  const fields = (set: Record<string, unknown> | Map<string, string>) =>
    [...(set instanceof Map ? set.keys() : Object.keys(set))].filter((f) => f !== "type");

  for (const partner of partners) {
    for (const field of fields(partner.set)) {
      unused(partner.at, field, function* () {
        for (const queue of queues) yield resolved(queue, partner);
      });
    }
  }
  for (const block of queues) {
    for (const field of fields(block.set)) {
      unused(block.at, field, function* () {
        yield resolved(block, undefined);
        for (const p of partners) if (!(field in p.set)) yield resolved(block, p);
      });
    }
  }
  for (const field of fields(top.set)) {
    if (field === "bucket" && parkUsesTopBucket && top.values.type === "s3") continue;
    const before = problems.length;
    unused("destination", field, function* () {
      for (const block of queues) {
        if (field in block.set) continue;
        yield resolved(block, undefined);
        for (const p of partners) if (!(field in p.set)) yield resolved(block, p);
      }
    });
    if (problems.length > before && top.set.get(field) === "OCTORELAY_S3_BUCKET") {
      problems[problems.length - 1] += " (it comes from OCTORELAY_S3_BUCKET: unset it)";
    }
  }
  return problems;
}
