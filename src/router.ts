import type { Logger } from "pino";
import type { DispatchConfig } from "./config.ts";
import type { Destination } from "./destinations/destination.ts";
import { Dispatcher, type DispatcherDeps } from "./dispatcher.ts";
import type { RelayStats } from "./stats.ts";

export interface RouterDeps<T> {
  destination: Destination;
  log: Logger;
  stats: RelayStats;
  onDelivered: DispatcherDeps<T>["onDelivered"];
  onRejected: DispatcherDeps<T>["onRejected"];
  onAbandoned: DispatcherDeps<T>["onAbandoned"];
}

/**
 * Account → dispatcher for one queue. The first output for an account spawns its dispatcher; a
 * dispatcher that stops is forgotten in the same tick, so the next output spawns a fresh one.
 */
export class Router<T> {
  readonly #deps: RouterDeps<T>;
  readonly #options: DispatchConfig & { queue: string };
  readonly #dispatchers = new Map<string, Dispatcher<T>>();

  constructor(deps: RouterDeps<T>, options: DispatchConfig & { queue: string }) {
    this.#deps = deps;
    this.#options = options;
  }

  route(account: string, line: string, ticket: T): void {
    let dispatcher = this.#dispatchers.get(account);
    if (!dispatcher) {
      dispatcher = this.#spawn(account);
      this.#dispatchers.set(account, dispatcher);
    }
    dispatcher.add({ line, ticket });
  }

  get active(): number {
    return this.#dispatchers.size;
  }

  dispatchers(): IterableIterator<Dispatcher<T>> {
    return this.#dispatchers.values();
  }

  /** Flushes every dispatcher and resolves once all of them have nothing buffered or in flight. */
  async drain(): Promise<void> {
    await Promise.all([...this.#dispatchers.values()].map((d) => d.drain()));
  }

  /** Gives up on whatever is still undelivered (shutdown deadline); the owners release it. */
  abandonAll(): void {
    for (const d of [...this.#dispatchers.values()]) d.abandon();
  }

  #spawn(account: string): Dispatcher<T> {
    this.#deps.stats.dispatchersSpawned++;
    const log = this.#deps.log.child({ component: "dispatcher", account });
    log.debug("dispatcher spawned");
    return new Dispatcher<T>(
      {
        destination: this.#deps.destination,
        log,
        stats: this.#deps.stats,
        onDelivered: this.#deps.onDelivered,
        onRejected: this.#deps.onRejected,
        onAbandoned: this.#deps.onAbandoned,
        onStopped: (stopped) => {
          if (this.#dispatchers.get(account) === stopped) this.#dispatchers.delete(account);
          log.debug("dispatcher stopped after empty flushes");
        },
      },
      { ...this.#options, account },
    );
  }
}
