/**
 * What a valid value of each key looks like. Each format is a name in FORMATS (registered with
 * convict for the top level by layers.ts, used as is for the per-queue and per-partner entries), an
 * array of allowed values, or String / Object. Each message says what is valid. Strings (from env
 * vars) become numbers or booleans only when they are exactly that, so "lots" or "25s" is reported
 * as written instead of turning into NaN or 25.
 */
import { withoutSecrets } from "./redact.ts";

export interface Format {
  validate(value: unknown): void;
  coerce?: (value: unknown) => unknown;
}

/** How a key's definition names its format (convict's vocabulary). */
export type FormatSpec = string | readonly string[] | StringConstructor | ObjectConstructor;

/** Every named format, by name. */
export const FORMATS = new Map<string, Format>();

function addFormat(name: string, format: Format): string {
  if (!FORMATS.has(name)) FORMATS.set(name, format);
  return name;
}

/** The SQS hard limits the definitions check against. */
export const SQS_MAX_RECEIVE_BATCH = 10;
export const SQS_MAX_WAIT_SEC = 20;
export const SQS_MAX_VISIBILITY_SEC = 43_200;
/** The largest SQS message: a queue's byte budget must hold at least one. */
export const SQS_MAX_MESSAGE_BYTES = 1_048_576;
/** The fields an S3 object key may hold. */
export const KEY_FIELDS = ["queue", "account", "yyyy", "MM", "dd", "HH", "mm", "batchId"] as const;

/** What a value is, for messages that must not (or need not) quote it. */
export function kindOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object") return "an object";
  if (typeof value === "string") return "a string";
  if (typeof value === "number") return "a number";
  return typeof value;
}

/** `kindOf`, quoting scalars: `an object`, `a string "orders"`. */
export const described = (value: unknown) =>
  typeof value === "object" || value === undefined
    ? kindOf(value)
    : `${kindOf(value)} ${JSON.stringify(value)}`;

export const isPlainObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value);

const wholeNumber = (value: unknown) =>
  typeof value === "string" && /^\s*-?\d+\s*$/.test(value) ? Number(value) : value;

/** Registers (once) and names a whole-number format for [min, max]. */
export function intFormat(min: number, max: number, what: string): string {
  return addFormat(`int ${min}..${max} ${what}`, {
    coerce: wholeNumber,
    validate(value: unknown) {
      if (!Number.isInteger(value) || (value as number) < min || (value as number) > max) {
        throw new Error(
          `must be a whole number from ${min} to ${max}${what ? ` (${what})` : ""}; got ${JSON.stringify(value)}`,
        );
      }
    },
  });
}

export const POSITIVE_INT = intFormat(1, Number.MAX_SAFE_INTEGER, "");

export const STRICT_BOOLEAN = addFormat("strict-boolean", {
  coerce: (value: unknown) => (value === "true" ? true : value === "false" ? false : value),
  validate(value: unknown) {
    if (typeof value !== "boolean") throw new Error(`must be true or false; got ${JSON.stringify(value)}`);
  },
});

export const STRING_MAP = addFormat("string-map", {
  validate(value: unknown) {
    if (!isPlainObject(value)) {
      throw new Error(`must be an object of string values; got ${JSON.stringify(value)}`);
    }
    for (const [k, v] of Object.entries(value)) {
      if (typeof v !== "string") throw new Error(`must map to strings; ${k} is ${JSON.stringify(v)}`);
    }
  },
});

export const STRING_LIST = addFormat("string-list", {
  validate(value: unknown) {
    if (!Array.isArray(value) || value.some((v) => typeof v !== "string")) {
      throw new Error(`must be an array of strings; got ${JSON.stringify(value)}`);
    }
  },
});

export function queueListMessage(value: unknown): string {
  return `must be an array of { "queue": ..., "handler": ... } entries; got ${kindOf(value)}`;
}

export const QUEUE_LIST = addFormat("queue-list", {
  validate(value: unknown) {
    if (!Array.isArray(value)) throw new Error(queueListMessage(value));
  },
});

export const FRACTION = addFormat("fraction", {
  coerce: (value: unknown) =>
    typeof value === "string" && value.trim() !== "" && !Number.isNaN(Number(value)) ? Number(value) : value,
  validate(value: unknown) {
    if (typeof value !== "number" || !(value > 0 && value <= 1)) {
      throw new Error(`must be a number above 0 and at most 1; got ${JSON.stringify(value)}`);
    }
  },
});

