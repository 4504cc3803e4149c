import type { Logger } from "pino";
import type { DispatchConfig } from "./config.ts";
import type { Batch, Destination } from "./destinations/destination.ts";
import { Dispatcher, type DispatcherDeps } from "./dispatcher.ts";
import type { DeliveryError } from "./errors.ts";
import type { Partner } from "./partner.ts";
import type { RelayStats } from "./stats.ts";
import { TickWheel } from "./tick-wheel.ts";

/** What a dispatcher for one account runs with: its profile and its partner's shared limits. */
export interface AccountRoute {
  dispatch: DispatchConfig;
  destination: Destination;
  partner: Pick<Partner, "deliver">;
}

/** What becomes of the outputs a dispatcher was given: the owner of the tickets acts on it. */
export interface DeliveryOutcomes<T> {
  /** The records of a batch are durably delivered. */
  delivered(tickets: T[]): void;
  /** The destination refused a batch for good (a permanent error). */
  rejected(tickets: T[], error: DeliveryError): void;
  /**
   * Delivery was abandoned: at the stop deadline ("stopping"), or after the destination kept failing
   * for `giveUpAfterMs` ("giving-up").
   */
  abandoned(tickets: T[], cause: "stopping" | "giving-up"): void;
  /** A batch was parked (for the partner's state); parked counts as delivered too. */
  parked?(batch: Batch): void;
}

/**
 * Until test/unit/dispatcher.test.ts passes `outcomes`: the four callbacks it gives today.
 * @deprecated pass `outcomes`.
 */
type LegacyRouterDeps<T> = Omit<RouterDeps<T>, "outcomes"> & LegacyOutcomes<T>;
interface LegacyOutcomes<T> {
  onDelivered: DeliveryOutcomes<T>["delivered"];
  onRejected: DeliveryOutcomes<T>["rejected"];
  onAbandoned: DeliveryOutcomes<T>["abandoned"];
  onParked?: DeliveryOutcomes<T>["parked"];
}

export interface RouterDeps<T> {
  /** The account's profile and partner; asked once per dispatcher spawned. */
  resolve(account: string): AccountRoute;
  /** The dispatchers' shared flush timer (default: a TickWheel); null gives each its own timer. */
  ticker?: TickWheel | null;
  /** An account's dispatcher stopped (after empty flushes or at shutdown): pairs with `resolve`. */
  onForgotten?(account: string): void;
  park: Destination;
  log: Logger;
  stats: RelayStats;
  /** Where the owner of the tickets hears what became of them. */
  outcomes: DeliveryOutcomes<T>;
}

/**
 * Account → dispatcher for one queue. The first output for an account spawns its dispatcher; a
 * dispatcher that stops is forgotten in the same tick, so the next output spawns a fresh one.
 */
export class Router<T> {
  readonly #deps: Omit<RouterDeps<T>, "outcomes">;
  readonly #queue: string;
  readonly #dispatchers = new Map<string, Dispatcher<T>>();
  /** One deps object for all of this queue's dispatchers: per-account parts go in their options. */
  readonly #dispatcherDeps: DispatcherDeps<T>;

  constructor(deps: RouterDeps<T> | LegacyRouterDeps<T>, options: { queue: string }) {
    this.#deps = deps;
    this.#queue = options.queue;
    const outcomes = "outcomes" in deps ? deps.outcomes : fromLegacy(deps);
    this.#dispatcherDeps = {
      park: deps.park,
      log: deps.log,
      stats: deps.stats,
      // Until DispatcherDeps takes `outcomes: DeliveryOutcomes<T>` itself.
      onDelivered: (tickets) => outcomes.delivered(tickets),
      onRejected: (tickets, error) => outcomes.rejected(tickets, error),
      onAbandoned: (tickets, cause) => outcomes.abandoned(tickets, cause),
      ...(outcomes.parked ? { onParked: (batch: Batch) => outcomes.parked?.(batch) } : {}),
      onStopped: (stopped) => this.#forget(stopped),
      ...(deps.ticker === null ? {} : { ticker: deps.ticker ?? new TickWheel() }),
    };
  }

  /** A dispatcher stopped itself: forget it in the same tick, so the next output spawns a fresh one. */
  #forget(stopped: Dispatcher<T>): void {
    const account = stopped.account;
    if (this.#dispatchers.get(account) === stopped) this.#dispatchers.delete(account);
    this.#deps.log.debug({ component: "dispatcher", account }, "dispatcher stopped");
    this.#deps.onForgotten?.(account);
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

  /** Outputs of this account buffered or being flushed: what it holds of the queue's budget. */
  held(account: string): number {
    const d = this.#dispatchers.get(account);
    return d ? d.buffered + d.inFlightRecords : 0;
  }

  get(account: string): Dispatcher<T> | undefined {
    return this.#dispatchers.get(account);
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
    const route = this.#deps.resolve(account);
    this.#deps.log.debug({ component: "dispatcher", account }, "dispatcher spawned");
    return new Dispatcher<T>(this.#dispatcherDeps, {
      queue: this.#queue,
      account,
      dispatch: route.dispatch,
      destination: route.destination,
      partner: route.partner,
    });
  }
}

function fromLegacy<T>(deps: LegacyOutcomes<T>): DeliveryOutcomes<T> {
  return {
    delivered: deps.onDelivered,
    rejected: deps.onRejected,
    abandoned: deps.onAbandoned,
    ...(deps.onParked ? { parked: deps.onParked } : {}),
  };
}
