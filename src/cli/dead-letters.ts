/**
 * `octorelay dead-letters peek|redrive --queue NAME`: straight against SQS with src/ops/dead-letters.ts
 * and the config, not through a running service. Dead letters pile up exactly when the service is
 * failing (crash-looping, not deployed yet, its ops port unreachable), and reading them needs nothing
 * from its memory: SQS holds them, the config says which queues they may go back to, and IAM decides
 * who may read and move them (no ops token involved).
 */
import { pino } from "pino";
import { createAwsClients } from "../aws-clients.ts";
import { loadConfig } from "../config.ts";
import { redactUrlsIn } from "../ops/console/partners-view.ts";
import {
  DeadLetters,
  type PeekedMessage,
  redriveProblems,
  resolveDeadLetterRoutes,
} from "../ops/dead-letters.ts";
import { duration, isoTime, printable } from "./partners.ts";

/** ReceiveMessage returns at most 10 a call; the peek gathers up to this many. */
const MAX_PEEK = 100;

interface CommonOptions {
  queue?: string | undefined;
  config?: string | undefined;
  json: boolean;
}

/** The queue's DeadLetters, or the exit code and line of why not. */
async function open(
  command: string,
  options: CommonOptions,
): Promise<{ dead: DeadLetters; queue: string; dlqUrl: string } | { code: 1 | 2; message: string }> {
  if (!options.queue)
    return { code: 2, message: "say which queue: --queue NAME (a queue's name in the config)" };
  const config = loadConfig(options.config ? { files: [options.config] } : {});
  const names = config.queues.map((q) => q.name);
  if (!names.includes(options.queue)) {
    return {
      code: 2,
      message: `--queue ${JSON.stringify(options.queue)}: not a queue of the config; valid: ${names.join(", ") || "(none configured)"}`,
    };
  }
  const clients = createAwsClients(config.aws);
  // Warnings and errors only, on stderr: stdout is the result (JSON with --json).
  const log = pino(
    { level: process.env.OCTORELAY_DEBUG === "1" ? "debug" : "warn", base: { command } },
    pino.destination(2),
  );
  const routes = await resolveDeadLetterRoutes(clients.sqs, config.queues);
  const route = routes.find((r) => r.queue === options.queue);
  if (!route?.deadLetterQueueUrl) {
    return {
      code: 2,
      message: `queue ${JSON.stringify(options.queue)} has no dead-letter queue: set its deadLetterQueue or give it a redrive policy`,
    };
  }
  return {
    dead: new DeadLetters({ sqs: clients.sqs, log }, { routes }),
    queue: options.queue,
    dlqUrl: route.deadLetterQueueUrl,
  };
}

function fail(command: string, outcome: { code: 1 | 2; message: string }, json: boolean): number {
  if (json) process.stdout.write(`${JSON.stringify({ ok: false, error: outcome.message })}\n`);
  process.stderr.write(
    `octorelay ${command}: ${outcome.message}${outcome.code === 2 ? ` (see octorelay ${command} --help)` : ""}\n`,
  );
  return outcome.code;
}

export async function deadLettersPeek(options: CommonOptions & { max: number }): Promise<number> {
  const command = "dead-letters peek";
  if (options.max > MAX_PEEK) {
    return fail(
      command,
      { code: 2, message: `--max: at most ${MAX_PEEK}; got ${options.max}` },
      options.json,
    );
  }
  const opened = await open(command, options);
  if ("code" in opened) return fail(command, opened, options.json);
  const messages = (
    await opened.dead.peek(opened.queue, { max: options.max, signal: AbortSignal.timeout(30_000) })
  ).map(
    // A reason may quote a partner's URL: its query and password are secrets.
    (m): PeekedMessage => ({ ...m, reason: redactUrlsIn(m.reason) }),
  );
  const dlq = opened.dlqUrl.split("/").pop() ?? opened.dlqUrl;
  if (options.json) {
    process.stdout.write(`${JSON.stringify({ queue: opened.queue, deadLetterQueue: dlq, messages })}\n`);
    return 0;
  }
  const nowMs = Date.now();
  const out = [
    messages.length === 0
      ? `no dead letters in ${dlq} (the dead-letter queue of ${opened.queue})`
      : `${messages.length} dead letter${messages.length === 1 ? "" : "s"} in ${dlq} (the dead-letter queue of ${opened.queue}), oldest first; peeking made them visible again at once and added one to their receive count`,
  ];
  for (const [i, m] of messages.entries()) {
    out.push(
      "",
      `${i + 1}. ${m.messageId}  sent ${m.sentAtMs ? `${isoTime(m.sentAtMs)} (${duration(nowMs - m.sentAtMs)} ago)` : "?"}  received ${m.receiveCount} time${m.receiveCount === 1 ? "" : "s"}`,
      `   reason:  ${m.reason ? printable(m.reason) : "(none recorded: moved by the queue's redrive policy after maxReceiveCount receives)"}`,
      `   source:  ${m.sourceQueue ? `${printable(m.sourceQueue)}${m.sourceMessageId ? ` (message ${printable(m.sourceMessageId)})` : ""}` : "-"}`,
    );
    if (m.attributes.length > 0) {
      out.push(
        `   attributes: ${m.attributes.map((a) => `${printable(a.name)}=${printable(a.value)}`).join(", ")}`,
      );
    }
    out.push(`   body (${m.bodyChars} chars${m.truncated ? ", cut" : ""}): ${printable(m.body)}`);
  }
  if (messages.length > 0) {
    out.push(
      "",
      `redrive them: octorelay dead-letters redrive --queue ${opened.queue} --all (or --id <message id>)`,
    );
  }
  process.stdout.write(`${out.join("\n")}\n`);
  return 0;
}

export async function deadLettersRedrive(
  options: CommonOptions & { all: boolean; id: string[] },
): Promise<number> {
  const command = "dead-letters redrive";
  if (options.all === options.id.length > 0) {
    return fail(
      command,
      { code: 2, message: "say which messages: --all, or --id <message id> (repeatable), not both" },
      options.json,
    );
  }
  if (options.id.length > 1000) {
    return fail(command, { code: 2, message: "--id: at most 1000 messages per redrive" }, options.json);
  }
  const opened = await open(command, options);
  if ("code" in opened) return fail(command, opened, options.json);
  const result = await opened.dead.redrive(
    opened.queue,
    options.all ? { all: true } : { messageIds: options.id },
  );
  if (options.json) process.stdout.write(`${JSON.stringify({ queue: opened.queue, ...result })}\n`);
  if (result.method === "move-task") {
    if (!options.json) {
      process.stdout.write(
        `SQS is moving every message of ${opened.queue}'s dead-letter queue back to ${opened.queue} (message-move task ${result.taskHandle})\n`,
      );
    }
    return 0;
  }
  const problems = redriveProblems(result, (ids) => ids.map(printable).join(", "));
  if (!options.json) {
    const more = result.more ? "; more remain: run it again" : "";
    process.stdout.write(
      `redrove ${result.redriven} message${result.redriven === 1 ? "" : "s"} back to ${opened.queue}${more}\n`,
    );
  }
  if (problems.length === 0) return 0;
  process.stderr.write(`octorelay ${command}: ${problems.join("; ")}\n`);
  return 1;
}
