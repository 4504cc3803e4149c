/**
 * `octorelay demo`: fauxqs (SQS + S3 emulator) in this process, the queues of config/demo.json (with
 * dead-letter queues and redrive policies) and their buckets created, sample traffic for the sample
 * handlers across many accounts, live progress, and a summary of where everything went.
 * A development command: loaded only by the CLI, on demand (fauxqs is a devDependency).
 */
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { Writable } from "node:stream";
import { CreateBucketCommand, ListObjectsV2Command, type S3Client } from "@aws-sdk/client-s3";
import { CreateQueueCommand, GetQueueAttributesCommand, type SQSClient } from "@aws-sdk/client-sqs";
import type { Logger } from "pino";
import pinoPretty from "pino-pretty";
import { type AwsClients, createAwsClients } from "../aws-clients.ts";
import { countMalformed, MALFORMED_EVERY, sendSampleTraffic } from "../cli/sample-traffic.ts";
import { formatCount, RecentRate, StatusLine } from "../cli/status.ts";
import { APP_ROOT, type Config, loadConfig, type QueueConfig, queueNameOf } from "../config.ts";
import { createLogger } from "../logger.ts";
import { serviceConsole } from "../ops/console/wiring.ts";
import { Metrics } from "../ops/metrics.ts";
import { type OpsServer, startOpsServer } from "../ops/ops-server.ts";
import type { Relay } from "../pipeline/relay.ts";
import { Service } from "../service.ts";
import { type OwnClients, provisionOnDemand, startEmbeddedAws } from "./emulator.ts";

export interface DemoOptions {
  messages: number;
  accounts: number;
  forever: boolean;
  /** The user's config file, applied over config/demo.json. */
  config?: string | undefined;
}

export const DEMO_CONFIG = resolve(APP_ROOT, "config", "demo.json");
/** How often the status line is redrawn on a terminal, and a plain progress line printed elsewhere. */
const TTY_TICK_MS = 250;
const PLAIN_TICK_MS = 5000;

export async function demo(options: DemoOptions): Promise<number> {
  if (!existsSync(DEMO_CONFIG)) {
    process.stderr.write(
      `octorelay demo: ${DEMO_CONFIG} is missing: it holds the demo's queues and bucket (git checkout config/demo.json)\n`,
    );
    return 1;
  }
  const aws = await startEmbeddedAws("demo");
  try {
    const loaded = loadConfig({ files: [DEMO_CONFIG, ...(options.config ? [options.config] : [])] });
    // The console's actions need a token: a demo without one gets its own, shown once (development
    // only, and never one the user chose: that one is theirs to know).
    const generatedToken = loaded.ops.token ? undefined : randomBytes(24).toString("base64url");
    const config = generatedToken ? { ...loaded, ops: { ...loaded.ops, token: generatedToken } } : loaded;
    return await new Demo(config, options, aws.own, generatedToken).run();
  } finally {
    await aws.stop();
  }
}

class Demo {
  readonly #config: Config;
  readonly #options: DemoOptions;
  /** The demo's own clients (making queues, sending traffic, listing), apart from the service's. */
  readonly #own: OwnClients;
  readonly #status = new StatusLine();
  /** Counting from the demo's start, so its first status line already shows a rate. */
  readonly #rate = new RecentRate(5000, Date.now());
  /** Message ids of the bodies sent malformed on purpose, so their dead-letter lines can say so. */
  readonly #malformedIds = new Set<string>();
  readonly #log: Logger;
  #sent = 0;
  /** What the demo is doing, for the status line. */
  #phase: string | (() => string) = "sending";
  #startedAtMs = Date.now();
  #settledAtMs: number | undefined;
  /** The ops token made for this run when none was configured; printed once. */
  readonly #generatedToken: string | undefined;

