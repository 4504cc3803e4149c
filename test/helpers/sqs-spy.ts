/**
 * Watches what a real SQSClient sends and receives, through the SDK's own middleware stack, so a
 * test can count calls and messages at the protocol level without touching the code under test.
 */
import { SQSClient } from "@aws-sdk/client-sqs";
import type { Emulator } from "./emulator.ts";

export interface SqsSpy {
  sqs: SQSClient;
  /** Calls started, by command name (e.g. "ReceiveMessageCommand"). */
  started: Map<string, number>;
  /** Messages received and not yet deleted or released (visibility set to 0), as seen on the wire. */
  outstanding: () => number;
  maxOutstanding: () => number;
  /** Receipt handle → message id of everything received. */
  idByReceipt: Map<string, string>;
  /** Runs before each DeleteMessageBatch is sent, with the message ids it deletes. */
  beforeDelete?: (ids: string[]) => Promise<void> | void;
}

export function spySqs(emu: Emulator): SqsSpy {
  const sqs = new SQSClient({ region: emu.region, endpoint: emu.endpoint, useQueueUrlAsEndpoint: false });
  const held = new Set<string>();
  let max = 0;
  const spy: SqsSpy = {
    sqs,
    started: new Map(),
    outstanding: () => held.size,
    maxOutstanding: () => max,
    idByReceipt: new Map(),
  };
  sqs.middlewareStack.add(
    (next, context) => async (args) => {
      const name = context.commandName as string;
      spy.started.set(name, (spy.started.get(name) ?? 0) + 1);
      const input = args.input as {
        Entries?: { Id?: string; ReceiptHandle?: string; VisibilityTimeout?: number }[];
      };
      if (name === "DeleteMessageBatchCommand" && spy.beforeDelete) {
        await spy.beforeDelete(
          (input.Entries ?? []).map((e) => spy.idByReceipt.get(e.ReceiptHandle ?? "") ?? "?"),
        );
      }
      const result = await next(args);
      const output = result.output as {
        Messages?: { MessageId?: string; ReceiptHandle?: string }[];
        Successful?: { Id?: string }[];
      };
      if (name === "ReceiveMessageCommand") {
        for (const m of output.Messages ?? []) {
          spy.idByReceipt.set(m.ReceiptHandle as string, m.MessageId as string);
          held.add(m.MessageId as string);
        }
        max = Math.max(max, held.size);
      }
      const releasing = name === "ChangeMessageVisibilityBatchCommand";
      if (name === "DeleteMessageBatchCommand" || releasing) {
        for (const ok of output.Successful ?? []) {
          const entry = input.Entries?.find((e) => e.Id === ok.Id);
          if (releasing && entry?.VisibilityTimeout !== 0) continue;
          held.delete(spy.idByReceipt.get(entry?.ReceiptHandle ?? "") ?? "");
        }
      }
      return result;
    },
    { step: "initialize", name: "octorelayTestSpy" },
  );
  return spy;
}