export const REQUIRED_STRING = addFormat("required-string", {
  validate(value: unknown) {
    if (typeof value !== "string" || value.trim() === "") {
      throw new Error(`is required (a non-empty string); got ${JSON.stringify(value)}`);
    }
  },
});

export const KEY_TEMPLATE = addFormat("key-template", {
  validate(value: unknown) {
    if (typeof value !== "string") throw new Error(`must be a string; got ${JSON.stringify(value)}`);
    for (const [, field] of value.matchAll(/\{([^}]*)\}/g)) {
      if (!KEY_FIELDS.includes(field as (typeof KEY_FIELDS)[number])) {
        throw new Error(`has unknown field {${field}}; valid fields: {${KEY_FIELDS.join("} {")}}`);
      }
    }
    for (const needed of ["account", "batchId"]) {
      if (!value.includes(`{${needed}}`)) {
        throw new Error(
          `must contain {${needed}} (${needed === "batchId" ? "else batches overwrite each other" : "else partners share objects"}); got ${JSON.stringify(value)}`,
        );
      }
    }
  },
});

export const UNACKED_BYTES = addFormat("unacked-bytes", {
  coerce: wholeNumber,
  validate(value: unknown) {
    if (!Number.isInteger(value) || (value as number) < SQS_MAX_MESSAGE_BYTES) {
      throw new Error(
        `must be a whole number of bytes, at least ${SQS_MAX_MESSAGE_BYTES} (1 MiB: one SQS message can be that large); got ${JSON.stringify(value)}`,
      );
    }
  },
});

// Secrets: the messages name what is wrong, never the value (convict omits it too: `sensitive`).
export const REDIS_URL = addFormat("redis-url", {
  validate(value: unknown) {
    if (typeof value !== "string") throw new Error(`must be a string; got ${kindOf(value)}`);
    if (value === "") return;
    let url: URL | undefined;
    try {
      url = new URL(value);
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== "redis:" && url.protocol !== "rediss:") || url.hostname === "") {
      throw new Error(
        `must be a redis://host:port or rediss://host:port URL, or "" for in-memory limits in one process; got ${JSON.stringify(withoutSecrets(value))}`,
      );
    }
  },
});

export const OPS_TOKEN = addFormat("ops-token", {
  validate(value: unknown) {
    if (typeof value !== "string") throw new Error(`must be a string; got ${kindOf(value)}`);
    if (value !== value.trim()) {
      throw new Error(
        "has leading or trailing whitespace (a newline at the end of the secret file?); strip it: clients never send it",
      );
    }
  },
});

/** The lease floor: below a second, renewals (every third of it) would be most of the Redis traffic. */
export const MIN_LEASE_MS = 1000;

export const LEASE_MS = addFormat("lease-ms", {
  coerce: wholeNumber,
  validate(value: unknown) {
    if (!Number.isInteger(value) || (value as number) < MIN_LEASE_MS) {
      throw new Error(
        `must be a whole number of milliseconds, at least ${MIN_LEASE_MS}, and above the longest destination timeoutMs (default 30000); got ${JSON.stringify(value)}`,
      );
    }
  },
});

export const KEY_PREFIX = addFormat("key-prefix", {
  validate(value: unknown) {
    if (typeof value !== "string" || !/^[^\s{}]+$/.test(value)) {
      throw new Error(
        `must be a non-empty string without spaces or braces (braces are Redis Cluster hash tags); got ${JSON.stringify(value)}`,
      );
    }
  },
});

/** The validation convict gives a format, as a function: for entries checked without convict. */
export function formatCheck(format: FormatSpec): Format {
  const builtin = (name: string, ok: (v: unknown) => boolean): Format => ({
    validate(value) {
      if (!ok(value)) throw new Error(`must be of type ${name}`);
    },
  });
  if (format === String) return builtin("String", (v) => typeof v === "string");
  if (format === Object) return builtin("Object", isPlainObject);
  if (Array.isArray(format)) {
    return {
      validate(value) {
        if (!format.includes(value)) {
          throw new Error(`must be one of the possible values: ${JSON.stringify(format)}`);
        }
      },
    };
  }
  const named = typeof format === "string" ? FORMATS.get(format) : undefined;
  if (!named) throw new Error(`config schema: unknown format ${String(format)}`);
  return named;
}
