import type { Logger } from "pino";
import type { DispatchConfig } from "../config.ts";
import type { Destination } from "../destinations/destination.ts";
import { type DeliveryOutcomes, Dispatcher, type DispatcherDeps } from "./dispatcher.ts";

export type { DeliveryOutcomes } from "./dispatcher.ts";

import type { Partner } from "../partners/partner.ts";
import type { RelayEventSink } from "./events.ts";
import type { Holding } from "./message-policy.ts";
import { TickWheel } from "./tick-wheel.ts";

/** What a dispatcher for one account runs with: its profile and its partner's shared limits. */
export interface AccountRoute {
  dispatch: DispatchConfig;
  destination: Destination;
  partner: Pick<Partner, "deliver">;
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
  events: RelayEventSink;
  /** Where the owner of the tickets hears what became of them. */
  outcomes: DeliveryOutcomes<T>;
}

/**
 * Account → dispatcher for one queue. The first output for an account spawns its dispatcher; a
 * dispatcher that stops is forgotten in the same tick, so the next output spawns a fresh one.
 */
export class Router<T> implements Holding {
  readonly #deps: Omit<RouterDeps<T>, "outcomes">;
  readonly #queue: string;
  readonly #dispatchers = new Map<string, Dispatcher<T>>();
  /** One deps object for all of this queue's dispatchers: per-account parts go in their options. */
  readonly #dispatcherDeps: DispatcherDeps<T>;
  /** Kept by the dispatchers: what all of them hold, without a walk over tens of thousands. */
  readonly #held = { records: 0 };

  constructor(deps: RouterDeps<T>, options: { queue: string }) {
    this.#deps = deps;
    this.#queue = options.queue;
    this.#dispatcherDeps = {
      park: deps.park,
      log: deps.log,
      events: deps.events,
      outcomes: deps.outcomes,
      onStopped: (stopped) => this.#forget(stopped),
      held: this.#held,
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

  /** Outputs buffered or being flushed across every account of the queue. */
  get heldTotal(): number {
    return this.#held.records;
  }

  /** The account's dispatcher keeps up: see Dispatcher.delivering. */
  delivering(account: string): boolean {
    return this.#dispatchers.get(account)?.delivering ?? false;
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
    this.#deps.events.emit("dispatcher-spawned", { account });
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
