/**
 * The pipeline's edges under load it should survive: a shutdown with long polls open, a poison body
 * at SQS's 1 MiB limit, and bodies large enough that a message count alone does not bound memory.
 * The service runs as a real process where its exit or its memory is what is checked.
 */
import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, request, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import {
  type Message,
  type MessageAttributeValue,
  ReceiveMessageCommand,
  SendMessageCommand,
} from "@aws-sdk/client-sqs";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Service } from "../../src/service.ts";
import {
  createBucket,
  createQueue,
  type Emulator,
  receiveAll,
  sendBodies,
  startEmulator,
  waitFor,
} from "../helpers/emulator.ts";
import { startPartnerServer } from "../helpers/partner-server.ts";
import { killAllServices, type ServiceProcess, spawnService } from "../helpers/process.ts";
import { startService } from "../helpers/service.ts";

const MiB = 1_048_576;

let emu: Emulator;
let service: Service | undefined;
const cleanups: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  emu = await startEmulator();
});
afterEach(async () => {
  await service?.stop(AbortSignal.timeout(10_000));
  service = undefined;
  for (const cleanup of cleanups.splice(0)) await cleanup();
});
afterAll(async () => {
  killAllServices();
  await emu.stop();
});

/** An HTTP partner that accepts every request and never answers it. */
async function startHangingPartner(): Promise<{ url: string; requests: () => number }> {
  const open: ServerResponse[] = [];
  const server = createServer((req, res) => {
    req.resume();
    open.push(res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests: () => open.length };
}

/**
 * Every message of a queue, received with its receive count; they stay invisible for 5 minutes, so
 * one that only comes back after its visibility timeout is missing here.
 */
async function receiveEverything(queueUrl: string): Promise<Message[]> {
  const all: Message[] = [];
  for (;;) {
    const out = await emu.sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: queueUrl,
        MaxNumberOfMessages: 10,
        VisibilityTimeout: 300,
        WaitTimeSeconds: 0,
        MessageSystemAttributeNames: ["ApproximateReceiveCount"],
        MessageAttributeNames: ["All"],
      }),
    );
    if (!out.Messages?.length) return all;
    all.push(...out.Messages);
  }
}

const logged = (proc: ServiceProcess, msg: string) => proc.logs.find((l) => l.msg === msg);

