import { describe, expect, it } from "vitest";
import {
  type Decision,
  decide,
  type Holding,
  type MessageOutcome,
  type QueuePolicy,
  shareLimit,
} from "../../src/pipeline/message-policy.ts";

/** share = floor(100 × 0.25) = 25 outputs per account; backoff at its ceiling (random = 1). */
const queue: QueuePolicy = {
  maxReceiveCount: 5,
  deadLetterConfigured: true,
  maxUnacked: 100,
  partnerShare: 0.25,
  retryBaseMs: 2000,
  retryMaxMs: 900_000,
  flushIntervalMs: 1000,
  random: () => 1,
};

const out = (...accounts: string[]) => accounts.map((account, i) => ({ account, line: `{"n":${i}}` }));
const ok = (...accounts: string[]): MessageOutcome => ({ kind: "ok", outputs: out(...accounts) });

interface Row {
  name: string;
  outcome: MessageOutcome;
  receiveCount?: number;
  queue?: Partial<QueuePolicy>;
  /** Outputs each account holds now (0 when not listed). */
  held?: Record<string, number>;
  /** Accounts delivering now (delivered since their dispatcher started, no batch failing). */
  delivering?: string[];
  decision: Decision;
}

const rows: Row[] = [
  // Fairness: route or shed a handled message.
  {
    name: "ok, nothing held: route",
    outcome: ok("acme", "acme"),
    decision: { action: "route", outputs: out("acme", "acme") },
  },
  {
    name: "ok without outputs: route (deleted at once)",
    outcome: ok(),
    decision: { action: "route", outputs: [] },
  },
  {
    name: "ok, one output that fills the share exactly: route",
    outcome: ok("acme"),
    held: { acme: 24 },
    decision: { action: "route", outputs: out("acme") },
  },
  {
    name: "ok, one output past the share: shed after the retry delay",
    outcome: ok("acme"),
    held: { acme: 25 },
    decision: { action: "shed", account: "acme", delaySec: 2 },
  },
  {
    name: "shed waits at least one flush interval",
    outcome: ok("acme"),
    held: { acme: 25 },
    queue: { flushIntervalMs: 5000 },
    decision: { action: "shed", account: "acme", delaySec: 5 },
  },
  {
    name: "ok, three outputs for one account counted together: shed",
    outcome: ok("acme", "acme", "acme"),
    held: { acme: 23 },
    decision: { action: "shed", account: "acme", delaySec: 2 },
  },
  {
    name: "ok, two outputs that fill the share exactly: route",
    outcome: ok("acme", "acme"),
    held: { acme: 23 },
    decision: { action: "route", outputs: out("acme", "acme") },
  },
  {
    name: "an account holding nothing takes a message however many outputs it has",
    outcome: ok(...Array.from({ length: 30 }, () => "acme")),
    decision: { action: "route", outputs: out(...Array.from({ length: 30 }, () => "acme")) },
  },
  {
    name: "all or nothing: one crowded account sheds the whole message",
    outcome: ok("acme", "globex"),
    held: { globex: 25 },
    decision: { action: "shed", account: "globex", delaySec: 2 },
  },
  {
    name: "the share is at least one output",
    outcome: ok("acme"),
    held: { acme: 1 },
    queue: { maxUnacked: 2, partnerShare: 0.1 },
    decision: { action: "shed", account: "acme", delaySec: 2 },
  },
  {
    name: "past the share of a partner not keeping up, on its last receive: dead-letter with the reason, not SQS's silent redrive",
    outcome: ok("acme"),
    held: { acme: 25 },
    receiveCount: 5,
    decision: {
      action: "dead-letter",
      reason:
        'shed on receive 5 of 5: partner "acme" held its share of the queue\'s budget and was not keeping up (failing, paused or hanging); redrive it once the partner is back',
      retryDelaySec: 32,
    },
  },
  {
    name: "past the limit of a partner that keeps up, on its last receive: route, late rather than dead",
    outcome: ok("acme"),
    held: { acme: 75 },
    delivering: ["acme"],
    receiveCount: 5,
    decision: { action: "route", outputs: out("acme") },
  },
  {
    name: "on its last receive, the account that is not keeping up is the one named",
    outcome: ok("acme", "globex"),
    held: { acme: 100, globex: 50 },
    delivering: ["acme"],
    receiveCount: 5,
    queue: { maxUnacked: 200 },
    decision: {
      action: "dead-letter",
      reason:
        'shed on receive 5 of 5: partner "globex" held its share of the queue\'s budget and was not keeping up (failing, paused or hanging); redrive it once the partner is back',
      retryDelaySec: 32,
    },
  },
  {
    name: "shed on its last receive without a DLQ of ours: shed, SQS's redrive moves it",
    outcome: ok("acme"),
    held: { acme: 25 },
    receiveCount: 5,
    queue: { deadLetterConfigured: false },
    decision: { action: "shed", account: "acme", delaySec: 32 },
  },
  // Borrowing: a delivering partner may use what nobody holds, always leaving one share (25) free.
  {
    name: "a lone delivering partner past its share borrows: route",
    outcome: ok("acme"),
    held: { acme: 60 },
    delivering: ["acme"],
    decision: { action: "route", outputs: out("acme") },
  },
  {
    name: "it borrows up to maxUnacked less one share for the others: shed past it",
    outcome: ok("acme"),
    held: { acme: 75 },
    delivering: ["acme"],
    decision: { action: "shed", account: "acme", delaySec: 2 },
  },
  {
    name: "what others hold is not lent: shed",
    outcome: ok("acme"),
    held: { acme: 40, globex: 35 },
    delivering: ["acme"],
    decision: { action: "shed", account: "acme", delaySec: 2 },
  },
  {
    name: "what is left after the others and a share is lent: route",
    outcome: ok("acme"),
    held: { acme: 40, globex: 20 },
    delivering: ["acme"],
    decision: { action: "route", outputs: out("acme") },
  },
  {
    name: "a partner that is new or failing does not borrow: shed at its share",
    outcome: ok("acme"),
    held: { acme: 25 },
    delivering: ["globex"],
    decision: { action: "shed", account: "acme", delaySec: 2 },
  },
  {
    name: "several outputs borrow together: shed when they do not all fit",
    outcome: ok("acme", "acme", "acme"),
    held: { acme: 73 },
    delivering: ["acme"],
    decision: { action: "shed", account: "acme", delaySec: 2 },
  },
  {
    name: "with a share of half or more, borrowing lends nothing more",
    outcome: ok("acme"),
    held: { acme: 60 },
    delivering: ["acme"],
    queue: { partnerShare: 0.6 },
    decision: { action: "shed", account: "acme", delaySec: 2 },
  },
  // Cancelled at shutdown: another replica takes it at once.
  {
    name: "cancelled: release at once",
    outcome: { kind: "cancelled" },
    decision: { action: "release", cause: "cancelled", delaySec: 0 },
  },
  // Poison.
  {
    name: "poison with a DLQ: dead-letter with the reason",
    outcome: { kind: "poison", reason: "body is not JSON" },
    decision: { action: "dead-letter", reason: "body is not JSON", retryDelaySec: 2 },
  },
  {
    name: "poison without a DLQ: release for the redrive policy",
    outcome: { kind: "poison", reason: "body is not JSON" },
    queue: { deadLetterConfigured: false },
    decision: { action: "release", cause: "no-dead-letter-queue", delaySec: 2, reason: "body is not JSON" },
  },
  // A failing handler: retried with backoff by receive count, dead-lettered on its last receive.
  {
    name: "failed, receive 2 of 5: release after 2 × 2 s",
    outcome: { kind: "failed", reason: "timeout" },
    receiveCount: 2,
    decision: { action: "release", cause: "handler-failed", delaySec: 4, reason: "timeout" },
  },
  {
    name: "failed on the last receive: dead-letter, the reason says which receive",
    outcome: { kind: "failed", reason: "timeout" },
    receiveCount: 5,
    decision: {
      action: "dead-letter",
      reason: "handler failed on receive 5 of 5: timeout",
      retryDelaySec: 32,
    },
  },
  {
    name: "failed past the last receive (redrive lowered meanwhile): dead-letter",
    outcome: { kind: "failed", reason: "timeout" },
    receiveCount: 6,
    decision: {
      action: "dead-letter",
      reason: "handler failed on receive 6 of 5: timeout",
      retryDelaySec: 64,
    },
  },
  {
    name: "failed on the last receive without a DLQ of ours: release, SQS's redrive moves it",
    outcome: { kind: "failed", reason: "timeout" },
    receiveCount: 5,
    queue: { deadLetterConfigured: false },
    decision: { action: "release", cause: "handler-failed", delaySec: 32, reason: "timeout" },
  },
  {
    name: "failed, queue without a redrive policy: always released",
    outcome: { kind: "failed", reason: "timeout" },
    receiveCount: 9,
    queue: { maxReceiveCount: undefined },
    decision: { action: "release", cause: "handler-failed", delaySec: 512, reason: "timeout" },
  },
  {
    name: "the retry delay is capped at retryMaxMs",
    outcome: { kind: "failed", reason: "timeout" },
    receiveCount: 30,
    queue: { maxReceiveCount: undefined },
    decision: { action: "release", cause: "handler-failed", delaySec: 900, reason: "timeout" },
  },
  {
    name: "jitter: the delay is at least half the ceiling",
    outcome: { kind: "failed", reason: "timeout" },
    receiveCount: 1,
    queue: { random: () => 0 },
    decision: { action: "release", cause: "handler-failed", delaySec: 1, reason: "timeout" },
  },
  // After routing: what the destination said.
  {
    name: "rejected by the destination, with a DLQ: dead-letter with its message",
    outcome: { kind: "rejected", reason: "HTTP 400: bad record" },
    receiveCount: 2,
    decision: { action: "dead-letter", reason: "HTTP 400: bad record", retryDelaySec: 4 },
  },
  {
    name: "rejected without a DLQ: release for the redrive policy",
    outcome: { kind: "rejected", reason: "HTTP 400: bad record" },
    queue: { deadLetterConfigured: false },
    decision: {
      action: "release",
      cause: "no-dead-letter-queue",
      delaySec: 2,
      reason: "HTTP 400: bad record",
    },
  },
  {
    name: "abandoned at the stop deadline: release at once",
    outcome: { kind: "abandoned", cause: "stopping" },
    receiveCount: 3,
    decision: { action: "release", cause: "stopping", delaySec: 0 },
  },
  {
    name: "abandoned after giving up on the partner: release after the backoff",
    outcome: { kind: "abandoned", cause: "giving-up" },
    receiveCount: 3,
    decision: { action: "release", cause: "giving-up", delaySec: 8 },
  },
];

