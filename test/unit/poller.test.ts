import { type Message, ReceiveMessageCommand, type SQSClient } from "@aws-sdk/client-sqs";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import {
  type DemandSource,
  type DemandState,
  nextReceiveSize,
  Poller,
  type PollerOptions,
  SQS_MAX_MESSAGE_BYTES,
} from "../../src/pipeline/poller.ts";
import { countedEvents } from "../helpers/relay-events.ts";

const log = pino({ level: "silent" });

interface Receive {
  count: number;
  signal: AbortSignal | undefined;
  settled: boolean;
  /** The room downstream had when this receive was sent. */
  roomAtSend: number;
  /** Messages asked for by all receives in flight when this one was sent, this one included. */
  requestedAtSend: number;
  /** Receives in flight when this one was sent, this one included. */
  inFlightAtSend: number;
  resolve(messages: Message[]): void;
  reject(err: unknown): void;
}

/**
 * An SQS client whose ReceiveMessage calls stay pending until the test settles them, and reject
 * when their abort signal fires, as the SDK does. Any other command is a test failure.
 */
function fakeSqs(demand: DemandSource) {
  const receives: Receive[] = [];
  const pending = () => receives.filter((r) => !r.settled);
  const send = vi.fn(async (command: unknown, options?: { abortSignal?: AbortSignal }) => {
    if (!(command instanceof ReceiveMessageCommand)) {
      throw new Error(`unexpected command ${(command as object).constructor.name}`);
    }
    const count = command.input.MaxNumberOfMessages ?? 1;
    const before = pending();
    return new Promise<{ Messages?: Message[]; $metadata: object }>((resolve, reject) => {
      const receive: Receive = {
        count,
        signal: options?.abortSignal,
        settled: false,
        roomAtSend: demand.room(),
        requestedAtSend: before.reduce((sum, r) => sum + r.count, count),
        inFlightAtSend: before.length + 1,
        resolve: (messages) => {
          receive.settled = true;
          resolve({ Messages: messages, $metadata: {} });
        },
        reject: (err) => {
          receive.settled = true;
          reject(err);
        },
      };
      receives.push(receive);
      options?.abortSignal?.addEventListener(
        "abort",
        () => receive.reject(Object.assign(new Error("Request aborted"), { name: "AbortError" })),
        { once: true },
      );
    });
  });
  return { client: { send } as unknown as SQSClient, send, receives, pending };
}

const baseOptions: PollerOptions = {
  queue: "orders",
  queueUrl: "http://sqs.local/000000000000/orders",
  receiveBatchSize: 10,
  maxParallelReceives: 8,
  waitTimeSec: 20,
  visibilityTimeoutSec: 60,
};

function setup(demand: { room: number; maxRoom: number }, options: Partial<PollerOptions> = {}) {
  const source: DemandSource = { room: () => demand.room, maxRoom: demand.maxRoom };
  const sqs = fakeSqs(source);
  const { events, stats } = countedEvents();
  const received: Message[] = [];
  const onMessages = vi.fn((messages: Message[]) => {
    received.push(...messages);
  });
  const onLate = vi.fn((_messages: Message[]) => {});
  const poller = new Poller(
    { sqs: sqs.client, log, events, demand: source, onMessages, onLate },
    { ...baseOptions, ...options },
  );
  return { poller, sqs, stats, received, onMessages, onLate, demand };
}

const messages = (n: number, from = 0): Message[] =>
  Array.from({ length: n }, (_, i) => ({ MessageId: `m${from + i}`, Body: "{}" }));

/** Lets every pending promise callback and microtask run without moving the fake clock. */
const settle = () => vi.advanceTimersByTimeAsync(0);

let stopAfter: (() => Promise<void>) | undefined;

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(async () => {
  await stopAfter?.();
  stopAfter = undefined;
  vi.useRealTimers();
});

/** Starts the poller and makes sure it is stopped when the test ends. */
function start(poller: Poller): void {
  poller.start();
  stopAfter = () => poller.stop();
}