describe("shutdown with long polls open (waitTimeSec 20)", () => {
  // Old behaviour: SIGTERM aborted the long polls client-side, then released the prefetched messages
  // at once; SQS handed them to the abandoned polls, and they stayed invisible for the visibility
  // timeout (120 s here) with one more receive counted toward maxReceiveCount.
  it("on SIGTERM, every message released is visible again at once after exit, received once, none stuck in flight", async () => {
    const q = await createQueue(emu, { visibilityTimeoutSec: 120 });
    const partner = await startHangingPartner();
    const N = 30;
    const ids = await sendBodies(
      emu,
      q.url,
      Array.from({ length: N }, (_, n) => ({ account: "acme", delayMs: 2000, n })),
    );
    const proc = spawnService(emu, {
      destination: { type: "http", url: partner.url, timeoutMs: 120_000 },
      dispatch: { flushIntervalMs: 100 },
      queues: [
        {
          queue: q.name,
          handler: "slow.ts",
          // 2 running, 28 waiting for a slot; room for 10 more keeps one long poll open.
          concurrency: 2,
          prefetch: 38,
          maxUnacked: 40,
          partnerShare: 1,
          waitTimeSec: 20,
          visibilityTimeoutSec: 120,
        },
      ],
    });
    try {
      // The first flush reaching the partner means handlers have run for 2 s: all 30 were received
      // long ago and the next long poll is waiting on the empty queue.
      await waitFor("the first flush at the hanging partner", () => partner.requests() >= 1, 30_000);
      proc.child.kill("SIGTERM");
      const exit = await proc.exited;
      expect(exit, JSON.stringify(proc.logs.slice(-8))).toEqual({ code: 0, signal: null });
    } finally {
      proc.child.kill("SIGKILL");
    }
    expect(logged(proc, "shutdown complete")).toMatchObject({ released: N });

    const back = await receiveEverything(q.url);
    const counts = back.map((m) => m.Attributes?.ApproximateReceiveCount);
    console.log(
      `[figures] SIGTERM with a long poll open: released ${N}, visible at once after exit ${back.length}, receive counts ${[...new Set(counts)].join(",")}`,
    );
    expect(new Set(back.map((m) => m.MessageId))).toEqual(new Set(ids));
    // The service's receive and this one: none was received again by the stopping service.
    expect(counts.every((c) => c === "2")).toBe(true);
  });

  it("what an open long poll returns after SIGTERM is released at once, not handled, and visible after exit", async () => {
    const q = await createQueue(emu, { visibilityTimeoutSec: 120 });
    const bucket = await createBucket(emu);
    const proc = spawnService(emu, {
      destination: { bucket },
      queues: [
        { queue: q.name, handler: "slow.ts", concurrency: 2, waitTimeSec: 20, visibilityTimeoutSec: 120 },
      ],
    });
    let late: string[] = [];
    try {
      await waitFor("queue ready", () => logged(proc, "queue ready"), 30_000);
      proc.child.kill("SIGTERM");
      await waitFor("the stop under way with a long poll open", () => {
        const stopping = logged(
          proc,
          "stopped receiving; letting running handlers finish and open long polls return",
        );
        return stopping && (stopping.longPollsOpen as number) > 0;
      });
      late = await sendBodies(
        emu,
        q.url,
        Array.from({ length: 5 }, (_, n) => ({ delayMs: 1, n })),
      );
      expect(await proc.exited).toEqual({ code: 0, signal: null });
    } finally {
      proc.child.kill("SIGKILL");
    }
    expect(logged(proc, "long polls returned")).toMatchObject({ releasedAfterStop: 5 });
    expect(logged(proc, "shutdown complete")).toMatchObject({ released: 5 });
    const back = await receiveEverything(q.url);
    expect(new Set(back.map((m) => m.MessageId))).toEqual(new Set(late));
    expect(back.every((m) => m.Attributes?.ApproximateReceiveCount === "2")).toBe(true);
  });

  it("a shutdown deadline shorter than the long polls aborts them and says what that risks", async () => {
    const q = await createQueue(emu);
    const bucket = await createBucket(emu);
    const proc = spawnService(emu, {
      destination: { bucket },
      shutdown: { deadlineMs: 1500 },
      queues: [{ queue: q.name, handler: "slow.ts", waitTimeSec: 20 }],
    });
    try {
      await waitFor("queue ready", () => logged(proc, "queue ready"), 30_000);
      proc.child.kill("SIGTERM");
      expect(await proc.exited).toEqual({ code: 0, signal: null });
    } finally {
      proc.child.kill("SIGKILL");
    }
    const warning = proc.logs.find((l) =>
      String(l.msg).startsWith("shutdown deadline reached with long polls still open"),
    );
    expect(warning).toMatchObject({ level: 40, waitTimeSec: 20 });
    expect(String(warning?.msg)).toMatch(/come back only after their visibility timeout/);
  });
});