function holding(held: Record<string, number> = {}, delivering: string[] = []): Holding {
  return {
    held: (account) => held[account] ?? 0,
    heldTotal: Object.values(held).reduce((sum, n) => sum + n, 0),
    delivering: (account) => delivering.includes(account),
  };
}

describe("decide: what becomes of a handled message", () => {
  it.each(rows)("$name", (row) => {
    const decision = decide(row.outcome, {
      receiveCount: row.receiveCount ?? 1,
      queue: { ...queue, ...row.queue },
      holding: holding(row.held, row.delivering),
    });
    expect(decision).toEqual(row.decision);
  });

  it("gives the same decision for the same inputs", () => {
    const state = {
      receiveCount: 4,
      queue,
      holding: { held: () => 25, heldTotal: 50, delivering: () => true },
    };
    for (const row of rows) expect(decide(row.outcome, state)).toEqual(decide(row.outcome, state));
  });
});

describe("shareLimit", () => {
  it("is partnerShare of maxUnacked, rounded down, and never below one", () => {
    expect(shareLimit({ maxUnacked: 2000, partnerShare: 0.25 })).toBe(500);
    expect(shareLimit({ maxUnacked: 10, partnerShare: 0.33 })).toBe(3);
    expect(shareLimit({ maxUnacked: 3, partnerShare: 0.1 })).toBe(1);
  });
});