describe("Poller", () => {
  it("asks for exactly the room there is when it is below a full batch", () => {
    const { poller, sqs } = setup({ room: 3, maxRoom: 3 });
    start(poller);
    expect(sqs.send).toHaveBeenCalledTimes(1);
    const command = sqs.send.mock.calls[0]?.[0];
    expect(command).toBeInstanceOf(ReceiveMessageCommand);
    expect((command as ReceiveMessageCommand).input).toMatchObject({
      QueueUrl: baseOptions.queueUrl,
      MaxNumberOfMessages: 3,
      WaitTimeSeconds: 20,
      VisibilityTimeout: 60,
    });
    expect(sqs.send.mock.calls[0]?.[1]?.abortSignal).toBeInstanceOf(AbortSignal);
    expect(poller.receivesInFlight).toBe(1);
  });

  it("starts several receives at once for a large room, each at most a full batch, in all at most the room", () => {
    const { poller, sqs } = setup(
      { room: 35, maxRoom: 40 },
      { maxParallelReceives: 8, receiveBatchSize: 10 },
    );
    start(poller);
    const counts = sqs.receives.map((r) => r.count);
    // The min batch is min(receiveBatchSize, maxRoom / 2) = 10: the last 5 of room wait for a fuller receive.
    expect(counts).toEqual([10, 10, 10]);
    expect(counts.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(35);
    expect(poller.receivesInFlight).toBe(3);
  });

  it("never has more than maxParallelReceives receives in flight", () => {
    const { poller, sqs } = setup({ room: 500, maxRoom: 500 }, { maxParallelReceives: 4 });
    start(poller);
    expect(sqs.receives.map((r) => r.count)).toEqual([10, 10, 10, 10]);
    expect(poller.receivesInFlight).toBe(4);
  });

  it("sizes receives to the min batch when room is small relative to a full batch", () => {
    const { poller, sqs } = setup({ room: 4, maxRoom: 8 }, { receiveBatchSize: 10 });
    start(poller);
    // min batch = min(10, 8 / 2) = 4: one receive for the 4 free slots.
    expect(sqs.receives.map((r) => r.count)).toEqual([4]);
  });

  it("does not start a receive for less than the min batch", async () => {
    const state = { room: 5, maxRoom: 40 };
    const { poller, sqs } = setup(state);
    start(poller);
    expect(sqs.send).not.toHaveBeenCalled();
    state.room = 12;
    poller.wake();
    await settle();
    expect(sqs.receives.map((r) => r.count)).toEqual([10]);
  });

  it("makes no call without room, and receives once room opens and wake() is called", async () => {
    const state = { room: 0, maxRoom: 20 };
    const { poller, sqs } = setup(state);
    start(poller);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(sqs.send).not.toHaveBeenCalled();

    state.room = 20;
    await settle();
    expect(sqs.send).not.toHaveBeenCalled(); // room alone does not start a receive; wake() does
    poller.wake();
    poller.wake(); // a burst of wakes costs one pass
    await settle();
    expect(sqs.receives.map((r) => r.count)).toEqual([10, 10]);
  });

  it("hands received messages to onMessages and counts them", async () => {
    const { poller, sqs, stats, onMessages } = setup({ room: 3, maxRoom: 3 });
    start(poller);
    const batch = messages(2);
    sqs.pending()[0]?.resolve(batch);
    await settle();
    expect(onMessages).toHaveBeenCalledTimes(1);
    expect(onMessages).toHaveBeenCalledWith(batch);
    expect(stats.received).toBe(2);
    expect(stats.sqsCalls.receiveMessage).toBe(1);
    // An empty receive is not passed on.
    sqs.pending()[0]?.resolve([]);
    await settle();
    expect(onMessages).toHaveBeenCalledTimes(1);
  });

  it("keeps the totals within room, batch size and parallelism while demand comes and goes", async () => {
    const maxRoom = 40;
    const held: Message[] = [];
    const state = { room: maxRoom, maxRoom };
    const { poller, sqs, onMessages } = setup(state, { maxParallelReceives: 3, receiveBatchSize: 10 });
    onMessages.mockImplementation((batch: Message[]) => {
      held.push(...batch);
      state.room = maxRoom - held.length;
    });
    start(poller);

    // A small deterministic generator: the same sequence on every run.
    let seed = 7;
    const random = (n: number) => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed % n;
    };
    let id = 0;
    let total = 0;
    for (let step = 0; step < 300; step++) {
      const open = sqs.pending();
      if (open.length > 0 && random(3) > 0) {
        const receive = open[random(open.length)] as Receive;
        const n = random(receive.count + 1);
        receive.resolve(messages(n, id));
        id += n;
        total += n;
      }
      if (held.length > 0 && random(2) === 0) {
        held.splice(0, random(held.length) + 1);
        state.room = maxRoom - held.length;
        poller.wake();
      }
      await settle();
    }

    expect(sqs.receives.length).toBeGreaterThan(50);
    expect(total).toBeGreaterThan(100);
    for (const r of sqs.receives) {
      expect(r.count).toBeLessThanOrEqual(10);
      expect(r.requestedAtSend).toBeLessThanOrEqual(r.roomAtSend);
      expect(r.inFlightAtSend).toBeLessThanOrEqual(3);
    }
    expect(held.length).toBeLessThanOrEqual(maxRoom);
  });

  it("backs off after a failed receive, then retries and keeps going", async () => {
    const { poller, sqs, stats, onMessages } = setup({ room: 3, maxRoom: 3 });
    start(poller);
    sqs.pending()[0]?.reject(Object.assign(new Error("service unavailable"), { name: "ServiceUnavailable" }));
    await settle();
    expect(stats.sqsCalls.errors).toBe(1);
    expect(poller.receivesInFlight).toBe(0);
    // The first backoff is 100-200 ms; a wake during it does not cut it short.
    poller.wake();
    await vi.advanceTimersByTimeAsync(99);
    expect(sqs.send).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(101);
    expect(sqs.send).toHaveBeenCalledTimes(2);

    // A second failure in a row waits longer: 200-400 ms.
    sqs.pending()[0]?.reject(new Error("throttled"));
    await vi.advanceTimersByTimeAsync(199);
    expect(sqs.send).toHaveBeenCalledTimes(2);
    await vi.advanceTimersByTimeAsync(201);
    expect(sqs.send).toHaveBeenCalledTimes(3);

    sqs.pending()[0]?.resolve(messages(3));
    await settle();
    expect(onMessages).toHaveBeenCalledTimes(1);
    expect(sqs.send).toHaveBeenCalledTimes(4); // and polling on
    expect(stats.sqsCalls.errors).toBe(2);
  });

  // Regression: #pump compares Date.now() with the backoff deadline, but the retry is a setTimeout. Node
  // timers can fire a millisecond before Date.now() reaches the deadline (and the wall clock can step
  // back); then #pump returns, nothing re-arms, and a poller whose receives all failed never polls again.
  it("retries after a failed receive even if the wall clock is a little behind the backoff timer", async () => {
    const { poller, sqs } = setup({ room: 3, maxRoom: 3 });
    start(poller);
    sqs.pending()[0]?.reject(new Error("service unavailable"));
    await settle();
    vi.setSystemTime(Date.now() - 1);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(sqs.send.mock.calls.length).toBeGreaterThan(1);
  });

  it("stop() aborts the pending long polls and resolves once they have returned", async () => {
    const { poller, sqs, stats } = setup({ room: 30, maxRoom: 30 });
    poller.start();
    expect(sqs.pending()).toHaveLength(3);
    let stopped = false;
    const stopping = poller.stop().then(() => {
      stopped = true;
    });
    expect(sqs.receives.every((r) => r.signal?.aborted)).toBe(true);
    await stopping;
    expect(stopped).toBe(true);
    expect(poller.receivesInFlight).toBe(0);
    expect(stats.sqsCalls.errors).toBe(0); // an abort is not a failure

    // Nothing more is sent: not on a wake, not on a timer.
    poller.wake();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(sqs.send).toHaveBeenCalledTimes(3);
  });

  it("stop() waits for a receive that does not honour the abort", async () => {
    const { poller, sqs } = setup({ room: 3, maxRoom: 3 });
    poller.start();
    const receive = sqs.pending()[0] as Receive;
    // Simulate a request already past the point where it can be aborted.
    receive.settled = true;
    const late = receive.resolve;
    receive.reject = () => {};
    let stopped = false;
    void poller.stop().then(() => {
      stopped = true;
    });
    await settle();
    expect(stopped).toBe(false);
    late(messages(1));
    await settle();
    expect(stopped).toBe(true);
  });

  it("stop() cancels a pending backoff retry", async () => {
    const { poller, sqs } = setup({ room: 3, maxRoom: 3 });
    poller.start();
    sqs.pending()[0]?.reject(new Error("service unavailable"));
    await settle();
    await poller.stop();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(sqs.send).toHaveBeenCalledTimes(1);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("stop() resolves at once when nothing is in flight", async () => {
    const { poller, sqs } = setup({ room: 0, maxRoom: 10 });
    poller.start();
    await expect(poller.stop()).resolves.toBeUndefined();
    expect(sqs.send).not.toHaveBeenCalled();
  });
});

describe("Poller.finish (shutdown)", () => {
  it("does not abort the long polls in flight: what they return after it goes to onLate, and no receive starts", async () => {
    const state = { room: 30, maxRoom: 30 };
    const { poller, sqs, stats, onMessages, onLate } = setup(state);
    poller.start();
    expect(sqs.pending()).toHaveLength(3);
    let finished = false;
    const finishing = poller.finish().then(() => {
      finished = true;
    });
    expect(sqs.receives.some((r) => r.signal?.aborted)).toBe(false);

    const [first, second, third] = sqs.pending() as [Receive, Receive, Receive];
    const late = messages(4);
    first.resolve(late);
    second.resolve([]);
    await settle();
    expect(onLate).toHaveBeenCalledWith(late);
    expect(onMessages).not.toHaveBeenCalled();
    expect(stats.received).toBe(4);
    expect(finished).toBe(false); // one long poll is still open

    // Room opens, wakes come: nothing new is sent once finishing.
    state.room = 30;
    poller.wake();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(sqs.send).toHaveBeenCalledTimes(3);

    third.resolve(messages(2, 4));
    await finishing;
    expect(finished).toBe(true);
    expect(onLate).toHaveBeenCalledTimes(2);
    expect(poller.receivesInFlight).toBe(0);
  });

  it("stop() after finish() aborts the long polls still open (the shutdown deadline) and resolves", async () => {
    const { poller, sqs, stats } = setup({ room: 20, maxRoom: 20 });
    poller.start();
    void poller.finish();
    expect(sqs.receives.every((r) => !r.signal?.aborted)).toBe(true);
    await poller.stop();
    expect(sqs.receives.every((r) => r.signal?.aborted)).toBe(true);
    expect(poller.receivesInFlight).toBe(0);
    expect(stats.sqsCalls.errors).toBe(0);
  });

  it("a receive failing after finish() does not schedule a retry", async () => {
    const { poller, sqs } = setup({ room: 3, maxRoom: 3 });
    poller.start();
    const finishing = poller.finish();
    sqs.pending()[0]?.reject(new Error("service unavailable"));
    await finishing;
    await vi.advanceTimersByTimeAsync(60_000);
    expect(sqs.send).toHaveBeenCalledTimes(1);
    expect(vi.getTimerCount()).toBe(0);
  });
});

const MiB = 1024 * 1024;

describe("the room rule (nextReceiveSize)", () => {
  const base: DemandState = {
    room: 1000,
    maxRoom: 1000,
    requested: 0,
    bytesRoom: 8 * MiB,
    maxBytes: 8 * MiB,
    requestedBytes: 0,
    messageBytes: 200_000,
    receiveBatchSize: 10,
  };
  const cases: [string, Partial<DemandState>, number][] = [
    ["no byte budget: a full batch, as before", { bytesRoom: Infinity, maxBytes: Infinity }, 10],
    ["the bytes held are at the budget: no receive", { bytesRoom: 0 }, 0],
    ["the bytes held are past the budget: no receive", { bytesRoom: -5 * MiB }, 0],
    [
      "what receives in flight are estimated to bring fills the rest: no receive",
      { bytesRoom: 2_000_000, requestedBytes: 2_000_000, requested: 10 },
      0,
    ],
    // 1,000,000 / 200,000 = 5 fit; the min batch is half of min(8 MiB / 200 KB, cap 10) = 5.
    ["the byte room, in estimated messages, sizes the receive", { bytesRoom: 1_000_000 }, 5],
    ["less than the min batch fits: no receive", { bytesRoom: 800_000 }, 0],
    [
      "a message estimated larger than the whole budget, nothing held or coming: one at a time",
      { maxBytes: 512 * 1024, bytesRoom: 512 * 1024, messageBytes: SQS_MAX_MESSAGE_BYTES },
      1,
    ],
    [
      "the same with something held: wait for it to go",
      { maxBytes: 512 * 1024, bytesRoom: 100_000, messageBytes: SQS_MAX_MESSAGE_BYTES },
      0,
    ],
    // The cap is max(receiveBatchSize, 64 MiB / 1 MiB) = 64 messages asked for in flight.
    [
      "tiny messages: the in-flight cap bounds what 1 MiB bodies could add",
      { maxBytes: 64 * MiB, bytesRoom: 64 * MiB, messageBytes: 300, requested: 60, requestedBytes: 18_000 },
      0,
    ],
    [
      "tiny messages under the in-flight cap: a full batch",
      { maxBytes: 64 * MiB, bytesRoom: 64 * MiB, messageBytes: 300, requested: 50, requestedBytes: 15_000 },
      10,
    ],
    ["the message room still binds", { room: 3, maxRoom: 3 }, 3],
  ];
  it.each(cases)("%s", (_what, change, expected) => {
    expect(nextReceiveSize({ ...base, ...change })).toBe(expected);
  });
});

describe("Poller with a byte budget", () => {
  /** Downstream holding bodies: room by count is large, bytes are the limit. */
  function budgetSetup(maxBytes: number, options: Partial<PollerOptions> = {}) {
    const held = { bytes: 0, messages: [] as number[] };
    const source: DemandSource = {
      room: () => 10_000 - held.messages.length,
      maxRoom: 10_000,
      bytesRoom: () => maxBytes - held.bytes,
      maxBytes,
    };
    const sqs = fakeSqs(source);
    let maxHeldBytes = 0;
    const poller = new Poller(
      {
        sqs: sqs.client,
        log,
        events: countedEvents().events,
        demand: source,
        onMessages: (batch) => {
          for (const m of batch) {
            const bytes = Buffer.byteLength(m.Body ?? "");
            held.messages.push(bytes);
            held.bytes += bytes;
          }
          maxHeldBytes = Math.max(maxHeldBytes, held.bytes);
        },
        onLate: () => {},
      },
      { ...baseOptions, ...options },
    );
    const free = (n: number) => {
      for (const bytes of held.messages.splice(0, n)) held.bytes -= bytes;
      poller.wake();
    };
    return { poller, sqs, held, free, maxHeldBytes: () => maxHeldBytes };
  }
  const ofSize = (sizes: number[], from = 0): Message[] =>
    sizes.map((bytes, i) => ({ MessageId: `m${from + i}`, Body: "x".repeat(bytes) }));

  it("makes no receive while the bytes held are at the budget, and receives again once bytes are freed", async () => {
    const { poller, sqs, held, free } = budgetSetup(2 * MiB, { maxParallelReceives: 4 });
    start(poller);
    // The estimate starts at 1 MiB: the first receives ask for two messages in all.
    expect(sqs.receives.map((r) => r.count)).toEqual([2]);
    sqs.pending()[0]?.resolve(ofSize([MiB, MiB]));
    await settle();
    expect(held.bytes).toBe(2 * MiB);
    const sent = sqs.send.mock.calls.length;
    poller.wake();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(sqs.send).toHaveBeenCalledTimes(sent);

    free(1);
    await settle();
    expect(sqs.send.mock.calls.length).toBeGreaterThan(sent);
    expect(sqs.pending().reduce((n, r) => n + r.count, 0)).toBe(1);
  });

  it("sizes receives from a running estimate of the message size", async () => {
    const { poller, sqs, free } = budgetSetup(8 * MiB, { maxParallelReceives: 1 });
    start(poller);
    let id = 0;
    // 200 KB bodies: the estimate comes down from 1 MiB, and receives grow to what 8 MiB holds.
    for (let round = 0; round < 30; round++) {
      const receive = sqs.pending()[0] as Receive;
      receive.resolve(ofSize(Array(receive.count).fill(200_000), id));
      id += receive.count;
      await settle();
      free(receive.count);
      await settle();
    }
    expect(poller.messageBytesEstimate).toBeGreaterThanOrEqual(200_000);
    expect(poller.messageBytesEstimate).toBeLessThan(210_000);
    expect(sqs.pending()[0]?.count).toBe(10);
  });

  it("keeps the bytes held within the budget plus the stated worst-case overshoot while sizes jump", async () => {
    const maxBytes = 8 * MiB;
    // maxRequestedUnderBudget: max(receiveBatchSize, 8) = 10 messages in flight, each at most 1 MiB.
    const worstOvershoot = Math.max(10, maxBytes / MiB) * SQS_MAX_MESSAGE_BYTES;
    const { poller, sqs, held, free, maxHeldBytes } = budgetSetup(maxBytes, { maxParallelReceives: 8 });
    start(poller);
    let seed = 11;
    const random = (n: number) => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed % n;
    };
    let id = 0;
    for (let step = 0; step < 400; step++) {
      // Phases of tiny bodies, then of bodies at SQS's limit: the estimate is wrong at each change.
      const large = Math.floor(step / 50) % 2 === 1;
      const open = sqs.pending();
      for (const r of open) expect(r.requestedAtSend).toBeLessThanOrEqual(10);
      if (open.length > 0 && random(3) > 0) {
        const receive = open[random(open.length)] as Receive;
        const n = random(receive.count + 1);
        receive.resolve(
          ofSize(
            Array.from({ length: n }, () => (large ? SQS_MAX_MESSAGE_BYTES : 100 + random(900))),
            id,
          ),
        );
        id += n;
      }
      if (held.messages.length > 0 && random(2) === 0) free(random(held.messages.length) + 1);
      await settle();
      expect(held.bytes).toBeLessThanOrEqual(maxBytes + worstOvershoot);
    }
    expect(id).toBeGreaterThan(200);
    expect(maxHeldBytes()).toBeGreaterThan(maxBytes / 2);
    expect(maxHeldBytes()).toBeLessThanOrEqual(maxBytes + worstOvershoot);
  });
});