describe("a poison body at SQS's 1 MiB limit", () => {
  // Old behaviour: the copy with octorelay.* attributes was over 1 MiB, SendMessage refused it on
  // every receive, and the redrive policy moved the message without a reason.
  it("reaches the dead-letter queue byte for byte at once, with a reason if any fits", async () => {
    const q = await createQueue(emu, { maxReceiveCount: 2 });
    const bucket = await createBucket(emu);
    const sha = (text: string) => createHash("sha256").update(text).digest("hex");
    // Not JSON, so poison on its first receive. 1 MiB − 2,100 B plus a 2,000 B sender attribute.
    const nearLimit = `not json ${"n".repeat(MiB - 2_100 - 9)}`;
    const trace: Record<string, MessageAttributeValue> = {
      trace: { DataType: "String", StringValue: "t".repeat(2_000) },
      tenant: { DataType: "String", StringValue: "acme" },
    };
    // Exactly 1 MiB: nothing else fits beside it.
    const atLimit = `not json ${"z".repeat(MiB - 9)}`;
    const sent: Record<string, string> = {};
    for (const [name, body, attributes] of [
      ["nearLimit", nearLimit, trace],
      ["atLimit", atLimit, undefined],
    ] as const) {
      const out = await emu.sqs.send(
        new SendMessageCommand({ QueueUrl: q.url, MessageBody: body, MessageAttributes: attributes }),
      );
      sent[name] = out.MessageId as string;
    }
    service = await startService(emu, {
      destination: { bucket },
      queues: [
        {
          queue: q.name,
          handler: "slow.ts",
          deadLetterQueue: q.dlqName,
          waitTimeSec: 1,
          retryBaseMs: 100,
          retryMaxMs: 200,
        },
      ],
    });
    const relay = service.relays[0];
    const dead: Message[] = [];
    await waitFor(
      "both in the dead-letter queue",
      async () => {
        dead.push(...(await receiveAll(emu, q.dlqUrl, 300)));
        return dead.length >= 2;
      },
      30_000,
      200,
    );
    const bySha = new Map(dead.map((m) => [sha(m.Body ?? ""), m]));
    const near = bySha.get(sha(nearLimit));
    const at = bySha.get(sha(atLimit));
    expect(near, "the near-limit body, byte for byte").toBeDefined();
    expect(at, "the 1 MiB body, byte for byte").toBeDefined();
    expect(near?.Body === nearLimit && at?.Body === atLimit).toBe(true);

    // Dead-lettered by octorelay on the first receive (a redrive would have kept the message id).
    const attrs = near?.MessageAttributes ?? {};
    expect(attrs["octorelay.reason"]?.StringValue).toMatch(/^body is not valid JSON/);
    expect(attrs["octorelay.sourceMessageId"]?.StringValue).toBe(sent.nearLimit);
    expect(attrs["octorelay.sourceQueue"]?.StringValue).toBe(q.name);
    expect(attrs.tenant?.StringValue).toBe("acme");
    expect(attrs.trace).toBeUndefined();
    expect(at?.MessageAttributes).toBeUndefined();
    expect(at?.MessageId).not.toBe(sent.atLimit);
    expect(relay?.stats).toMatchObject({ deadLettered: 2, deadLetterTrimmed: 1, deadLetterWithoutReason: 1 });
    await waitFor("both deleted from the source queue", () => relay?.stats.deleted === 2);
    console.log(
      `[figures] poison at 1 MiB: dead-lettered 2 of 2 byte for byte (${Buffer.byteLength(nearLimit)} B with a reason of ${Buffer.byteLength(attrs["octorelay.reason"]?.StringValue ?? "")} B, ${Buffer.byteLength(atLimit)} B bare)`,
    );
  });
});

/**
 * A proxy in front of the emulator's SQS that reads every call on the wire (AWS JSON protocol): the
 * body bytes of messages received and not yet deleted or released (visibility 0), as SQS sees it.
 * The service runs in its own process, so an SDK middleware cannot watch it; this sees the same calls.
 */