  constructor(config: Config, options: DemoOptions, own: OwnClients, generatedToken?: string) {
    this.#config = config;
    this.#generatedToken = generatedToken;
    this.#own = own;
    this.#options = options;
    const prettify = pinoPretty.prettyFactory({
      colorize: process.stderr.isTTY === true,
      singleLine: true,
      ignore: "pid,hostname,service",
    });
    const status = this.#status;
    // Log lines go above the status line, not through it.
    const destination = new Writable({
      write(chunk: Buffer, _encoding, done) {
        status.print(prettify(chunk.toString("utf8")), process.stderr);
        done();
      },
    });
    this.#log = createLogger(config.logLevel, {
      destination,
      mixin: (fields) =>
        this.#malformedIds.has((fields as { messageId?: string }).messageId ?? "")
          ? { onPurpose: "a malformed sample body, sent by the demo to show the dead-letter path" }
          : {},
    });
  }

  async run(): Promise<number> {
    const config = this.#config;
    const log = this.#log;
    const clients = createAwsClients(config.aws);
    const own = this.#own;
    provisionOnDemand(clients, own);
    const urls = await createResources(own.sqs, own.s3, config.queues);
    const service = new Service({ ...clients, log }, config);
    const metrics = new Metrics(service, config.ops);
    metrics.instrumentClients(clients);
    const ops = config.ops.enabled ? await this.#startOps(service, metrics, clients) : undefined;
    try {
      await service.start();
    } catch (err) {
      await ops?.close();
      throw err;
    }

    const malformed = countMalformed(config.queues, this.#options.messages);
    this.#say(
      `demo: sending ${formatCount(this.#options.messages)} sample messages over ${formatCount(this.#options.accounts)} accounts to ${config.queues.map((q) => q.name).join(", ")}` +
        (malformed > 0 ? `; ${malformed} of them malformed on purpose, to show the dead-letter path` : ""),
    );
    if (ops) {
      this.#say(`ops: ${ops.url}/metrics  ${ops.url}/healthz  ${ops.url}/readyz  ${ops.url}/partners`);
      this.#say(`console: ${ops.url}/`);
      if (this.#generatedToken) {
        this.#say(
          `actions token for this demo: ${this.#generatedToken} (made for this run: log in to the console with it, or OCTORELAY_OPS_TOKEN=… octorelay partners pause <account> --url ${ops.url}; set OCTORELAY_OPS_TOKEN to choose your own)`,
        );
      }
    }
    this.#startedAtMs = Date.now();

    const stop = new Stopper(service, log, config.shutdownDeadlineMs);
    const sending = new AbortController();
    let trafficFailed: unknown;
    const traffic = sendSampleTraffic(own.sqs, config.queues, urls, {
      messages: this.#options.messages,
      accounts: this.#options.accounts,
      onSent: (n) => {
        this.#sent += n;
      },
      onMalformed: (id) => this.#malformedIds.add(id),
      signal: sending.signal,
    }).catch((err: unknown) => {
      trafficFailed = err;
      log.error({ err }, "sample traffic failed");
    });

    const ticker = setInterval(
      () => this.#tick(service.relays),
      this.#status.tty ? TTY_TICK_MS : PLAIN_TICK_MS,
    );
    await Promise.race([traffic, stop.requested]);
    sending.abort();
    if (!trafficFailed && !stop.isRequested) {
      this.#phase = "settling";
      await Promise.race([this.#settled(service.relays), stop.requested]);
      if (this.#options.forever && !stop.isRequested) {
        this.#phase = "idle: traffic settled; Ctrl-C to stop";
        await stop.requested;
      }
    }
    const longPollSec = Math.max(...config.queues.map((q) => q.waitTimeSec));
    this.#phase = () =>
      `draining: ${formatCount(sum(service.relays, (r) => r.activeDispatchers))} dispatchers flushing, open long polls returning (up to ${longPollSec} s)`;
    this.#tick(service.relays);
    const code = await stop.stop(stop.isRequested ? undefined : "sample traffic settled");
    await ops?.close();
    clearInterval(ticker);
    this.#phase = "done";
    this.#tick(service.relays);
    this.#status.done();
    await this.#summary(own.s3, service.relays, malformed);
    return trafficFailed ? 1 : code;
  }

  #say(line: string): void {
    this.#status.print(line);
  }

  async #startOps(service: Service, metrics: Metrics, clients: AwsClients): Promise<OpsServer> {
    const log = this.#log;
    // A console per attempt: one whose server never listened is closed (it samples rates on a timer).
    const start = async (port: number) => {
      const opsConsole = serviceConsole({ service, ...clients, log }, this.#config);
      try {
        return await startOpsServer(
          { service, metrics, log, console: opsConsole },
          { ...this.#config.ops, port },
        );
      } catch (err) {
        await opsConsole.close();
        throw err;
      }
    };
    try {
      return await start(this.#config.ops.port);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EADDRINUSE") throw err;
      // Another octorelay has the port: the demo's endpoints take any free one.
      this.#say(
        `ops: port ${this.#config.ops.port} is in use on ${this.#config.ops.host}; using a free port instead`,
      );
      return start(0);
    }
  }

  /** Every message sent has been deleted (delivered, filtered out or dead-lettered). */
  #settled(relays: Relay[]): Promise<void> {
    return new Promise((resolveSettled) => {
      const check = () => {
        if (sum(relays, (r) => r.stats.deleted) >= this.#sent) {
          this.#settledAtMs = Date.now();
          resolveSettled();
        } else setTimeout(check, 100).unref();
      };
      check();
    });
  }

  #tick(relays: Relay[]): void {
    const t = totals(relays);
    const rateNow = this.#rate.sample(t.deleted);
    const seconds = (Date.now() - this.#startedAtMs) / 1000;
    const line =
      `[${seconds.toFixed(1).padStart(6)}s] sent ${formatCount(this.#sent)} · received ${formatCount(t.received)} · ` +
      `delivered ${formatCount(t.flushed)} records in ${formatCount(t.objects)} objects · dead-lettered ${formatCount(t.deadLettered)} · ` +
      `in flight ${formatCount(t.unacked)} · ${formatCount(rateNow)} msg/s now · ${typeof this.#phase === "function" ? this.#phase() : this.#phase}`;
    if (this.#status.tty) this.#status.set(line);
    else process.stdout.write(`${line}\n`);
  }

  async #summary(s3: S3Client, relays: Relay[], malformed: number): Promise<void> {
    const out: string[] = ["", "Where it went:"];
    for (const [i, q] of this.#config.queues.entries()) {
      const stats = relays[i]?.stats;
      const listed = await this.#listObjects(s3, q);
      const where = listed
        ? `${formatCount(listed.objects)} objects for ${formatCount(listed.perAccount.size)} accounts in s3://${listed.where}`
        : `${formatCount(stats?.flushes ?? 0)} ${q.destination.type} batches`;
      out.push(
        `  ${q.name} (${q.handlerPath.split("/").pop()}): ${formatCount(stats?.received ?? 0)} received, ${formatCount(stats?.outputs ?? 0)} outputs → ${where}; ` +
          `${formatCount(stats?.deadLettered ?? 0)} dead-lettered to ${q.deadLetterQueue || "(none)"}; ${formatCount(stats?.deleted ?? 0)} deleted`,
      );
      if (listed) {
        const top = [...listed.perAccount.entries()].sort((a, b) => b[1] - a[1]).slice(0, 3);
        out.push(
          `      busiest accounts: ${top.map(([a, n]) => `${a} (${n} object${n === 1 ? "" : "s"})`).join(", ") || "none"}`,
        );
      }
    }
    this.#status.clear();
    const seconds = ((this.#settledAtMs ?? Date.now()) - this.#startedAtMs) / 1000;
    const t = totals(relays);
    out.push(
      `  ${formatCount(t.deleted)} messages settled in ${seconds.toFixed(1)} s: ${formatCount(t.deleted / seconds)} msg/s on average`,
    );
    if (malformed > 0) {
      out.push(
        `  ${malformed} dead-lettered on purpose: malformed sample bodies (1 in ${formatCount(MALFORMED_EVERY)} passthrough bodies is not JSON, to show the dead-letter path)`,
      );
    }
    const unexpected = t.deadLettered - malformed;
    if (unexpected > 0) out.push(`  ${unexpected} more dead-lettered: see the WARN lines above for why`);
    process.stdout.write(`${out.join("\n")}\n\n`);
  }

  /**
   * Objects per account under the queue's prefix, with progress (at 100,000 messages it takes
   * seconds); undefined when the destination is not one S3 bucket to list.
   */
  async #listObjects(
    s3: S3Client,
    q: QueueConfig,
  ): Promise<{ objects: number; perAccount: Map<string, number>; where: string } | undefined> {
    const destination = q.destination;
    if (destination.type !== "s3" || destination.bucket.includes("{")) return undefined;
    const bucket = destination.bucket;
    const segments = destination.keyTemplate.split("/");
    const accountAt = segments.indexOf("{account}");
    // The key's leading segments with no field but {queue}: the prefix all of this queue's objects share.
    const fieldAt = segments.findIndex((segment) => segment.replace("{queue}", "").includes("{"));
    const leading = segments.slice(0, Math.max(0, fieldAt));
    const fixedPrefix = leading.length ? `${leading.join("/").replaceAll("{queue}", q.name)}/` : "";
    const perAccount = new Map<string, number>();
    let objects = 0;
    let token: string | undefined;
    do {
      this.#status.set(
        `summary: listing s3://${bucket}/${fixedPrefix}: ${formatCount(objects)} objects so far`,
      );
      const page = await s3.send(
        new ListObjectsV2Command({ Bucket: bucket, Prefix: fixedPrefix, ContinuationToken: token }),
      );
      for (const o of page.Contents ?? []) {
        objects++;
        const account = accountAt >= 0 ? (o.Key ?? "").split("/")[accountAt] : undefined;
        if (account) perAccount.set(account, (perAccount.get(account) ?? 0) + 1);
      }
      token = page.NextContinuationToken;
    } while (token);
    return { objects, perAccount, where: `${bucket}/${fixedPrefix}` };
  }
}

