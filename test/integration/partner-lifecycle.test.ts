/**
 * A partner's limits over its lifecycle, against real partner endpoints (node:http on loopback), the
 * real Service and the embedded SQS/S3 emulator: dispatchers that stop between messages, partners
 * that are down while others are healthy, partners that fail for good, and Retry-After answers.
 */
import { SQSClient } from "@aws-sdk/client-sqs";
import { describe, expect } from "vitest";
import type { Service } from "../../src/service.ts";
import { createQueue, type Emulator, readDeadLetters, sendBodies, waitFor } from "../helpers/emulator.ts";
import { account, report } from "../helpers/figures.ts";
import { it } from "../helpers/fixtures.ts";
import type { PartnerServer } from "../helpers/partner-server.ts";
import { sampleHandler } from "../helpers/service.ts";

const http = (url: string) => ({ destination: { type: "http", url: `${url}/ingest/{account}` } });

/** Records a partner holds now (buffered, and in batches being delivered or retried), as /partners shows. */
function heldBy(service: Service, account: string): number {
  const s = service.partnerSnapshots().find((p) => p.account === account);
  return s ? s.buffered + s.inFlight : 0;
}

/**
 * What the service holds of SQS, seen on the wire: each message received and not yet deleted or
 * released (a visibility change below the queue's visibility timeout; heartbeats set exactly it).
 */
function watchSqs(emu: Emulator, visibilityTimeoutSec: number) {
  const sqs = new SQSClient({ region: emu.region, endpoint: emu.endpoint, useQueueUrlAsEndpoint: false });
  const outstanding = new Set<string>();
  const idByReceipt = new Map<string, string>();
  const releasedAtMs = new Map<string, number>();
  sqs.middlewareStack.add(
    (next, context) => async (args) => {
      const name = context.commandName as string;
      const entries =
        (args.input as { Entries?: { ReceiptHandle?: string; VisibilityTimeout?: number }[] }).Entries ?? [];
      // Counted as returned when sent: a message released at once may be received again before the answer.
      for (const e of entries) {
        const id = idByReceipt.get(e.ReceiptHandle ?? "");
        if (!id) continue;
        if (name === "DeleteMessageBatchCommand") outstanding.delete(id);
        if (
          name === "ChangeMessageVisibilityBatchCommand" &&
          (e.VisibilityTimeout ?? 0) < visibilityTimeoutSec
        ) {
          outstanding.delete(id);
          releasedAtMs.set(id, Date.now());
        }
      }
      const result = await next(args);
      if (name === "ReceiveMessageCommand") {
        const messages =
          (result.output as { Messages?: { MessageId?: string; ReceiptHandle?: string }[] }).Messages ?? [];
        for (const m of messages) {
          idByReceipt.set(m.ReceiptHandle as string, m.MessageId as string);
          outstanding.add(m.MessageId as string);
        }
      }
      return result;
    },
    { step: "initialize", name: "partnerLifecycleSpy" },
  );
  return {
    sqs,
    releasedAtMs,
    heldOf: (ids: Set<string>) => [...outstanding].filter((id) => ids.has(id)).length,
  };
}

