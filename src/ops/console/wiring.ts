/**
 * The one adapter between a running Service and the console's contracts: where the console reads
 * the limits, the recent errors, the queue URLs, and how it replays. Whoever starts the ops server
 * calls `serviceConsole(...)` and passes the handler in.
 */
import type { S3Client } from "@aws-sdk/client-s3";
import type { SQSClient } from "@aws-sdk/client-sqs";
import type { Logger } from "pino";
import type { Config } from "../../config.ts";
import { replayParked } from "../../delivery/replay.ts";
import type { Service } from "../../service.ts";
import { type DeadLetterRoute, resolveDeadLetterRoutes } from "../dead-letters.ts";
import { type ConsoleDeps, type ConsoleHandler, type ConsoleOptions, createConsole } from "./console.ts";

export function serviceConsoleDeps(
  deps: { service: Service; sqs: SQSClient; s3: S3Client; log: Logger; env?: NodeJS.ProcessEnv },
  config: Config,
): ConsoleDeps {
  const { service, sqs, s3, log } = deps;
  return {
    log,
    service,
    limits: service.partners.limits,
    sqs,
    s3,
    routes: () => relayRoutes(service) ?? resolveDeadLetterRoutes(sqs, config.queues),
    replay: (account, signal) =>
      replayParked({ s3, partners: service.partners, log }, config, { accounts: [account], signal }),
    recentError: (account) => service.partners.recentError(account),
    // Every replica's operator pauses (Redis in cluster mode), not only those made from this console.
    pausedAccounts: async () =>
      new Map((await service.partners.limits.pausedAccounts()).map((p) => [p.account, p.pause])),
    env: deps.env ?? process.env,
  };
}

/**
 * The URLs the relays resolved at start; undefined while one has not started (the ops server is up
 * before the relays are), and then the console asks SQS itself, with the same calls.
 */
function relayRoutes(service: Service): Promise<DeadLetterRoute[]> | undefined {
  const routes: DeadLetterRoute[] = [];
  for (const relay of service.relays) {
    const { queueUrl, deadLetterQueueUrl } = relay;
    if (queueUrl === undefined || deadLetterQueueUrl === undefined) return undefined;
    routes.push({ queue: relay.options.name, queueUrl, deadLetterQueueUrl });
  }
  return Promise.resolve(routes);
}

export function serviceConsole(
  deps: { service: Service; sqs: SQSClient; s3: S3Client; log: Logger; env?: NodeJS.ProcessEnv },
  config: Config,
  options: Partial<Omit<ConsoleOptions, "config" | "token" | "requireTokenForRead">> = {},
): ConsoleHandler {
  return createConsole(serviceConsoleDeps(deps, config), {
    ...options,
    token: config.ops.token,
    requireTokenForRead: config.ops.requireTokenForRead,
    config,
  });
}