/**
 * The demo's own end: when the traffic has settled it drains the service itself (no signal sent to
 * itself); Ctrl-C or SIGTERM drains it earlier, and a second one cuts the drain short.
 */
class Stopper {
  readonly requested: Promise<void>;
  #request!: () => void;
  #requested = false;
  readonly #deadline = new AbortController();
  readonly #service: Service;
  readonly #log: Logger;
  readonly #deadlineMs: number;

  constructor(service: Service, log: Logger, deadlineMs: number) {
    this.#service = service;
    this.#log = log;
    this.#deadlineMs = deadlineMs;
    this.requested = new Promise((resolveRequested) => {
      this.#request = resolveRequested;
    });
    const onSignal = (signal: NodeJS.Signals) => {
      if (this.#requested) {
        log.warn({ signal }, "second signal: releasing what is undelivered");
        this.#deadline.abort();
        return;
      }
      log.info({ signal }, "stopping the demo: draining");
      this.#requested = true;
      this.#request();
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
  }

  get isRequested(): boolean {
    return this.#requested;
  }

  /** Drains within the shutdown deadline; resolves 0 when it finished in time. */
  async stop(reason: string | undefined): Promise<number> {
    if (reason) this.#log.info(`${reason}; draining`);
    this.#requested = true;
    this.#request();
    const timer = setTimeout(() => this.#deadline.abort(), this.#deadlineMs);
    try {
      const released = await this.#service.stop(this.#deadline.signal);
      this.#log.info({ released }, "demo stopped");
      return released > 0 ? 1 : 0;
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Queues with their dead-letter queues and redrive policies, and the buckets, as config names them. */
async function createResources(
  sqs: SQSClient,
  s3: S3Client,
  queues: QueueConfig[],
): Promise<Map<string, string>> {
  const urls = new Map<string, string>();
  for (const q of queues) {
    const attributes: Record<string, string> = { VisibilityTimeout: String(q.visibilityTimeoutSec) };
    if (q.deadLetterQueue) {
      const dlq = await sqs.send(new CreateQueueCommand({ QueueName: queueNameOf(q.deadLetterQueue) }));
      const arn = await sqs.send(
        new GetQueueAttributesCommand({ QueueUrl: dlq.QueueUrl, AttributeNames: ["QueueArn"] }),
      );
      attributes.RedrivePolicy = JSON.stringify({
        deadLetterTargetArn: arn.Attributes?.QueueArn,
        maxReceiveCount: "5",
      });
    }
    const created = await sqs.send(new CreateQueueCommand({ QueueName: q.name, Attributes: attributes }));
    urls.set(q.name, created.QueueUrl as string);
  }
  const buckets = new Set<string>();
  for (const q of queues) {
    if (q.destination.type === "s3" && !q.destination.bucket.includes("{")) buckets.add(q.destination.bucket);
  }
  for (const bucket of buckets) await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  return urls;
}

function sum(relays: Relay[], pick: (r: Relay) => number): number {
  return relays.reduce((n, r) => n + pick(r), 0);
}

function totals(relays: Relay[]) {
  return {
    received: sum(relays, (r) => r.stats.received),
    flushed: sum(relays, (r) => r.stats.flushedRecords),
    objects: sum(relays, (r) => r.stats.flushes),
    deleted: sum(relays, (r) => r.stats.deleted),
    deadLettered: sum(relays, (r) => r.stats.deadLettered),
    unacked: sum(relays, (r) => r.unacked),
  };
}
