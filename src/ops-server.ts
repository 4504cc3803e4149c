import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { monitorEventLoopDelay } from "node:perf_hooks";
import type { Logger } from "pino";
import type { Metrics } from "./metrics.ts";
import type { Service } from "./service.ts";

/** An event loop that stalled this long since the last look is reported unhealthy. */
const STALL_LIMIT_MS = 10_000;

export interface OpsServer {
  url: string;
  close(): Promise<void>;
}

/**
 * The operator's endpoints: /metrics (Prometheus), /healthz (alive, event loop not stalled),
 * /readyz (queues serving, not draining), /partners (per-partner state, `?state=` filters).
 */
export async function startOpsServer(
  deps: { service: Service; metrics: Metrics; log: Logger },
  options: { host: string; port: number },
): Promise<OpsServer> {
  const { service, metrics, log } = deps;
  const loopDelay = monitorEventLoopDelay({ resolution: 20 });
  loopDelay.enable();
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://ops");
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { "content-type": "application/json" }).end(`${JSON.stringify(body)}\n`);
    };
    switch (url.pathname) {
      case "/metrics":
        metrics.registry.metrics().then(
          (text) => res.writeHead(200, { "content-type": metrics.registry.contentType }).end(text),
          (err: unknown) => {
            log.error({ err }, "metrics collection failed");
            res.writeHead(500).end();
          },
        );
        return;
      case "/healthz": {
        const stalledMs = loopDelay.max / 1e6;
        loopDelay.reset();
        json(stalledMs > STALL_LIMIT_MS ? 503 : 200, {
          ok: stalledMs <= STALL_LIMIT_MS,
          eventLoopMaxDelayMs: Math.round(stalledMs),
        });
        return;
      }
      case "/readyz": {
        const readiness = service.readiness();
        json(readiness.ready ? 200 : 503, readiness);
        return;
      }
      case "/partners": {
        const state = url.searchParams.get("state");
        const partners = service.partnerSnapshots().filter((p) => !state || p.state === state);
        json(200, { partners });
        return;
      }
      default:
        json(404, { error: "not found", endpoints: ["/metrics", "/healthz", "/readyz", "/partners"] });
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://${options.host === "0.0.0.0" ? "127.0.0.1" : options.host}:${port}`;
  log.info({ url }, "ops server listening: /metrics /healthz /readyz /partners");
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        loopDelay.disable();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
