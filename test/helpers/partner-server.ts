/**
 * A partner's HTTP endpoint on loopback: it counts what it receives, enforces its own rate limit
 * (answering 429 past it, and counting that as a violation), and can be switched down.
 */
import { createServer, type IncomingMessage, type RequestListener } from "node:http";
import type { AddressInfo } from "node:net";

export interface ReceivedBatch {
  atMs: number;
  records: { id: string; account: string; payload: unknown }[];
  authorization: string | undefined;
}

export interface PartnerServer {
  url: string;
  batches: ReceivedBatch[];
  /** Arrival times of every request, accepted or not. */
  arrivals: number[];
  /** Requests that arrived while `limitPerSec` requests had already arrived in the last second. */
  violations: number;
  /** "up", or down: "503" answers 503, "drop" cuts the connection. */
  mode: "up" | "503" | "drop";
  /** Answers this status instead of 200 when it returns one for a batch. */
  statusFor?: (batch: ReceivedBatch) => number | undefined;
  /** Answers an accepted batch this long after it arrived (a slower partner). */
  delayMs?: number;
  records(): ReceivedBatch["records"];
  /** Most requests that arrived within any window of `windowMs`. */
  maxInWindow(windowMs?: number): number;
  close(): Promise<void>;
}

export async function startPartnerServer(
  options: { limitPerSec?: number; token?: string } = {},
): Promise<PartnerServer> {
  const state: PartnerServer = {
    url: "",
    batches: [],
    arrivals: [],
    violations: 0,
    mode: "up",
    records: () => state.batches.flatMap((b) => b.records),
    maxInWindow(windowMs = 1000) {
      let max = 0;
      let start = 0;
      for (let end = 0; end < state.arrivals.length; end++) {
        while ((state.arrivals[end] as number) - (state.arrivals[start] as number) >= windowMs) start++;
        max = Math.max(max, end - start + 1);
      }
      return max;
    },
    close: () => server.close(),
  };
  const server = await listenOnLoopback(async (req, res) => {
    const now = performance.timeOrigin + performance.now();
    state.arrivals.push(now);
    if (state.mode === "drop") {
      req.socket.destroy();
      return;
    }
    const body = await readBody(req);
    if (state.mode === "503") {
      res.writeHead(503).end();
      return;
    }
    if (options.limitPerSec !== undefined) {
      const recent = state.arrivals.filter((t) => now - t < 1000).length;
      if (recent > options.limitPerSec) {
        state.violations++;
        res.writeHead(429, { "retry-after": "1" }).end();
        return;
      }
    }
    if (options.token && req.headers.authorization !== `Bearer ${options.token}`) {
      res.writeHead(401).end();
      return;
    }
    const text =
      req.headers["content-type"] === "application/json"
        ? (JSON.parse(body) as unknown[]).map((r) => JSON.stringify(r)).join("\n")
        : body;
    const batch: ReceivedBatch = {
      atMs: now,
      records: text
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l) as ReceivedBatch["records"][number]),
      authorization: req.headers.authorization,
    };
    const status = state.statusFor?.(batch);
    if (status !== undefined && status !== 200) {
      res.writeHead(status).end();
      return;
    }
    if (state.delayMs) await new Promise((resolve) => setTimeout(resolve, state.delayMs));
    state.batches.push(batch);
    res.writeHead(200).end();
  });
  state.url = server.url;
  return state;
}

export interface LoopbackServer {
  url: string;
  /** Drops open connections first: a keep-alive client must not hold the close. */
  close(): Promise<void>;
}

/** An HTTP server on a free loopback port, for a partner endpoint a test writes itself. */
export async function listenOnLoopback(handler: RequestListener): Promise<LoopbackServer> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}
