import type { Logger } from "pino";

export interface Stoppable {
  stop(deadline: AbortSignal): Promise<number>;
}

/**
 * On the first SIGTERM or SIGINT: drain within `deadlineMs`, then resolve with the exit code.
 * A second signal cuts the drain short (what is undelivered is released at once); if even the
 * release hangs, the process exits a moment after the deadline rather than never.
 */
export function onShutdownSignal(
  service: Stoppable,
  log: Logger,
  deadlineMs: number,
  beforeExit?: () => Promise<void>,
): Promise<number> {
  return new Promise((resolve) => {
    const deadline = new AbortController();
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        log.warn({ signal }, "second signal: releasing what is undelivered and exiting");
        deadline.abort();
        return;
      }
      stopping = true;
      log.info({ signal, deadlineMs }, "shutting down: draining");
      const timer = setTimeout(() => deadline.abort(), deadlineMs);
      const hardStop = setTimeout(() => {
        log.error("shutdown did not finish after the deadline; exiting anyway");
        resolve(1);
      }, deadlineMs + 5000);
      hardStop.unref();
      service
        .stop(deadline.signal)
        .then(async (released) => {
          clearTimeout(timer);
          clearTimeout(hardStop);
          await beforeExit?.();
          log.info({ released }, "shutdown complete");
          resolve(0);
        })
        .catch((err: unknown) => {
          log.error({ err }, "shutdown failed");
          resolve(1);
        });
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
  });
}