async function startWireCounter(target: string) {
  const upstream = new URL(target);
  const held = new Map<string, number>();
  const idByReceipt = new Map<string, string>();
  const state = { heldBytes: 0, maxHeldBytes: 0, receives: 0, received: 0 };
  const forget = (receipt: string | undefined) => {
    const id = idByReceipt.get(receipt ?? "");
    const bytes = id === undefined ? undefined : held.get(id);
    if (id === undefined || bytes === undefined) return;
    held.delete(id);
    state.heldBytes -= bytes;
  };
  type Entry = { Id: string; ReceiptHandle: string; VisibilityTimeout?: number };
  const account = (operation: string, input: Record<string, unknown>, output: Record<string, unknown>) => {
    if (operation === "ReceiveMessage") {
      for (const m of (output.Messages ?? []) as {
        MessageId: string;
        ReceiptHandle: string;
        Body: string;
      }[]) {
        state.received++;
        idByReceipt.set(m.ReceiptHandle, m.MessageId);
        if (held.has(m.MessageId)) continue;
        const bytes = Buffer.byteLength(m.Body);
        held.set(m.MessageId, bytes);
        state.heldBytes += bytes;
      }
      state.maxHeldBytes = Math.max(state.maxHeldBytes, state.heldBytes);
    }
    const entries = new Map(((input.Entries ?? []) as Entry[]).map((e) => [e.Id, e]));
    const ok = ((output.Successful ?? []) as { Id: string }[]).map((s) => entries.get(s.Id));
    if (operation === "DeleteMessageBatch") for (const e of ok) forget(e?.ReceiptHandle);
    if (operation === "ChangeMessageVisibilityBatch") {
      for (const e of ok) if (e?.VisibilityTimeout === 0) forget(e.ReceiptHandle);
    }
  };
  const readAll = async (stream: IncomingMessage) => {
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  };
  const server = createServer(async (req, res) => {
    const body = await readAll(req);
    const operation = String(req.headers["x-amz-target"] ?? "").replace(/^AmazonSQS\./, "");
    if (operation === "ReceiveMessage") state.receives++;
    const forward = request(
      {
        host: upstream.hostname,
        port: upstream.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      async (answer) => {
        const out = await readAll(answer);
        if (answer.statusCode === 200 && operation) {
          account(operation, JSON.parse(body.toString() || "{}"), JSON.parse(out.toString() || "{}"));
        }
        res.writeHead(answer.statusCode ?? 502, answer.headers).end(out);
      },
    );
    forward.on("error", () => res.destroy());
    // A client that gives up on a call: the call to the emulator is cut too.
    res.on("close", () => {
      if (!res.writableFinished) forward.destroy();
    });
    forward.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, state };
}

/** One Prometheus sample from the service's /metrics. */
async function scrape(opsUrl: string, name: string, labels = ""): Promise<number> {
  const text = await (await fetch(`${opsUrl}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name}${labels} `) || l.startsWith(`${name} `));
  if (!line) throw new Error(`no ${name}${labels} in /metrics`);
  return Number(line.slice(line.lastIndexOf(" ") + 1));
}

describe("byte budget for un-acknowledged messages (maxUnackedBytes)", () => {
  // Old behaviour: only maxUnacked (a count) bounded what was held: with 200 KB bodies and a stalled
  // partner every message fitting the count was received, whatever its size.
  it("with ~200 KB bodies and a partner answering 503: bytes held on the wire stay within the budget plus the stated overshoot, and so does memory", async () => {
    const budget = 8 * MiB;
    // Worst case stated in src/pipeline/poller.ts and the docs: max(receiveBatchSize × 1 MiB, maxUnackedBytes).
    const worstOvershoot = Math.max(10 * MiB, budget);
    // What the process may add beside the bodies it holds (measured: RSS +55-60 MiB, main heap
    // +1-4 MiB): the SDK's response buffers and parsed copies, each body's copy in a worker thread,
    // V8's young generation of the main and each worker thread, and garbage not yet collected.
    const rssOverheadBytes = 96 * MiB;
    const heapOverheadBytes = 16 * MiB;
    const q = await createQueue(emu, { visibilityTimeoutSec: 120 });
    const partner = await startPartnerServer();
    partner.mode = "503";
    cleanups.push(() => partner.close());
    const wire = await startWireCounter(emu.endpoint);
    const proc = spawnService(
      emu,
      {
        destination: { type: "http", url: partner.url },
        dispatch: {
          flushIntervalMs: 100,
          retryBaseMs: 50,
          retryMaxMs: 200,
          breaker: { failures: 1_000_000 },
        },
        queues: [
          {
            queue: q.name,
            handler: "slow.ts",
            concurrency: 4,
            prefetch: 20,
            maxUnackedBytes: budget,
            waitTimeSec: 1,
            visibilityTimeoutSec: 120,
          },
        ],
      },
      { AWS_ENDPOINT_URL_SQS: wire.url },
    );
    cleanups.push(() => {
      proc.child.kill("SIGKILL");
    });
    const ready = await waitFor(
      "the ops server",
      () =>
        logged(proc, "queue ready") &&
        proc.logs.find((l) => typeof l.url === "string" && String(l.msg).startsWith("ops server listening")),
      30_000,
    );
    const opsUrl = ready.url as string;
    const rss = () => scrape(opsUrl, "octorelay_process_process_resident_memory_bytes");
    const heap = () => scrape(opsUrl, "octorelay_process_nodejs_heap_size_used_bytes");
    const rssBefore = await rss();
    const heapBefore = await heap();

    // 150 bodies of 195-205 KB (30 MB), sent one by one: a batch of them would pass SQS's 1 MiB per call.
    const N = 150;
    let sentBytes = 0;
    for (let i = 0; i < N; i += 10) {
      await Promise.all(
        Array.from({ length: Math.min(10, N - i) }, async (_, j) => {
          const n = i + j;
          const body = JSON.stringify({
            account: "acme",
            delayMs: 1,
            n,
            pad: "x".repeat(195_000 + ((n * 7919) % 10_000)),
          });
          sentBytes += Buffer.byteLength(body);
          await emu.sqs.send(new SendMessageCommand({ QueueUrl: q.url, MessageBody: body }));
        }),
      );
    }
    // Like maxUnacked, the budget is filled to within a receive's worth (min batch × estimate).
    const filled = budget - 10 * 205_100;
    await waitFor("the budget filled", () => wire.state.heldBytes > filled, 30_000);
    // An observation window counted in the partner's refusals: 20 more flushes refused (retried every
    // 50-200 ms), during which nothing is delivered and so nothing may be received.
    const receivedAtFull = wire.state.received;
    const arrivals = partner.arrivals.length;
    await waitFor("20 more refused flushes", () => partner.arrivals.length >= arrivals + 20, 30_000);
    const rssAfter = await rss();
    const heapAfter = await heap();

    const mb = (b: number) => (b / MiB).toFixed(1);
    console.log(
      `[figures] byte budget ${mb(budget)} MiB: sent ${mb(sentBytes)} MiB; held on the wire at most ${mb(wire.state.maxHeldBytes)} MiB (bound ${mb(budget + worstOvershoot)}); RSS +${mb(rssAfter - rssBefore)} MiB, main heap +${mb(heapAfter - heapBefore)} MiB (bounds ${mb(budget + rssOverheadBytes)}, ${mb(budget + heapOverheadBytes)})`,
    );
    expect(wire.state.maxHeldBytes).toBeLessThanOrEqual(budget + worstOvershoot);
    // It takes what the budget allows, not much less.
    expect(wire.state.heldBytes).toBeGreaterThan(filled);
    expect(wire.state.received).toBe(receivedAtFull);
    expect(rssAfter - rssBefore).toBeLessThanOrEqual(budget + rssOverheadBytes);
    expect(heapAfter - heapBefore).toBeLessThanOrEqual(budget + heapOverheadBytes);
    // What an operator sees of it.
    expect(await scrape(opsUrl, "octorelay_unacked_bytes_budget", `{queue="${q.name}"}`)).toBe(budget);
    expect(await scrape(opsUrl, "octorelay_unacked_bytes", `{queue="${q.name}"}`)).toBe(wire.state.heldBytes);
  });
});
