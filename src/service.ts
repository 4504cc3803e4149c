import type { Logger } from "pino";
import type { AwsClients } from "./aws-clients.ts";
import type { Config } from "./config.ts";
import { PartnerDirectory } from "./partners/directory.ts";
import type { PartnerState } from "./partners/partner.ts";
import type { PartnerLimits } from "./partners/partner-limits.ts";
import { Relay } from "./pipeline/relay.ts";

/** What an operator sees of one partner. */
export interface PartnerSnapshot {
  account: string;
  state: PartnerState;
  dispatchers: number;
  buffered: number;
  inFlight: number;
  oldestBufferedAgeMs: number | undefined;
  parkedBatches: number;
  lastError: string | undefined;
  lastErrorAgeMs: number | undefined;
  /**
   * Why a partner holding records is not being called although nothing is wrong with it: its limits
   * cannot be granted (a rate-limited partner while the shared limits store is unreachable). Absent
   * otherwise. Not the partner's own error, so `lastError` does not show it.
   */
  waitingFor?: string;
}

/** A partner this process holds nothing for (forgotten, or known only from shared state). */
export function emptySnapshot(account: string): PartnerSnapshot {
  return {
    account,
    state: "idle",
    dispatchers: 0,
    buffered: 0,
    inFlight: 0,
    oldestBufferedAgeMs: undefined,
    parkedBatches: 0,
    lastError: undefined,
    lastErrorAgeMs: undefined,
  };
}

/** Every configured queue's relay, started together and stopped together under one deadline. */
export class Service {
  readonly relays: Relay[];
  readonly partners: PartnerDirectory;
  readonly #log: Logger;
  readonly #config: Config;
  #draining = false;

  /**
   * `limits`: the partners' limits layer (src/partners/cluster.ts builds it from `cluster.redis.url`: in this
   * process, or Redis in cluster mode). Without it, limits are kept in this process. It is closed
   * after the drain; a Redis connection behind it is the caller's to quit after that.
   */
  constructor(
    deps: Pick<AwsClients, "sqs" | "s3"> &
      Partial<Pick<AwsClients, "sqsPolls">> & {
        log: Logger;
        env?: NodeJS.ProcessEnv;
        limits?: PartnerLimits;
      },
    config: Config,
  ) {
    this.#config = config;
    this.#log = deps.log;
    this.partners = new PartnerDirectory(
      {
        sqs: deps.sqs,
        s3: deps.s3,
        log: deps.log,
        env: deps.env ?? process.env,
        ...(deps.limits ? { limits: deps.limits } : {}),
      },
      { dispatch: config.dispatch, partners: config.partners },
    );
    this.relays = config.queues.map(
      (q) =>
        new Relay(
          {
            sqs: deps.sqs,
            ...(deps.sqsPolls ? { sqsPolls: deps.sqsPolls } : {}),
            log: deps.log,
            partners: this.partners,
          },
          q,
        ),
    );
  }

  /**
   * Every active partner (and those with parked batches), with what it holds across queues, then
   * the forgotten ones whose recent error is still remembered (bounded), as idle.
   */
  partnerSnapshots(nowMs = Date.now()): PartnerSnapshot[] {
    const health = this.partners.limits.health();
    const limitsDown = health.ok
      ? undefined
      : `partner limits: ${health.reason}; not called until the store answers again`;
    const active = [...this.partners.partners()].map((p): PartnerSnapshot => {
      let buffered = 0;
      let inFlight = 0;
      let oldest: number | undefined;
      for (const relay of this.relays) {
        const d = relay.dispatcherOf(p.account);
        if (!d) continue;
        buffered += d.buffered;
        inFlight += d.inFlightRecords;
        if (d.oldestBufferedAtMs !== undefined && (oldest === undefined || d.oldestBufferedAtMs < oldest)) {
          oldest = d.oldestBufferedAtMs;
        }
      }
      return {
        account: p.account,
        state: p.state(),
        dispatchers: p.dispatchers,
        buffered,
        inFlight,
        oldestBufferedAgeMs: oldest === undefined ? undefined : nowMs - oldest,
        parkedBatches: p.parkedBatches,
        lastError: p.lastError?.message,
        lastErrorAgeMs: p.lastError ? nowMs - p.lastError.atMs : undefined,
        ...(limitsDown && p.rateLimited ? { waitingFor: limitsDown } : {}),
      };
    });
    const forgotten = [...this.partners.recentErrors()].map(
      ([account, error]): PartnerSnapshot => ({
        ...emptySnapshot(account),
        lastError: error.message,
        lastErrorAgeMs: nowMs - error.atMs,
      }),
    );
    return active.concat(forgotten);
  }

  async start(): Promise<void> {
    const results = await Promise.allSettled(this.relays.map((r) => r.start()));
    const failed = results.flatMap((r, i) =>
      r.status === "rejected" ? [{ queue: this.relays[i]?.options.name, err: r.reason }] : [],
    );
    if (failed.length > 0) {
      await this.stop(AbortSignal.timeout(this.#config.shutdownDeadlineMs));
      throw new AggregateError(
        failed.map((f) => f.err),
        `could not start ${failed.map((f) => f.queue).join(", ")}: ${failed.map((f) => (f.err as Error).message).join("; ")}`,
      );
    }
    this.#log.info({ queues: this.relays.map((r) => r.options.name) }, "octorelay started");
  }

  /** Ready to take traffic: every queue started and receiving, and not draining. */
  readiness(): { ready: boolean; reasons: string[] } {
    const reasons = this.#draining ? ["draining"] : [];
    const limits = this.partners.limits.health();
    if (!limits.ok) reasons.push(`partner limits: ${limits.reason}`);
    for (const relay of this.relays) {
      const reason = relay.notReadyReason();
      if (reason) reasons.push(`${relay.options.name}: ${reason}`);
    }
    return { ready: reasons.length === 0, reasons };
  }

  get draining(): boolean {
    return this.#draining;
  }

  /** Drains every queue; what is still undelivered at `deadline` is released. Returns that count. */
  async stop(deadline: AbortSignal): Promise<number> {
    this.#draining = true;
    const released = await Promise.all(this.relays.map((r) => r.stop(deadline)));
    await this.partners.limits.close();
    return released.reduce((a, b) => a + b, 0);
  }
}
