/**
 * The bench's messages: JSON order events of a given size, each naming its `account` and carrying the
 * time it was sent (`sentAt`, ms epoch) as its first field, so an observer can read it without
 * parsing the body. The same spec and seed give the same sequence of accounts and payloads.
 */
import { prng, zipfSampler } from "./zipf.ts";

export interface TrafficSpec {
  /** Distinct accounts messages are spread over. */
  accounts: number;
  /** "zipf": ranks drawn Zipf(1); "distinct": message i goes to account i mod `accounts`. */
  distribution: "zipf" | "distinct";
  accountPrefix: string;
  /** Body size to aim at, in bytes (each body is padded to exactly this when it is larger than the head). */
  sizeBytes: number;
  seed: number;
}

/** Where `sentAt` sits in every body: `{"sentAt":` is 10 characters, a ms epoch is 13 digits. */
const SENT_AT_PREFIX = '{"sentAt":';

/** Reads `sentAt` from a bench body without parsing it; NaN for any other body. */
export function sentAtOf(body: string | undefined): number {
  if (!body?.startsWith(SENT_AT_PREFIX)) return Number.NaN;
  return Number(body.slice(SENT_AT_PREFIX.length, SENT_AT_PREFIX.length + 13));
}

export class Traffic {
  readonly spec: TrafficSpec;
  readonly #random: () => number;
  readonly #rank: () => number;
  #n = 0;

  constructor(spec: TrafficSpec) {
    this.spec = spec;
    this.#random = prng(spec.seed);
    this.#rank =
      spec.distribution === "zipf" ? zipfSampler(spec.accounts, this.#random) : () => this.#n % spec.accounts;
  }

  /** Messages made so far. */
  get made(): number {
    return this.#n;
  }

  accountName(rank: number): string {
    return `${this.spec.accountPrefix}-${String(rank).padStart(5, "0")}`;
  }

  next(sentAtMs: number): string {
    const account = this.accountName(this.#rank());
    const n = this.#n++;
    const head = `${SENT_AT_PREFIX}${sentAtMs},"account":"${account}","event":"order.created","n":${n},"currency":"EUR","items":[`;
    const tail = '],"pad":"';
    const room = this.spec.sizeBytes - head.length - tail.length - 2;
    const parts: string[] = [];
    let used = 0;
    for (;;) {
      const item = `{"sku":"sku-${Math.floor(this.#random() * 90_000) + 10_000}","qty":${1 + Math.floor(this.#random() * 5)},"price":${(this.#random() * 200).toFixed(2)}}`;
      const cost = item.length + (parts.length > 0 ? 1 : 0);
      if (used + cost > room) break;
      parts.push(item);
      used += cost;
    }
    const pad = "x".repeat(Math.max(0, room - used));
    return `${head}${parts.join(",")}${tail}${pad}"}`;
  }
}