describe("a partner's rate limit across idle gaps", () => {
  it("holds `requests` per window although its dispatchers stop (and it is forgotten) between messages", async ({
    emulator: emu,
    queue: q,
    bucket,
    partnerServer: partner,
    startService,
  }) => {
    const intervalMs = 1500;
    const service = await startService({
      dispatch: { flushIntervalMs: 200, emptyFlushLimit: 1 },
      destination: { bucket },
      partners: { accounts: { p: { ...http(partner.url), rateLimit: { requests: 1, intervalMs } } } },
      queues: [{ queue: q.name, handler: sampleHandler("passthrough.ts"), waitTimeSec: 1 }],
    });
    const relay = service.relays[0];
    const ids: string[] = [];
    const messages = 3;
    for (let i = 0; i < messages; i++) {
      ids.push(...(await sendBodies(emu, q.url, [{ account: "p", i }])));
      await waitFor(`message ${i} delivered and deleted`, () => relay?.stats.deleted === i + 1, 30_000);
      // The next message finds no dispatcher and no partner object: both were forgotten.
      await waitFor(
        `the partner forgotten after message ${i}`,
        () =>
          relay?.activeDispatchers === 0 &&
          ![...(service?.partners.partners() ?? [])].some((p) => p.account === "p"),
        10_000,
      );
    }
    const gapsMs = partner.arrivals.slice(1).map((t, i) => Math.round(t - (partner.arrivals[i] as number)));
    console.log(
      `[figures] 1 request per ${intervalMs} ms across idle gaps: gaps between requests ${gapsMs.join(", ")} ms`,
    );
    expect(partner.arrivals).toHaveLength(messages);
    expect(partner.maxInWindow(intervalMs), `gaps ${gapsMs.join(", ")} ms`).toBeLessThanOrEqual(1);
    expect(account(ids, partner.records(), [])).toMatchObject({
      delivered: messages,
      lost: 0,
      duplicated: 0,
    });
  });
});

