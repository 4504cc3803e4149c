import type { S3Client } from "@aws-sdk/client-s3";
import type { SQSClient } from "@aws-sdk/client-sqs";
import type { Logger } from "pino";
import {
  type DestinationConfig,
  type DispatchConfig,
  type PartnerOverride,
  type PartnersConfig,
  partnerDestination,
  type QueueConfig,
} from "../config.ts";
import type { Destination } from "../destinations/destination.ts";
import { HttpDestination } from "../destinations/http.ts";
import { S3Destination } from "../destinations/s3.ts";
import { SqsDestination } from "../destinations/sqs.ts";
import { InMemoryPartnerLimits } from "./in-memory-limits.ts";
import { Partner } from "./partner.ts";
import type { PartnerLimits } from "./partner-limits.ts";

export interface PartnerDirectoryDeps {
  sqs: SQSClient;
  s3: S3Client;
  log: Logger;
  /** Where HTTP destinations read their tokens (the profile names the variable). */
  env: NodeJS.ProcessEnv;
  /**
   * Every partner's concurrency, rate limits and pauses, keyed by account (default: kept in this
   * process, the window before the directory's creation counted as full). A shared implementation
   * (Redis) holds them across replicas.
   */
  limits?: PartnerLimits;
}

/** A failure of a partner that may have been forgotten since: what `/partners` can still show. */
export interface RecentError {
  message: string;
  atMs: number;
}

/** Recent errors kept for partners no longer active: enough for an operator, bounded whatever the traffic. */
const RECENT_ERRORS = 1000;

/** What one (queue, account) dispatcher runs with. */
export interface Profile {
  dispatch: DispatchConfig;
  destination: Destination;
}

/**
 * Resolves each account's profile (its queue's settings, then the account's overrides) and holds one
 * Partner per active account: the delivery stack (limits, breaker) its dispatchers share. The limits
 * themselves are in `limits`, keyed by account, so they outlive a forgotten Partner.
 */
export class PartnerDirectory {
  readonly #deps: PartnerDirectoryDeps;
  readonly #defaults: DispatchConfig;
  readonly #partners = new Map<string, Partner>();
  readonly #destinations = new Map<string, Destination>();
  readonly #config: PartnersConfig;
  readonly #startedAtMs = Date.now();
  readonly #queueProfiles = new WeakMap<QueueConfig, Profile>();
  /** Last error of partners forgotten since, least recently failed first (a Map keeps insertion order). */
  readonly #recentErrors = new Map<string, RecentError>();
  readonly #recentErrorsMax: number;
  readonly park: S3Destination;
  readonly limits: PartnerLimits;

