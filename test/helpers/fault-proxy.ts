/**
 * A fault-injecting HTTP proxy on loopback, put in front of the emulator's S3: it passes requests
 * through, answers 503 SlowDown, or drops the connection, as the test switches it.
 */
import { createServer, request } from "node:http";
import type { AddressInfo } from "node:net";

export type FaultMode = "pass" | "503" | "drop" | "503-and-drop";

export interface FaultProxy {
  url: string;
  mode: FaultMode;
  /** Requests seen, and how many of them were failed on purpose. */
  readonly requests: number;
  readonly failed: number;
  close(): Promise<void>;
}

export async function startFaultProxy(target: string, mode: FaultMode = "pass"): Promise<FaultProxy> {
  const upstream = new URL(target);
  let requests = 0;
  let failed = 0;
  const state = { mode };
  const server = createServer((req, res) => {
    requests++;
    const fail = state.mode === "503-and-drop" ? (requests % 2 === 0 ? "503" : "drop") : state.mode;
    if (fail === "503") {
      failed++;
      req.resume();
      res.writeHead(503, { "content-type": "application/xml" });
      res.end("<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>");
      return;
    }
    if (fail === "drop") {
      failed++;
      req.socket.destroy();
      return;
    }
    const forward = request(
      {
        host: upstream.hostname,
        port: upstream.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    forward.on("error", () => res.destroy());
    req.pipe(forward);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    get mode() {
      return state.mode;
    },
    set mode(next: FaultMode) {
      state.mode = next;
    },
    get requests() {
      return requests;
    },
    get failed() {
      return failed;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
