import type { Logger } from "pino";
import type { AwsClients } from "./aws-clients.ts";
import type { Config } from "./config.ts";
import { Relay } from "./relay.ts";

/** Every configured queue's relay, started together and stopped together under one deadline. */
export class Service {
  readonly relays: Relay[];
  readonly #log: Logger;
  readonly #config: Config;

  constructor(deps: AwsClients & { log: Logger }, config: Config) {
    this.#config = config;
    this.#log = deps.log;
    this.relays = config.queues.map((q) => new Relay(deps, q));
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

  /** Drains every queue; what is still undelivered at `deadline` is released. Returns that count. */
  async stop(deadline: AbortSignal): Promise<number> {
    const released = await Promise.all(this.relays.map((r) => r.stop(deadline)));
    return released.reduce((a, b) => a + b, 0);
  }
}