  constructor(
    deps: PartnerDirectoryDeps,
    config: { dispatch: DispatchConfig; partners: PartnersConfig },
    options: { recentErrors?: number } = {},
  ) {
    this.#deps = deps;
    this.limits = deps.limits ?? new InMemoryPartnerLimits({ startedAtMs: this.#startedAtMs });
    this.#recentErrorsMax = options.recentErrors ?? RECENT_ERRORS;
    this.#defaults = config.dispatch;
    this.#config = config.partners;
    this.park = new S3Destination(
      { s3: deps.s3 },
      {
        type: "s3",
        bucket: config.partners.park.bucket,
        keyTemplate: `${config.partners.park.prefix}{account}/{queue}/{yyyy}/{MM}/{dd}/{batchId}.ndjson.gz`,
        gzip: true,
        serverSideEncryption: "",
        kmsKeyId: "",
      },
    );
  }

  /** The account's delivery stack (limits, breaker), created on first use. */
  partner(account: string): Partner {
    let partner = this.#partners.get(account);
    if (!partner) {
      const profile = mergeProfile(this.#defaults, this.#config.overrides.get(account)?.dispatch);
      partner = new Partner({ log: this.#deps.log, limits: this.limits }, account, profile);
      // A failure from before the partner was last forgotten is still its last error.
      const recent = this.#recentErrors.get(account);
      if (recent) {
        partner.lastError = recent;
        this.#recentErrors.delete(account);
      }
      this.#partners.set(account, partner);
    }
    return partner;
  }

  /** A dispatcher of this account starts: it shares the account's partner. */
  attach(account: string): Partner {
    const partner = this.partner(account);
    partner.dispatchers++;
    return partner;
  }

  /**
   * A dispatcher of this account stopped. With none left and no parked batches to count, the
   * partner is forgotten, whatever its last error or breaker: memory follows active accounts. What
   * must outlive it does: its window and pauses (an open breaker's included) are in the limits, and
   * its last error goes to the bounded recent errors.
   */
  detach(account: string): void {
    const partner = this.#partners.get(account);
    if (!partner) return;
    partner.dispatchers--;
    if (partner.dispatchers > 0 || partner.parkedBatches > 0) return;
    this.#partners.delete(account);
    if (partner.lastError) this.#rememberError(account, partner.lastError);
  }

  /** The last error of the account: its live partner's, or the one kept since it was forgotten. */
  recentError(account: string): RecentError | undefined {
    const partner = this.#partners.get(account);
    return partner ? partner.lastError : this.#recentErrors.get(account);
  }

  /** Last errors of forgotten partners (at most `recentErrors`, 1,000 by default), oldest first. */
  recentErrors(): IterableIterator<[account: string, error: RecentError]> {
    return this.#recentErrors.entries();
  }

  #rememberError(account: string, error: RecentError): void {
    this.#recentErrors.delete(account);
    this.#recentErrors.set(account, error);
    if (this.#recentErrors.size > this.#recentErrorsMax) {
      const oldest = this.#recentErrors.keys().next();
      if (!oldest.done) this.#recentErrors.delete(oldest.value);
    }
  }

  profile(queue: QueueConfig, account: string): Profile {
    const override = this.#config.overrides.get(account);
    if (!override) {
      // Most accounts have no entry of their own: one shared profile per queue.
      let shared = this.#queueProfiles.get(queue);
      if (!shared) {
        shared = this.#resolve(queue, undefined);
        this.#queueProfiles.set(queue, shared);
      }
      return shared;
    }
    return this.#resolve(queue, override);
  }

  #resolve(queue: QueueConfig, override: PartnerOverride | undefined): Profile {
    const dispatch = mergeProfile(queue.dispatch, override?.dispatch);
    // A batch larger than the records limit could never be sent.
    if (dispatch.rateLimit.records > 0)
      dispatch.maxRecords = Math.min(dispatch.maxRecords, dispatch.rateLimit.records);
    return { dispatch, destination: this.destination(partnerDestination(queue, override?.destination)) };
  }

  partners(): IterableIterator<Partner> {
    return this.#partners.values();
  }

  /** One destination object per distinct configuration, shared by every dispatcher using it. */
  destination(config: DestinationConfig): Destination {
    const key = JSON.stringify(config);
    let destination = this.#destinations.get(key);
    if (!destination) {
      const { s3, sqs, env } = this.#deps;
      destination =
        config.type === "s3"
          ? new S3Destination({ s3 }, config)
          : config.type === "http"
            ? new HttpDestination({ env }, config)
            : new SqsDestination({ sqs }, config);
      this.#destinations.set(key, destination);
    }
    return destination;
  }
}

/** `base` with the fields `override` sets; nested objects (rateLimit, breaker, headers) merged one level. */
export function mergeProfile<T extends object>(base: T, override: Partial<T> | undefined): T {
  if (!override) return { ...base };
  const out: Record<string, unknown> = { ...(base as Record<string, unknown>) };
  for (const [key, value] of Object.entries(override)) {
    const current = out[key];
    out[key] =
      typeof value === "object" && value !== null && typeof current === "object" && current !== null
        ? { ...current, ...value }
        : value;
  }
  return out as T;
}
