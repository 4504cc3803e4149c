/**
 * What the LocalStack setup declares, read from its own files (the compose file and the init
 * hook), and an embedded emulator holding the same named resources, for the docs test.
 */
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { CreateBucketCommand, S3Client } from "@aws-sdk/client-s3";
import { CreateQueueCommand, GetQueueAttributesCommand, SQSClient } from "@aws-sdk/client-sqs";
import { startFauxqs } from "fauxqs";
import type { Emulator } from "./emulator.ts";

export interface InitResources {
  /** Source queue → its dead-letter queue, as the init hook's QUEUES pairs them. */
  queues: Map<string, string>;
  bucket: string;
  maxReceiveCount: number;
  visibilityTimeoutSec: number;
}

/** Reads QUEUES, BUCKET, MAX_RECEIVE_COUNT and VISIBILITY_TIMEOUT from the init hook. */
export function readInitScript(file: string): InitResources {
  const text = readFileSync(file, "utf8");
  const array = /readonly QUEUES=\(([^)]*)\)/.exec(text);
  const scalar = (name: string) => {
    const m = new RegExp(`readonly ${name}="?([^"\\s]+)"?`).exec(text);
    if (!m) throw new Error(`${file}: no ${name}=... found`);
    return m[1] as string;
  };
  if (!array) throw new Error(`${file}: no QUEUES=(...) array found`);
  const queues = new Map<string, string>();
  for (const [, pair] of (array[1] as string).matchAll(/"([^"]+)"/g)) {
    const [queue, dlq] = (pair as string).split(":");
    if (!queue || !dlq) throw new Error(`${file}: QUEUES entry "${pair}" is not "queue:dead-letter-queue"`);
    queues.set(queue, dlq);
  }
  return {
    queues,
    bucket: scalar("BUCKET"),
    maxReceiveCount: Number(scalar("MAX_RECEIVE_COUNT")),
    visibilityTimeoutSec: Number(scalar("VISIBILITY_TIMEOUT")),
  };
}

export interface ComposeService {
  name: string;
  /** `environment:` entries (map form). */
  environment: Record<string, string>;
  /** `volumes:` entries, host path resolved against the compose file's directory. */
  volumes: { host: string; target: string }[];
  stopGracePeriodSec: number | undefined;
  ports: string[];
  /** `command:` in its exec (JSON array) form, if set. */
  command: string[] | undefined;
}

/**
 * The services of a compose file, read by indentation: enough for the keys above, in the map
 * and list forms the file uses. Not a YAML parser; it fails loudly on what it cannot read.
 */
export function readCompose(file: string): Map<string, ComposeService> {
  const lines = readFileSync(file, "utf8").split("\n");
  const services = new Map<string, ComposeService>();
  const start = lines.findIndex((l) => /^services:\s*$/.test(l));
  if (start < 0) throw new Error(`${file}: no top-level services:`);
  let service: ComposeService | undefined;
  let section: string | undefined;
  for (const raw of lines.slice(start + 1)) {
    const line = raw.replace(/\s+#.*$/, "");
    if (line.trim() === "" || line.trim().startsWith("#")) continue;
    if (/^\S/.test(line)) break;
    const indent = (/^ */.exec(line)?.[0] ?? "").length;
    const text = line.trim();
    if (indent === 2) {
      const name = /^([\w-]+):$/.exec(text)?.[1];
      if (!name) throw new Error(`${file}: cannot read service line: ${raw}`);
      service = {
        name,
        environment: {},
        volumes: [],
        stopGracePeriodSec: undefined,
        ports: [],
        command: undefined,
      };
      services.set(name, service);
      section = undefined;
    } else if (indent === 4 && service) {
      const [, key, value] = /^([\w-]+):\s*(.*)$/.exec(text) ?? [];
      section = key;
      if (key === "stop_grace_period") {
        const m = /^(\d+)s$/.exec(value ?? "");
        if (!m) throw new Error(`${file}: stop_grace_period of ${service.name} is not "<n>s": ${value}`);
        service.stopGracePeriodSec = Number(m[1]);
      }
      if (key === "command") {
        if (!value?.startsWith("["))
          throw new Error(`${file}: command of ${service.name} is not a JSON array`);
        service.command = JSON.parse(value) as string[];
      }
    } else if (indent >= 6 && service) {
      const unquote = (s: string) => s.replace(/^['"]|['"]$/g, "");
      if (section === "environment") {
        const [, key, value] = /^([\w-]+):\s*(.*)$/.exec(text) ?? [];
        if (key) service.environment[key] = unquote(value ?? "");
      } else if (section === "volumes" && text.startsWith("- ")) {
        const [host = "", target = ""] = unquote(text.slice(2).trim()).split(":");
        service.volumes.push({ host: resolve(dirname(file), host), target });
      } else if (section === "ports" && text.startsWith("- ")) {
        service.ports.push(unquote(text.slice(2).trim()));
      }
    }
  }
  return services;
}

/** The host file a compose service mounts at `target`, if any. */
export function mountedFile(service: ComposeService, target: string): string | undefined {
  return service.volumes.find((v) => v.target === target)?.host;
}

/**
 * fauxqs in this process, always (never an outside endpoint): the docs test creates queues with
 * the fixed names the docs use, which must not meet a real LocalStack's.
 */
export async function startEmbeddedEmulator(): Promise<Emulator> {
  const region = "us-east-1";
  process.env.AWS_ACCESS_KEY_ID ??= "test";
  process.env.AWS_SECRET_ACCESS_KEY ??= "test";
  const server = await startFauxqs({ port: 0, logger: false });
  const endpoint = server.address;
  return {
    endpoint,
    region,
    sqs: new SQSClient({ region, endpoint, useQueueUrlAsEndpoint: false }),
    s3: new S3Client({ region, endpoint, forcePathStyle: true }),
    async stop() {
      await server.stop();
    },
  };
}

/** Creates what the init hook creates (same names, redrive policy and visibility), with the SDK. */
export async function createInitResources(emu: Emulator, init: InitResources): Promise<Map<string, string>> {
  const urls = new Map<string, string>();
  for (const [queue, dlq] of init.queues) {
    const dlqUrl = (await emu.sqs.send(new CreateQueueCommand({ QueueName: dlq }))).QueueUrl as string;
    const arn = (
      await emu.sqs.send(new GetQueueAttributesCommand({ QueueUrl: dlqUrl, AttributeNames: ["QueueArn"] }))
    ).Attributes?.QueueArn;
    const url = (
      await emu.sqs.send(
        new CreateQueueCommand({
          QueueName: queue,
          Attributes: {
            VisibilityTimeout: String(init.visibilityTimeoutSec),
            RedrivePolicy: JSON.stringify({
              deadLetterTargetArn: arn,
              maxReceiveCount: String(init.maxReceiveCount),
            }),
          },
        }),
      )
    ).QueueUrl as string;
    urls.set(queue, url);
    urls.set(dlq, dlqUrl);
  }
  await emu.s3.send(new CreateBucketCommand({ Bucket: init.bucket }));
  return urls;
}

export const LOCALSTACK_DIR = "localstack";
export const INIT_SCRIPT = join(LOCALSTACK_DIR, "init", "ready.d", "01-octorelay.sh");
export const COMPOSE_FILE = join(LOCALSTACK_DIR, "docker-compose.yml");