describe("fairness counts what is in flight", () => {
  it("two partners answering 503 hold at most their share each; the healthy one gets all its messages meanwhile", async ({
    emulator: emu,
    bucket,
    startPartnerServer,
    startService,
  }) => {
    const q = await createQueue(emu, { maxReceiveCount: 1000 });
    const servers = await Promise.all([startPartnerServer(), startPartnerServer(), startPartnerServer()]);
    const [downA, downB, healthy] = servers as [PartnerServer, PartnerServer, PartnerServer];
    for (const down of [downA, downB]) down.statusFor = () => 503;
    const accounts = ["down-a", "down-b", "healthy"] as const;
    const perAccount = 60;
    const bodies = Array.from({ length: perAccount * 3 }, (_, i) => ({ account: accounts[i % 3], i }));
    const ids = await sendBodies(emu, q.url, bodies);
    const idsOf = (name: string) => new Set(ids.filter((_, i) => bodies[i]?.account === name));
    const maxUnacked = 120;
    const partnerShare = 0.25;
    const share = maxUnacked * partnerShare;
    const queue = { concurrency: 2, prefetch: 2, visibilityTimeoutSec: 60 };
    const watch = watchSqs(emu, queue.visibilityTimeoutSec);
    const service = await startService(
      {
        // Small batches, several in flight: what a down partner holds is mostly batches being retried.
        dispatch: {
          flushIntervalMs: 200,
          maxRecords: 10,
          maxConcurrentFlushes: 4,
          retryBaseMs: 100,
          retryMaxMs: 300,
          giveUpAfterMs: 120_000,
          breaker: { failures: 1000 },
        },
        destination: { bucket },
        partners: {
          accounts: { "down-a": http(downA.url), "down-b": http(downB.url), healthy: http(healthy.url) },
        },
        queues: [
          {
            queue: q.name,
            handler: sampleHandler("passthrough.ts"),
            waitTimeSec: 1,
            maxUnacked,
            partnerShare,
            retryBaseMs: 200,
            retryMaxMs: 1000,
            ...queue,
          },
        ],
      },
      { sqs: watch.sqs },
    );
    const held = { "down-a": 0, "down-b": 0 };
    const onWire = { "down-a": 0, "down-b": 0 };
    const inFlightSeen = { "down-a": 0, "down-b": 0 };
    const down = { "down-a": idsOf("down-a"), "down-b": idsOf("down-b") };
    const healthyIds = idsOf("healthy");
    // Sampled until the healthy partner has everything (at most 40 s; it takes a few).
    const allHealthy = () => new Set(healthy.records().map((r) => r.id)).size === healthyIds.size;
    const untilMs = Date.now() + 40_000;
    while (!allHealthy() && Date.now() < untilMs) {
      for (const snapshot of service.partnerSnapshots()) {
        if (snapshot.account !== "down-a" && snapshot.account !== "down-b") continue;
        held[snapshot.account] = Math.max(held[snapshot.account], snapshot.buffered + snapshot.inFlight);
        inFlightSeen[snapshot.account] = Math.max(inFlightSeen[snapshot.account], snapshot.inFlight);
      }
      for (const name of ["down-a", "down-b"] as const) {
        onWire[name] = Math.max(onWire[name], watch.heldOf(down[name]));
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    console.log(
      `[figures] share ${share}: down partners held at most ${onWire["down-a"]} and ${onWire["down-b"]} messages on the wire (${held["down-a"]} and ${held["down-b"]} records in /partners, in flight up to ${inFlightSeen["down-a"]} and ${inFlightSeen["down-b"]}); healthy partner got ${new Set(healthy.records().map((r) => r.id)).size} of ${healthyIds.size}`,
    );
    for (const name of ["down-a", "down-b"] as const) {
      // On the wire: at most its share, plus what the handler pool holds and one visibility batch
      // of messages being shed.
      expect(onWire[name], name).toBeLessThanOrEqual(share + queue.concurrency + queue.prefetch + 10);
      // /partners reports the batches being retried, and counts them in what the partner holds.
      expect(inFlightSeen[name], name).toBeGreaterThan(0);
      expect(held[name], name).toBeLessThanOrEqual(share);
    }
    expect(allHealthy()).toBe(true);
    // They were still down all along.
    expect(downA.records().length + downB.records().length).toBe(0);
    expect(downA.arrivals.length).toBeGreaterThan(0);

    for (const s of [downA, downB]) delete s.statusFor;
    await waitFor(
      "every message deleted",
      () => service?.relays[0]?.stats.deleted === ids.length,
      60_000,
      100,
    );
    const figures = account(
      ids,
      servers.flatMap((s) => s.records()),
      [],
    );
    report("two partners down, one healthy, in-flight records counted", figures);
    expect(figures).toMatchObject({ delivered: ids.length, lost: 0 });
  });
});

describe("messages shed on their last receive", () => {
  it("go to the dead-letter queue with the reason, not by SQS's redrive without one; the rest are delivered once the partner is back", async ({
    emulator: emu,
    bucket,
    partnerServer: down,
    startService,
  }) => {
    const maxReceiveCount = 3;
    const q = await createQueue(emu, { maxReceiveCount });
    down.mode = "503";
    const ids = await sendBodies(
      emu,
      q.url,
      Array.from({ length: 60 }, (_, i) => ({ account: "down", i })),
    );
    const maxUnacked = 40;
    const service = await startService({
      dispatch: {
        flushIntervalMs: 100,
        maxRecords: 5,
        retryBaseMs: 100,
        retryMaxMs: 300,
        giveUpAfterMs: 120_000,
        breaker: { failures: 1000 },
      },
      destination: { bucket },
      partners: { accounts: { down: http(down.url) } },
      queues: [
        {
          queue: q.name,
          handler: sampleHandler("passthrough.ts"),
          waitTimeSec: 1,
          maxUnacked,
          partnerShare: 0.25,
          retryBaseMs: 100,
          retryMaxMs: 200,
        },
      ],
    });
    const relay = service.relays[0];
    const seen = new Map<string, string>();
    // What the partner does not hold is shed until its last receive, then dead-lettered by octorelay;
    // what it holds stays held (it keeps being retried) until it is back.
    await waitFor(
      "every message either held or dead-lettered",
      async () => (await readDeadLetters(emu, q.dlqUrl, seen)).length + (relay?.unacked ?? 0) === ids.length,
      30_000,
      200,
    );
    expect(seen.size).toBeGreaterThan(0);
    down.mode = "up";
    await waitFor(
      "every message delivered or dead-lettered",
      async () =>
        (await readDeadLetters(emu, q.dlqUrl, seen)).length + new Set(down.records().map((r) => r.id)).size >=
        ids.length,
      30_000,
      200,
    );
    const dead = await readDeadLetters(emu, q.dlqUrl, seen);
    const figures = account(
      ids,
      down.records(),
      dead.map((d) => d.id),
    );
    report("a partner down past maxReceiveCount sheds", figures);
    expect(figures).toMatchObject({ lost: 0, duplicated: 0 });
    expect(figures.delivered).toBeGreaterThan(0);
    expect(dead.length).toBeGreaterThan(0);
    for (const d of dead)
      expect(d.reason, d.id).toMatch(/^shed on receive 3 of 3: partner "down" held its share/);
    expect(relay?.stats.deadLettered).toBe(dead.length);
  });

  it("are taken late, not dead-lettered, when their partner keeps up but is slower than the queue", async ({
    emulator: emu,
    bucket,
    partnerServer: slow,
    startService,
  }) => {
    const q = await createQueue(emu, { maxReceiveCount: 2 });
    // One flush of 10 at a time, each answered after 100 ms: far slower than the queue is read.
    slow.delayMs = 100;
    const ids = await sendBodies(
      emu,
      q.url,
      Array.from({ length: 150 }, (_, i) => ({ account: "slow", i })),
    );
    const service = await startService({
      dispatch: { flushIntervalMs: 100, maxRecords: 10, maxConcurrentFlushes: 1 },
      destination: { bucket },
      partners: { accounts: { slow: http(slow.url) } },
      queues: [
        {
          queue: q.name,
          handler: sampleHandler("passthrough.ts"),
          waitTimeSec: 1,
          maxUnacked: 40,
          partnerShare: 0.25,
          retryBaseMs: 100,
          retryMaxMs: 200,
        },
      ],
    });
    const relay = service.relays[0];
    await waitFor("every message deleted", () => relay?.stats.deleted === ids.length, 60_000, 50);
    const dead = await readDeadLetters(emu, q.dlqUrl);
    const figures = account(
      ids,
      slow.records(),
      dead.map((d) => d.id),
    );
    report(`a slow partner (${relay?.stats.shed} sheds), messages on their last receive`, figures);
    expect(relay?.stats.shed).toBeGreaterThan(0);
    expect(figures).toMatchObject({ delivered: ids.length, deadLettered: 0, lost: 0, duplicated: 0 });
  });
});

describe("a partner that keeps delivering borrows room nobody holds", () => {
  it("a lone partner holds past its share, up to maxUnacked less one share; each message delivered once", async ({
    emulator: emu,
    bucket,
    partnerServer: partner,
    startService,
  }) => {
    // What it cannot hold is shed, again and again: none may reach its last receive here.
    const q = await createQueue(emu, { maxReceiveCount: 1000 });
    const maxUnacked = 100;
    const partnerShare = 0.1;
    const share = maxUnacked * partnerShare;
    // One flush at a time, each answered after 50 ms: what it is sent meanwhile waits in its buffer.
    partner.delayMs = 50;
    const service = await startService({
      dispatch: { flushIntervalMs: 100, maxRecords: 20, maxConcurrentFlushes: 1 },
      destination: { bucket },
      partners: { accounts: { lone: http(partner.url) } },
      queues: [
        {
          queue: q.name,
          handler: sampleHandler("passthrough.ts"),
          waitTimeSec: 1,
          maxUnacked,
          partnerShare,
          concurrency: 4,
          prefetch: 4,
        },
      ],
    });
    const relay = service.relays[0];
    // One message first, delivered: the burst after it finds a partner that has shown it keeps up.
    const ids = await sendBodies(emu, q.url, [{ account: "lone", i: -1 }]);
    await waitFor("the first message delivered", () => relay?.stats.deleted === 1, 30_000);
    const count = 600;
    ids.push(
      ...(await sendBodies(
        emu,
        q.url,
        Array.from({ length: count }, (_, i) => ({ account: "lone", i })),
      )),
    );
    let mostHeld = 0;
    while ((relay?.stats.deleted ?? 0) < ids.length) {
      mostHeld = Math.max(mostHeld, heldBy(service, "lone"));
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    console.log(
      `[figures] lone partner, share ${share} of ${maxUnacked}: held up to ${mostHeld} records; ${relay?.stats.shed} messages shed`,
    );
    expect(mostHeld).toBeGreaterThan(share);
    expect(mostHeld).toBeLessThanOrEqual(maxUnacked - share);
    expect(account(ids, partner.records(), [])).toMatchObject({
      delivered: ids.length,
      lost: 0,
      duplicated: 0,
    });
  });

  it("one that borrowed and then goes down is back to its share: another partner gets all its messages meanwhile", async ({
    emulator: emu,
    bucket,
    startPartnerServer,
    startService,
  }) => {
    // Messages shed again and again burn receives: none may reach its last one here.
    const q = await createQueue(emu, { maxReceiveCount: 1000 });
    const [big, small] = await Promise.all([startPartnerServer(), startPartnerServer()]);
    const maxUnacked = 100;
    const partnerShare = 0.2;
    const share = maxUnacked * partnerShare;
    big.delayMs = 50;
    const service = await startService({
      dispatch: {
        flushIntervalMs: 100,
        maxRecords: 20,
        maxConcurrentFlushes: 1,
        retryBaseMs: 100,
        retryMaxMs: 300,
        giveUpAfterMs: 120_000,
        breaker: { failures: 1000 },
      },
      destination: { bucket },
      partners: { accounts: { big: http(big.url), small: http(small.url) } },
      queues: [
        {
          queue: q.name,
          handler: sampleHandler("passthrough.ts"),
          waitTimeSec: 1,
          maxUnacked,
          partnerShare,
          concurrency: 4,
          prefetch: 4,
          retryBaseMs: 200,
          retryMaxMs: 1000,
        },
      ],
    });
    const relay = service.relays[0];
    const bigIds = await sendBodies(
      emu,
      q.url,
      Array.from({ length: 400 }, (_, i) => ({ account: "big", i })),
    );
    // It keeps up, slowly: what it is sent piles up in its buffer, past its share.
    let borrowed = 0;
    await waitFor(
      "the big partner holding past its share",
      () => {
        borrowed = Math.max(borrowed, heldBy(service, "big"));
        return borrowed > share * 2;
      },
      20_000,
      5,
    );
    big.mode = "503";
    const smallIds = await sendBodies(
      emu,
      q.url,
      Array.from({ length: 60 }, (_, i) => ({ account: "small", i })),
    );
    let bigMostWhileDown = 0;
    await waitFor(
      "the small partner has all its messages while the big one is down",
      () => {
        bigMostWhileDown = Math.max(bigMostWhileDown, heldBy(service, "big"));
        return new Set(small.records().map((r) => r.id)).size === smallIds.length;
      },
      30_000,
      5,
    );
    console.log(
      `[figures] share ${share} of ${maxUnacked}: the big partner borrowed up to ${borrowed} records, held at most ${bigMostWhileDown} while down; the small one got ${smallIds.length} of ${smallIds.length}`,
    );
    // What it borrowed stays held (heartbeats keep it), never more than maxUnacked less one share.
    expect(bigMostWhileDown).toBeLessThanOrEqual(maxUnacked - share);
    expect(big.records().length).toBeLessThan(bigIds.length);

    big.mode = "up";
    const ids = [...bigIds, ...smallIds];
    await waitFor("every message deleted", () => relay?.stats.deleted === ids.length, 60_000, 50);
    expect(account(ids, [...big.records(), ...small.records()], [])).toMatchObject({
      delivered: ids.length,
      lost: 0,
      duplicated: 0,
    });
  });
});

describe("partners that fail for good", () => {
  it("are forgotten once their dispatchers stop, each distinct account's error still shown", async ({
    emulator: emu,
    queue: q,
    partnerServer: partner,
    startService,
  }) => {
    partner.statusFor = () => 400;
    const accounts = Array.from({ length: 200 }, (_, i) => `acct-${i}`);
    const ids = await sendBodies(
      emu,
      q.url,
      accounts.map((a) => ({ account: a })),
    );
    const service = await startService({
      dispatch: { flushIntervalMs: 100, emptyFlushLimit: 1 },
      destination: { type: "http", url: `${partner.url}/ingest/{account}` },
      queues: [{ queue: q.name, handler: sampleHandler("passthrough.ts"), waitTimeSec: 1 }],
    });
    const relay = service.relays[0];
    await waitFor("all 200 dead-lettered and deleted", () => relay?.stats.deleted === 200, 60_000, 100);
    await waitFor("every dispatcher stopped", () => relay?.activeDispatchers === 0, 10_000);
    const dead = await readDeadLetters(emu, q.dlqUrl);
    expect(dead).toHaveLength(200);
    expect(
      account(
        ids,
        [],
        dead.map((d) => d.id),
      ),
    ).toMatchObject({ deadLettered: 200, lost: 0 });
    // Memory follows active accounts: no partner is kept once idle…
    expect([...service.partners.partners()]).toEqual([]);
    // …while each one's last error can still be looked up, in a bounded list.
    for (const a of accounts) expect(service.partners.recentError(a)?.message).toMatch(/answered 400/);
    expect([...service.partners.recentErrors()]).toHaveLength(200);
  });
});

describe("Retry-After", () => {
  // 3600: longer than giveUpAfterMs; 99999999: past setTimeout's range (~1,157 days).
  it.for(["3600", "99999999"])(
    "Retry-After: %s neither holds the batch past giveUpAfterMs nor turns into a request storm",
    async (retryAfter, { emulator: emu, bucket, startService, startHttpServer }) => {
      const q = await createQueue(emu, { maxReceiveCount: 1000 });
      const arrivals: number[] = [];
      const { url } = await startHttpServer((req, res) => {
        arrivals.push(Date.now());
        req.resume();
        req.on("end", () => res.writeHead(429, { "retry-after": retryAfter }).end());
      });
      const watch = watchSqs(emu, 60);
      const giveUpAfterMs = 2000;
      const ids = await sendBodies(
        emu,
        q.url,
        Array.from({ length: 3 }, (_, i) => ({ account: "slow", i })),
      );
      const service = await startService(
        {
          dispatch: { flushIntervalMs: 200, maxRecords: 10, retryBaseMs: 100, retryMaxMs: 300 },
          destination: { bucket },
          partners: { accounts: { slow: { ...http(url), giveUpAfterMs } } },
          queues: [
            {
              queue: q.name,
              handler: sampleHandler("passthrough.ts"),
              waitTimeSec: 1,
              visibilityTimeoutSec: 60,
            },
          ],
        },
        { sqs: watch.sqs },
      );
      await waitFor("a first request", () => arrivals.length > 0, 20_000);
      const firstMs = arrivals[0] as number;
      // Released to SQS (visible again after the release backoff) once giveUpAfterMs has passed.
      await waitFor(
        "every message released",
        () => ids.every((id) => watch.releasedAtMs.has(id)),
        giveUpAfterMs + 10_000,
      );
      const releasedAfterMs = Math.max(...ids.map((id) => (watch.releasedAtMs.get(id) as number) - firstMs));
      console.log(
        `[figures] Retry-After ${retryAfter} s, giveUpAfterMs ${giveUpAfterMs}: released ${releasedAfterMs} ms after the first request; the partner saw ${arrivals.length} request(s)`,
      );
      expect(releasedAfterMs).toBeGreaterThanOrEqual(giveUpAfterMs - 50);
      expect(arrivals.length).toBeLessThanOrEqual(2);
      const pause = await service.partners.limits.pauseOf("slow");
      expect(pause?.reason).toBe("retry-after");
      // Capped at 15 minutes from the 429.
      expect((pause?.untilMs ?? 0) - firstMs).toBeLessThanOrEqual(
        Math.min(Number(retryAfter) * 1000, 15 * 60_000) + 1000,
      );
      // The messages received again wait out the pause; at shutdown they are released at once.
      await service.stop(AbortSignal.timeout(1000));
    },
  );
});
