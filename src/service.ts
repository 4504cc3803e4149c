import type { Logger } from "pino";
import type { AwsClients } from "./aws-clients.ts";
import type { Config } from "./config.ts";
import type { PartnerState } from "./partner.ts";
import { PartnerDirectory } from "./partners.ts";
import { Relay } from "./relay.ts";

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
}

/** Every configured queue's relay, started together and stopped together under one deadline. */
export class Service {
  readonly relays: Relay[];
  readonly partners: PartnerDirectory;
  readonly #log: Logger;
  readonly #config: Config;
  #draining = false;

  constructor(deps: AwsClients & { log: Logger; env?: NodeJS.ProcessEnv }, config: Config) {
    this.#config = config;
    this.#log = deps.log;
    this.partners = new PartnerDirectory(
      { sqs: deps.sqs, s3: deps.s3, log: deps.log, env: deps.env ?? process.env },
      { dispatch: config.dispatch, partners: config.partners },
    );
    this.relays = config.queues.map(
      (q) => new Relay({ sqs: deps.sqs, log: deps.log, partners: this.partners }, q),
    );
  }

  /** Every partner seen since start (or still remembered), with what it holds across queues. */
  partnerSnapshots(nowMs = Date.now()): PartnerSnapshot[] {
    return [...this.partners.partners()].map((p) => {
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
      };
    });
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
    return released.reduce((a, b) => a + b, 0);
  }
}
