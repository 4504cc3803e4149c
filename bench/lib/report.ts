/** The bench's results: the JSON shape, the summaries, the targets, and the markdown. */
import type { ContenderKind, ContenderResult, HeapMeasure, OctorelaySettings } from "./protocol.ts";
import { median, type Spread, spread } from "./stats.ts";
import type { TrafficSpec } from "./traffic.ts";
import type { Delivered } from "./verify.ts";

export interface RunRecord {
  kind: ContenderKind;
  label: string;
  round: number | undefined;
  messages: number;
  traffic: TrafficSpec;
  /** How the queue was fed: pre-filled, or at a fixed rate while the contender drained it. */
  feedRatePerSec: number | undefined;
  result: ContenderResult;
  /** CPU the emulator process spent while this contender ran. */
  emulatorCpuSec: number;
  emulatorRssBytes: number;
  fillMs: number;
  leftInQueue: number;
  delivered: Delivered | undefined;
  ok: boolean;
  problems: string[];
  /** octorelay's settings for this run, when they differ from the main ones (flush sweep). */
  settings?: OctorelaySettings;
}

export interface ContenderSummary {
  runs: number;
  failed: number;
  msgsPerSec: Spread;
  /** Per round: this contender's msgs/s over the ceiling's in the same round. */
  ratioToCeiling: Spread;
  ratioToPeer: Spread;
  sqsPerMessage: Spread;
  s3PutsPerMessage: Spread;
  p50Ms: Spread;
  p99Ms: Spread;
  maxRssBytes: Spread;
  cpuSec: Spread;
  drainCpuSec: Spread;
  emulatorCpuSec: Spread;
  /** The 10%–90% part of the drain, without ramp-up and the last flush. */
  steadyMsgsPerSec: Spread;
  /** CPU of the contender and the emulator together, per message: what the machine pays. */
  machineCpuUsPerMsg: Spread;
}

export interface IdleDispatchers {
  dispatchers: number;
  warm: number;
  settings: OctorelaySettings["dispatch"];
  warmed: HeapMeasure;
  beforeSpawn: HeapMeasure;
  afterSpawn: HeapMeasure;
  /** (heap after spawning N idle dispatchers − heap before) / N. */
  bytesPerDispatcher: number;
  /** The same for the control step, N messages to the warm accounts (no dispatcher spawned). */
  controlBytesPerMessage: number;
  maxRssBytes: number;
}

export interface SoakSummary {
  record: RunRecord;
  samples: number;
  rssFirstQuarterBytes: number;
  rssLastQuarterBytes: number;
  heapFirstQuarterBytes: number;
  heapLastQuarterBytes: number;
  eventLoopP99FirstQuarterMs: number;
  eventLoopP99LastQuarterMs: number;
  eventLoopP99WorstMs: number;
  rssFlat: boolean;
  eventLoopFlat: boolean;
}

/** One octorelay process at the main traffic with every partner rate-limited (never throttled). */
export interface ClusterThroughput {
  store: "memory" | "redis";
  record: RunRecord;
  /** Commands the Redis server ran during the run (INFO commandstats, the bench's own INFO left out). */
  redisCommands: number | undefined;
  /** Of which the limits' scripts (EVALSHA, and EVAL once per connection). */
  redisScriptCalls: number | undefined;
  /** CPU the redis-server process spent during the run. */
  redisCpuSec: number | undefined;
}

/** Three replicas on one queue, all of it for one HTTP partner with a request limit. */
export interface ClusterReplicas {
  store: "memory" | "redis";
  replicas: number;
  limit: { requests: number; intervalMs: number };
  maxRecords: number;
  messages: number;
  /** Requests the partner received. */
  requests: number;
  /** First to last arrival, ms. */
  spanMs: number;
  /** Most requests that arrived within any window of `intervalMs`. */
  maxInWindow: number;
  /** requests / (limit × (span + intervalMs) / intervalMs): 100% = every window full. */
  fractionOfLimit: number;
  /** Ids the partner received, distinct, and beyond the first copy. */
  distinctIds: number;
  duplicates: number;
  missing: number;
  leftInQueue: number;
  /** Messages each replica deleted. */
  deletedPerReplica: number[];
  cpuSecPerReplica: number[];
  ok: boolean;
  problems: string[];
}

export interface ClusterReport {
  redisVersion: string;
  /** `dispatch.rateLimit.requests` of every partner in the throughput runs. */
  rateLimitRequests: number;
  /** `dispatch.maxConcurrentFlushes` of every partner in the throughput runs. */
  maxConcurrentFlushes: number;
  throughput: ClusterThroughput[];
  replicas: ClusterReplicas[];
}

export interface Target {
  name: string;
  goal: string;
  value: string;
  /** undefined: not measured in this run. */
  pass: boolean | undefined;
}

export interface BenchReport {
  machine: { cpu: string; cores: number; memoryGb: number; node: string; platform: string };
  /** The commit benchmarked. */
  code: string;
  command: string;
  startedAt: string;
  finishedAt: string;
  durationSec: number;
  smoke: boolean;
  settings: {
    messages: number;
    rounds: number;
    traffic: TrafficSpec;
    octorelay: OctorelaySettings;
    ceiling: { loops: number };
    peer: { consumers: number; deleteMode: "batch" | "message" };
    latencySec: number;
  };
  main: { runs: RunRecord[]; summary: Partial<Record<ContenderKind, ContenderSummary>> };
  latency: RunRecord[];
  idle: IdleDispatchers | undefined;
  /** --vs-work: ceiling, work ceiling and octorelay alternated in each round at each account count. */
  work?: RunRecord[];
  accounts: RunRecord[];
  /** octorelay at the main traffic with longer flush intervals (and un-acked bounds to match). */
  flush: RunRecord[];
  sizes: RunRecord[];
  soak: SoakSummary | undefined;
  /** Cluster mode (--cluster): the limits in memory vs in Redis, and three replicas on one partner. */
  cluster?: ClusterReport | undefined;
  targets: Target[];
}

export function summarize(
  runs: RunRecord[],
  kinds: ContenderKind[],
): Partial<Record<ContenderKind, ContenderSummary>> {
  const summary: Partial<Record<ContenderKind, ContenderSummary>> = {};
  const inRound = (kind: ContenderKind, round: number | undefined) =>
    runs.find((r) => r.kind === kind && r.round === round && r.ok);
  for (const kind of kinds) {
    const all = runs.filter((r) => r.kind === kind);
    const ok = all.filter((r) => r.ok);
    const of = (pick: (r: RunRecord) => number) => spread(ok.map(pick));
    const ratio = (other: ContenderKind) =>
      spread(
        ok.map((r) => {
          const base = inRound(other, r.round);
          return base ? r.result.msgsPerSec / base.result.msgsPerSec : Number.NaN;
        }),
      );
    summary[kind] = {
      runs: all.length,
      failed: all.length - ok.length,
      msgsPerSec: of((r) => r.result.msgsPerSec),
      ratioToCeiling: ratio("ceiling"),
      ratioToPeer: ratio("peer"),
      sqsPerMessage: of((r) => r.result.sqsRequests / r.messages),
      s3PutsPerMessage: of((r) => r.result.s3Puts / r.messages),
      p50Ms: of((r) => r.result.latencyMs.p50),
      p99Ms: of((r) => r.result.latencyMs.p99),
      maxRssBytes: of((r) => r.result.maxRssBytes),
      cpuSec: of((r) => r.result.cpuSec),
      drainCpuSec: of((r) => r.result.drainCpuSec),
      emulatorCpuSec: of((r) => r.emulatorCpuSec),
      steadyMsgsPerSec: of((r) => r.result.steadyMsgsPerSec),
      machineCpuUsPerMsg: of((r) => ((r.result.cpuSec + r.emulatorCpuSec) * 1e6) / r.messages),
    };
  }
  return summary;
}

export function evaluateTargets(report: BenchReport): Target[] {
  const o = report.main.summary.octorelay;
  const flushMs = report.settings.octorelay.dispatch.flushIntervalMs;
  const paced = report.latency.find((r) => r.kind === "octorelay");
  const idle = report.idle;
  const soak = report.soak;
  const measured = (value: number) => Number.isFinite(value);
  const at = ` at ${report.settings.traffic.accounts.toLocaleString("en-US")} accounts`;
  return [
    {
      name: `octorelay msgs/s vs ceiling${at}`,
      goal: "≥ 80%",
      value: o ? pct(o.ratioToCeiling) : "—",
      pass: o && measured(o.ratioToCeiling.median) ? o.ratioToCeiling.median >= 0.8 : undefined,
    },
    {
      name: `octorelay msgs/s vs peer${at}`,
      goal: "≥ 1.5×",
      value: o ? times(o.ratioToPeer) : "—",
      pass: o && measured(o.ratioToPeer.median) ? o.ratioToPeer.median >= 1.5 : undefined,
    },
    {
      name: "SQS requests per message at saturation",
      goal: "≤ 0.25",
      value: o ? fmtSpread(o.sqsPerMessage, 3) : "—",
      pass: o && measured(o.sqsPerMessage.median) ? o.sqsPerMessage.median <= 0.25 : undefined,
    },
    {
      name: "p99 send→delete below saturation",
      goal: `≤ flush interval + 1 s = ${flushMs + 1000} ms`,
      value: paced ? `${paced.result.latencyMs.p99.toFixed(0)} ms at ${rateOf(paced)} msg/s` : "not measured",
      pass: paced?.ok ? paced.result.latencyMs.p99 <= flushMs + 1000 : undefined,
    },
    {
      name: "heap per idle-but-alive dispatcher",
      goal: "< 1 KB",
      value: idle
        ? `${idle.bytesPerDispatcher.toFixed(0)} B (control ${idle.controlBytesPerMessage.toFixed(0)} B/message)`
        : "not measured",
      pass: idle ? idle.bytesPerDispatcher < 1024 : undefined,
    },
    {
      name: "RSS flat over the soak",
      goal: "last-quarter median ≤ first-quarter median + 10% (+20 MB)",
      value: soak
        ? `Q1 ${mib(soak.rssFirstQuarterBytes)} → Q4 ${mib(soak.rssLastQuarterBytes)} MB (Q2 ${mib(quarters(soak.record.result, (q) => q.rssBytes)[1] ?? Number.NaN)} MB) over ${soak.record.messages.toLocaleString("en-US")} messages`
        : "not run (--soak)",
      pass: soak ? soak.rssFlat && soak.record.ok : undefined,
    },
    ...[2_900, 1].map((accounts) => workTarget(report.work ?? [], accounts)),
    clusterTarget(report.cluster),
  ];
}

/** One contender's figures at one account count of the --vs-work runs. */
export interface WorkSummary {
  accounts: number;
  kind: ContenderKind;
  runs: number;
  failed: number;
  msgsPerSec: Spread;
  /** Per round: msgs/s over the work ceiling's in the same round at the same account count. */
  ratioToWork: Spread;
  /** The contender's own CPU (threads included) from ready to the last delete, per message. */
  cpuUsPerMsg: Spread;
  /** The main thread's own CPU over the same span, per message. */
  mainCpuUsPerMsg: Spread;
  /** How busy the main thread's event loop was over the drain, 0–1. */
  mainLoopBusy: Spread;
  emulatorCpuUsPerMsg: Spread;
  sqsPerMessage: Spread;
  s3PutsPerMessage: Spread;
  maxRssBytes: Spread;
}

export function summarizeWork(runs: RunRecord[]): WorkSummary[] {
  const out: WorkSummary[] = [];
  const accountCounts = [...new Set(runs.map((r) => r.traffic.accounts))];
  const kinds = [...new Set(runs.map((r) => r.kind))];
  for (const accounts of accountCounts) {
    for (const kind of kinds) {
      const all = runs.filter((r) => r.kind === kind && r.traffic.accounts === accounts);
      if (all.length === 0) continue;
      const ok = all.filter((r) => r.ok);
      const of = (pick: (r: RunRecord) => number) => spread(ok.map(pick));
      out.push({
        accounts,
        kind,
        runs: all.length,
        failed: all.length - ok.length,
        msgsPerSec: of((r) => r.result.msgsPerSec),
        ratioToWork: of((r) => {
          const base = runs.find(
            (b) =>
              b.kind === "work-ceiling" && b.traffic.accounts === accounts && b.round === r.round && b.ok,
          );
          return base ? r.result.msgsPerSec / base.result.msgsPerSec : Number.NaN;
        }),
        cpuUsPerMsg: of((r) => (r.result.drainCpuSec * 1e6) / r.messages),
        mainCpuUsPerMsg: of((r) => ((r.result.drainMainCpuSec ?? Number.NaN) * 1e6) / r.messages),
        mainLoopBusy: of((r) => r.result.drainLoopBusy ?? Number.NaN),
        emulatorCpuUsPerMsg: of((r) => (r.emulatorCpuSec * 1e6) / r.messages),
        sqsPerMessage: of((r) => r.result.sqsRequests / r.messages),
        s3PutsPerMessage: of((r) => r.result.s3Puts / r.messages),
        maxRssBytes: of((r) => r.result.maxRssBytes),
      });
    }
  }
  return out;
}

function workTarget(runs: RunRecord[], accounts: number): Target {
  const name = `octorelay msgs/s vs the work ceiling at ${accounts.toLocaleString("en-US")} account${accounts === 1 ? "" : "s"}`;
  const goal = "≥ 90%";
  const x = summarizeWork(runs).find((w) => w.kind === "octorelay" && w.accounts === accounts);
  if (!x || !Number.isFinite(x.ratioToWork.median))
    return { name, goal, value: "not run (--vs-work)", pass: undefined };
  return { name, goal, value: pct(x.ratioToWork), pass: x.ratioToWork.median >= 0.9 };
}

function workSection(runs: RunRecord[]): string[] {
  const first = runs[0];
  if (!first) return [];
  const rounds = Math.max(...runs.map((r) => r.round ?? 1));
  const rows = summarizeWork(runs).map((w) => {
    const work = summarizeWork(runs).find((b) => b.kind === "work-ceiling" && b.accounts === w.accounts);
    const cpuRatio = work ? w.cpuUsPerMsg.median / work.cpuUsPerMsg.median : Number.NaN;
    return [
      num(w.accounts),
      w.kind,
      fmtSpread(w.msgsPerSec),
      w.kind === "work-ceiling" ? "100%" : pct(w.ratioToWork),
      fmtSpread(w.cpuUsPerMsg),
      w.kind === "work-ceiling" ? "1.00×" : Number.isFinite(cpuRatio) ? `${num(cpuRatio, 2)}×` : "—",
      fmtSpread(w.mainCpuUsPerMsg),
      Number.isFinite(w.mainLoopBusy.median) ? `${num(w.mainLoopBusy.median * 100)}%` : "—",
      num(w.emulatorCpuUsPerMsg.median),
      fmtSpread(w.sqsPerMessage, 3),
      fmtSpread(w.s3PutsPerMessage, 3),
      fmtSpread(w.maxRssBytes, 0, 1 / 1024 / 1024),
      `${w.failed}/${w.runs}`,
    ];
  });
  return [
    "## octorelay vs the work ceiling",
    "",
    `${num(first.messages)} messages of ${first.traffic.sizeBytes} B per run, accounts Zipf(1); ${rounds} round(s), ` +
      "in each round every account count, and at each the ceiling, the work ceiling and octorelay one after the other on " +
      "the same messages; median (min–max). vs work = msgs/s over the work ceiling's in the same round. CPU µs/msg = the " +
      "contender process's own CPU (octorelay's worker threads included) from ready to the last delete, per message; " +
      "main thread CPU is that thread's alone, and main thread busy its event loop utilisation over the same span " +
      "(near 100%, the main thread is what limits the contender).",
    "",
    ...table(
      [
        "accounts",
        "contender",
        "msgs/s",
        "vs work",
        "CPU µs/msg",
        "CPU vs work",
        "main thread CPU µs/msg",
        "main thread busy",
        "emulator CPU µs/msg",
        "SQS req/msg",
        "S3 PUT/msg",
        "peak RSS MB",
        "failed",
      ],
      rows,
    ),
    "",
    ...runProblems(runs),
    "- **work-ceiling** (bench/contenders/work-ceiling.ts): octorelay's AWS work done bare, through octorelay's " +
      "production SDK clients: 8 loops of ReceiveMessage(10, every attribute, as octorelay asks); each body parsed and made into octorelay's NDJSON line; records grouped per account; every " +
      "flush interval one gzip NDJSON PutObject per account (at once at maxRecords), at most 32 in flight; the messages " +
      "deleted in DeleteMessageBatch(10) once their object is written; held messages capped at octorelay's maxUnacked. " +
      "No handler pool, no actors, no heartbeats, no limits, no retries.",
    "",
  ];
}

function clusterTarget(cluster: ClusterReport | undefined): Target {
  const x = cluster?.replicas.find((r) => r.store === "redis");
  const name = "three replicas, one partner: its limit used, never exceeded (Redis)";
  const goal = "most in any window ≤ the limit, ≥ 80% of it used";
  if (!x) return { name, goal, value: "not run (--cluster)", pass: undefined };
  return {
    name,
    goal,
    value: `most ${x.maxInWindow} in ${x.limit.intervalMs} ms (limit ${x.limit.requests}), ${num(x.fractionOfLimit * 100)}% of it`,
    pass: x.ok && x.maxInWindow <= x.limit.requests && x.fractionOfLimit >= 0.8,
  };
}

// ── markdown ────────────────────────────────────────────────────────────────────────────────────

const mib = (bytes: number) => (bytes / 1024 / 1024).toFixed(0);
const num = (n: number, digits = 0) =>
  Number.isFinite(n)
    ? n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })
    : "—";
function fmtSpread(s: Spread, digits = 0, scale = 1): string {
  if (!Number.isFinite(s.median)) return "—";
  const v = (x: number) => num(x * scale, digits);
  return s.min === s.max ? v(s.median) : `${v(s.median)} (${v(s.min)}–${v(s.max)})`;
}
/** A spread with a unit after each figure: "29% (28–30%)". */
function withUnit(s: Spread, digits: number, scale: number, unit: string): string {
  if (!Number.isFinite(s.median)) return "—";
  const v = (x: number) => num(x * scale, digits);
  return s.min === s.max ? `${v(s.median)}${unit}` : `${v(s.median)}${unit} (${v(s.min)}–${v(s.max)}${unit})`;
}
const pct = (s: Spread) => withUnit(s, 0, 100, "%");
const times = (s: Spread) => withUnit(s, 2, 1, "×");
const rateOf = (r: RunRecord) => num(r.feedRatePerSec ?? r.messages / r.result.drainSec, 0);
const mark = (pass: boolean | undefined) => (pass === undefined ? "—" : pass ? "pass" : "**miss**");

function table(head: string[], rows: string[][], align?: string[]): string[] {
  return [
    `| ${head.join(" | ")} |`,
    `|${(align ?? head.map((_, i) => (i === 0 ? "---" : "---:"))).join("|")}|`,
    ...rows.map((r) => `| ${r.join(" | ")} |`),
  ];
}

export function renderMarkdown(r: BenchReport): string {
  const s = r.settings;
  const t = s.traffic;
  const out: string[] = [
    `# octorelay benchmark${r.smoke ? " (smoke)" : ""}`,
    "",
    `\`${r.command}\` — ${r.startedAt.slice(0, 19).replace("T", " ")} UTC, ${Math.round(r.durationSec / 60)} min.`,
    `Machine: ${r.machine.cpu}, ${r.machine.cores} cores, ${r.machine.memoryGb} GB, ${r.machine.platform}, Node ${r.machine.node}.`,
    `Code: ${r.code}. fauxqs in its own process; each contender in its own process; one run at a time.`,
    "",
    "## Targets",
    "",
    ...table(
      ["target", "goal", "measured", "result"],
      r.targets.map((x) => [x.name, x.goal, x.value, mark(x.pass)]),
      ["---", "---", "---", "---"],
    ),
    "",
    `## Ceiling vs octorelay vs peer`,
    "",
    `${num(s.messages)} messages pre-filled before each run, ${t.sizeBytes} B JSON bodies, accounts Zipf(1) over ${num(t.accounts)}; ` +
      `${s.rounds} round(s) in alternation; median (min–max). msgs/s = messages / (last delete − first receive), the ` +
      `whole drain including ramp-up and octorelay's last flush interval; steady msgs/s = the 10%–90% part of it; send→delete on a pre-filled queue is mostly ` +
      `time spent waiting in the queue (see the next section for latency below saturation).`,
    "",
    ...table(
      [
        "contender",
        "msgs/s",
        "steady msgs/s",
        "vs ceiling",
        "SQS req/msg",
        "S3 PUT/msg",
        "send→delete p50 / p99 s",
        "peak RSS MB",
        "CPU s",
        "emulator CPU s",
        "CPU µs/msg (with emulator)",
        "failed",
      ],
      (["ceiling", "work-ceiling", "octorelay", "peer"] as const).flatMap((kind) => {
        const x = r.main.summary[kind];
        if (!x) return [];
        return [
          [
            kind,
            fmtSpread(x.msgsPerSec),
            num(x.steadyMsgsPerSec.median),
            kind === "ceiling" ? "100%" : pct(x.ratioToCeiling),
            fmtSpread(x.sqsPerMessage, 3),
            fmtSpread(x.s3PutsPerMessage, 3),
            `${num(x.p50Ms.median / 1000, 1)} / ${num(x.p99Ms.median / 1000, 1)}`,
            fmtSpread(x.maxRssBytes, 0, 1 / 1024 / 1024),
            fmtSpread(x.cpuSec, 1),
            fmtSpread(x.emulatorCpuSec, 1),
            num(x.machineCpuUsPerMsg.median),
            `${x.failed}/${x.runs}`,
          ],
        ];
      }),
    ),
    "",
    ...runProblems(r.main.runs),
    ...cpuBound(r),
    "Contenders:",
    `- **ceiling**: ${s.ceiling.loops} loops of ReceiveMessage(10, wait 20 s) → DeleteMessageBatch, no processing.`,
    `- **octorelay**: \`Service\` from src/ with handlers/passthrough.ts, the production AWS clients; settings below.`,
    `- **peer**: sqs-consumer, ${s.peer.consumers} consumers, batchSize 10; JSON.parse, one PutObject per message, then ` +
      (s.peer.deleteMode === "batch"
        ? "one DeleteMessageBatch per batch (handleMessageBatch)."
        : "DeleteMessage per message (handleMessage)."),
    "",
    "octorelay settings (the queue entry given to loadConfig):",
    "",
    "```json",
    JSON.stringify(s.octorelay, null, 2),
    "```",
    "",
  ];

  if (r.latency.length > 0) {
    out.push(
      "## Send→delete latency below saturation",
      "",
      `Messages fed at a fixed rate (half of each contender's median msgs/s) for ${s.latencySec} s, each stamped with ` +
        `\`sentAt\` as it is enqueued.`,
      "",
      ...table(
        ["contender", "rate msg/s", "p50 ms", "p99 ms", "max ms", "SQS req/msg", "S3 PUT/msg", "CPU s"],
        r.latency.map((x) => [
          x.kind,
          rateOf(x),
          num(x.result.latencyMs.p50),
          num(x.result.latencyMs.p99),
          num(x.result.latencyMs.max),
          num(x.result.sqsRequests / x.messages, 3),
          num(x.result.s3Puts / x.messages, 3),
          num(x.result.cpuSec, 1),
        ]),
      ),
      "",
      ...runProblems(r.latency),
    );
  }

  if (r.idle) {
    const i = r.idle;
    const heapMb = (m: HeapMeasure) => (m.heapUsedBytes / 2 ** 20).toFixed(2);
    out.push(
      "## Memory per idle-but-alive dispatcher",
      "",
      `Settings make each dispatcher flush its one record at once (maxRecords 1) and then sit idle, alive ` +
        `(flushIntervalMs ${num(i.settings.flushIntervalMs)}, emptyFlushLimit ${i.settings.emptyFlushLimit}). ` +
        `Main-thread heap after forced GC (--expose-gc, --no-flush-bytecode) at each step.`,
      "",
      ...table(
        ["step", "alive dispatchers", "heap used MB"],
        [
          [
            `warm-up: ${num(i.warm)} outputs to ${num(i.warm)} accounts`,
            num(i.warmed.activeDispatchers),
            heapMb(i.warmed),
          ],
          [
            `control: ${num(i.dispatchers)} outputs to the same ${num(i.warm)} accounts`,
            num(i.beforeSpawn.activeDispatchers),
            heapMb(i.beforeSpawn),
          ],
          [
            `${num(i.dispatchers)} outputs to ${num(i.dispatchers)} new accounts`,
            num(i.afterSpawn.activeDispatchers),
            heapMb(i.afterSpawn),
          ],
        ],
      ),
      "",
      `**${num(i.bytesPerDispatcher)} B per idle dispatcher** ((heapAfter − heapBefore) / N over the last step); the ` +
        `control step, the same work without spawning, moved the heap by ${num(i.controlBytesPerMessage)} B per message. ` +
        `Peak RSS of that process: ${mib(i.maxRssBytes)} MB.`,
      "",
    );
  }

  if (r.accounts.length > 0) {
    out.push(
      "## Accounts sweep (octorelay)",
      "",
      ...table(
        [
          "accounts",
          "messages",
          "msgs/s",
          "objects",
          "records/object",
          "S3 PUT/msg",
          "SQS req/msg",
          "peak active dispatchers",
          "dispatchers spawned",
          "peak RSS MB",
          "peak heap MB",
          "ok",
        ],
        r.accounts.map((x) => {
          const o = x.result.octorelay;
          return [
            num(x.traffic.accounts),
            num(x.messages),
            num(x.result.msgsPerSec),
            num(o?.objects ?? Number.NaN),
            num(o ? o.flushedRecords / Math.max(1, o.objects) : Number.NaN, 1),
            num(x.result.s3Puts / x.messages, 3),
            num(x.result.sqsRequests / x.messages, 3),
            num(o?.peakActiveDispatchers ?? Number.NaN),
            num(o?.dispatchersSpawned ?? Number.NaN),
            mib(x.result.maxRssBytes),
            mib(x.result.peakHeapUsedBytes),
            x.ok ? "yes" : `**no**: ${x.problems.join("; ")}`,
          ];
        }),
      ),
      "",
    );
  }

  if (r.flush.length > 0) {
    out.push(
      "## Flush interval sweep (octorelay)",
      "",
      "The same traffic as the main runs; a longer flush interval puts more records in each object (fewer S3 PUTs, lower cost, less CPU) and holds each message longer, so maxUnacked grows with it. steady msgs/s = the 10%–90% part of the drain, without ramp-up and the last flush interval.",
      "",
      ...table(
        [
          "flush interval s",
          "maxUnacked",
          "msgs/s",
          "steady msgs/s",
          "records/object",
          "S3 PUT/msg",
          "SQS req/msg",
          "CPU s",
          "emulator CPU s",
          "peak RSS MB",
          "ok",
        ],
        r.flush.map((x) => {
          const o = x.result.octorelay;
          return [
            num((x.settings?.dispatch.flushIntervalMs ?? Number.NaN) / 1000),
            num(x.settings?.maxUnacked ?? Number.NaN),
            num(x.result.msgsPerSec),
            num(x.result.steadyMsgsPerSec),
            num(o ? o.flushedRecords / Math.max(1, o.objects) : Number.NaN, 1),
            num(x.result.s3Puts / x.messages, 3),
            num(x.result.sqsRequests / x.messages, 3),
            num(x.result.cpuSec, 1),
            num(x.emulatorCpuSec, 1),
            mib(x.result.maxRssBytes),
            x.ok ? "yes" : `**no**: ${x.problems.join("; ")}`,
          ];
        }),
      ),
      "",
    );
  }

  if (r.sizes.length > 0) {
    const bySize = new Map<number, RunRecord[]>();
    for (const x of r.sizes) bySize.set(x.traffic.sizeBytes, [...(bySize.get(x.traffic.sizeBytes) ?? []), x]);
    out.push(
      "## Message size sweep",
      "",
      ...table(
        [
          "body size",
          "messages",
          "ceiling msgs/s",
          "octorelay msgs/s",
          "vs ceiling",
          "octorelay MB/s in",
          "octorelay S3 PUT/msg",
          "octorelay peak RSS MB",
          "octorelay CPU s",
          "ok",
        ],
        [...bySize].map(([size, xs]) => {
          const c = xs.find((x) => x.kind === "ceiling");
          const o = xs.find((x) => x.kind === "octorelay");
          return [
            size >= 1024 ? `${size / 1024} KB` : `${size} B`,
            num(o?.messages ?? c?.messages ?? Number.NaN),
            num(c?.result.msgsPerSec ?? Number.NaN),
            num(o?.result.msgsPerSec ?? Number.NaN),
            c && o ? `${num((o.result.msgsPerSec / c.result.msgsPerSec) * 100)}%` : "—",
            num(o ? (o.result.msgsPerSec * size) / 2 ** 20 : Number.NaN, 1),
            num(o ? o.result.s3Puts / o.messages : Number.NaN, 3),
            o ? mib(o.result.maxRssBytes) : "—",
            num(o?.result.cpuSec ?? Number.NaN, 1),
            xs.every((x) => x.ok) ? "yes" : `**no**: ${xs.flatMap((x) => x.problems).join("; ")}`,
          ];
        }),
      ),
      "",
    );
  }

  if (r.soak) {
    const k = r.soak;
    const x = k.record.result;
    out.push(
      "## Soak",
      "",
      `${num(k.record.messages)} messages through one octorelay process, fed while it drained (backlog kept ≤ 20,000); ` +
        `sampled every 5 s (${k.samples} samples); ${num(x.drainSec / 60, 1)} min at ${num(k.record.messages / x.drainSec)} msg/s overall.`,
      "",
      "Medians of the 5-s samples in each quarter of the run; flat = last quarter within 10% (+20 MB) of the first " +
        "(event-loop p99: within 1.5× + 5 ms).",
      "",
      ...table(
        ["", "Q1", "Q2", "Q3", "Q4", "flat (Q1 → Q4)?"],
        [
          ["RSS MB", ...quarters(x, (q) => q.rssBytes).map(mib), k.rssFlat ? "yes" : "**no**"],
          ["heap used MB", ...quarters(x, (q) => q.heapUsedBytes).map(mib), ""],
          [
            "event-loop delay p99 ms",
            ...quarters(x, (q) => q.eventLoopDelayP99Ms).map((v) => num(v, 1)),
            k.eventLoopFlat ? "yes" : "**no**",
          ],
          ["deleted/s", ...quarters(x, (q) => q.deletedPerSec).map((v) => num(v)), ""],
        ],
      ),
      "",
      `Peak RSS ${mib(x.maxRssBytes)} MB; worst 5-s event-loop p99 ${num(k.eventLoopP99WorstMs, 1)} ms; ` +
        `SQS req/msg ${num(x.sqsRequests / k.record.messages, 3)}; S3 PUT/msg ${num(x.s3Puts / k.record.messages, 3)}; ` +
        `p99 send→delete ${num(x.latencyMs.p99 / 1000, 1)} s (backlog wait included); ${k.record.ok ? "all deleted" : `**${k.record.problems.join("; ")}**`}.`,
      "",
      ...soakTimeline(x),
      "",
    );
  }

  if (r.work && r.work.length > 0) out.push(...workSection(r.work));
  if (r.cluster) out.push(...clusterSection(r.cluster));

  const checked = [
    ...r.main.runs,
    ...(r.work ?? []),
    ...r.accounts,
    ...r.flush,
    ...r.sizes,
    ...(r.cluster?.throughput.map((x) => x.record) ?? []),
  ].filter((x) => x.delivered);
  if (checked.length > 0) {
    out.push(
      "## Delivery check",
      "",
      "Every object in the run's bucket read back; records matched to the SQS message ids sent.",
      "",
      ...table(
        ["run", "sent", "deleted", "objects", "records", "distinct ids", "missing", "left in queue"],
        checked.map((x) => {
          const d = x.delivered as Delivered;
          return [
            x.label,
            num(x.messages),
            num(x.result.deleted),
            num(d.objects),
            num(d.records),
            num(d.distinctIds),
            d.missing === 0 ? "0" : `**${num(d.missing)}**`,
            x.leftInQueue === 0 ? "0" : `**${num(x.leftInQueue)}**`,
          ];
        }),
      ),
      "",
    );
  }

  out.push(
    "## Method",
    "",
    "- One `npm run bench` process orchestrates; fauxqs runs in its own child process, each contender in another, one at a time, all on 127.0.0.1.",
    "- Every run gets a fresh queue (with a DLQ and redrive policy) and bucket, filled through fauxqs's in-process API from the same seed, so every contender of a round drains the same messages.",
    "- Counts come from AWS SDK middleware on the clients each contender is given (octorelay's are the production `createAwsClients` ones): calls per command, S3 PutObject calls, and for each successful DeleteMessage(Batch) entry, now − the body's `sentAt` (mapped from the receipt handle seen on ReceiveMessage).",
    "- Peak RSS is `process.resourceUsage().maxRSS` and CPU `process.cpuUsage()` of the contender's process (octorelay's worker threads included) from start to exit; emulator CPU is fauxqs's own during the run.",
    "- Every octorelay run is checked: every S3 object read and every record counted against the message ids sent; a run with a message deleted but not delivered, or left in the queue, fails.",
    "",
  );
  return `${out.join("\n")}\n`;
}

function clusterSection(c: ClusterReport): string[] {
  const perMsg = (sec: number | undefined, messages: number) =>
    sec === undefined ? "—" : num((sec * 1e6) / messages);
  const lines = [
    "## Cluster mode: partner limits shared through Redis",
    "",
    `Redis ${c.redisVersion} on loopback, no persistence. One octorelay process at the main traffic, every partner with ` +
      `\`rateLimit.requests: ${num(c.rateLimitRequests)}\` and \`maxConcurrentFlushes: ${num(c.maxConcurrentFlushes)}\` ` +
      "(never reached: each flush acquires a permit and is never held back), " +
      "the limits kept in the process or in Redis. Redis commands = what the limits' client sent, each one round trip " +
      "(the scripts as EVALSHA); redis-server CPU from its `INFO cpu`; acquisition = asking the limits for a permit until holding it.",
    "",
    ...table(
      [
        "limits",
        "msgs/s",
        "CPU µs/msg (octorelay)",
        "CPU µs/msg (redis-server)",
        "flushes",
        "Redis commands / flush",
        "script calls / flush",
        "acquisition p50 / p99 ms",
        "ok",
      ],
      c.throughput.map((x) => {
        const flushes = x.record.result.octorelay?.objects ?? Number.NaN;
        const a = x.record.result.octorelay?.limitsAcquire;
        return [
          `${x.store}${x.record.round === undefined ? "" : ` (round ${x.record.round})`}`,
          num(x.record.result.msgsPerSec),
          num((x.record.result.drainCpuSec * 1e6) / x.record.messages),
          perMsg(x.redisCpuSec, x.record.messages),
          num(flushes),
          x.redisCommands === undefined ? "—" : num(x.redisCommands / flushes, 2),
          x.redisScriptCalls === undefined ? "—" : num(x.redisScriptCalls / flushes, 2),
          a ? `${num(a.p50Ms, 2)} / ${num(a.p99Ms, 2)}` : "—",
          x.record.ok ? "yes" : `**no**: ${x.record.problems.join("; ")}`,
        ];
      }),
    ),
    "",
  ];
  if (c.replicas.length > 0) {
    const first = c.replicas[0] as ClusterReplicas;
    lines.push(
      `Three replicas on one queue, every message for one HTTP partner on loopback allowed ${first.limit.requests} requests per ` +
        `${first.limit.intervalMs} ms (batches of ${first.maxRecords} records). "memory" is each replica with its own copy of the ` +
        'limit (before cluster mode); "redis" is cluster mode. The three run at once (the only runs that do), each in its own ' +
        "process; the partner server timestamps every request. Fraction = requests / (limit × (first-to-last arrival + one window)).",
      "",
      ...table(
        [
          "limits",
          "messages",
          "requests",
          "most in one window",
          "fraction of the limit",
          "deleted per replica",
          "duplicates",
          "missing",
          "ok",
        ],
        c.replicas.map((x) => [
          x.store,
          num(x.messages),
          num(x.requests),
          `${x.maxInWindow} (limit ${x.limit.requests})`,
          `${num(x.fractionOfLimit * 100)}%`,
          x.deletedPerReplica.map((n) => num(n)).join(" / "),
          num(x.duplicates),
          x.missing === 0 ? "0" : `**${num(x.missing)}**`,
          x.ok ? "yes" : `**no**: ${x.problems.join("; ")}`,
        ]),
      ),
      "",
    );
  }
  return lines;
}

function runProblems(runs: RunRecord[]): string[] {
  const failed = runs.filter((x) => !x.ok);
  if (failed.length === 0) return [];
  return [...failed.map((x) => `- **${x.label} failed**: ${x.problems.join("; ")}`), ""];
}

/** The median of `pick` over each quarter of the samples. */
function quarters(x: ContenderResult, pick: (s: ContenderResult["samples"][number]) => number): number[] {
  const n = x.samples.length;
  return [0, 1, 2, 3].map((q) =>
    median(
      x.samples
        .slice(Math.floor((q * n) / 4), Math.max(Math.floor(((q + 1) * n) / 4), Math.floor((q * n) / 4) + 1))
        .map(pick),
    ),
  );
}

function soakTimeline(x: ContenderResult): string[] {
  const samples = x.samples;
  if (samples.length === 0) return [];
  const every = Math.max(1, Math.ceil(samples.length / 12));
  return table(
    [
      "t s",
      "deleted/s",
      "RSS MB",
      "heap used MB",
      "heap total MB",
      "external MB",
      "loop delay p99 ms",
      "active dispatchers",
    ],
    samples
      .filter((_, i) => i % every === 0 || i === samples.length - 1)
      .map((s) => [
        num(s.atSec),
        num(s.deletedPerSec),
        mib(s.rssBytes),
        mib(s.heapUsedBytes),
        s.heapTotalBytes === undefined ? "—" : mib(s.heapTotalBytes),
        s.externalBytes === undefined ? "—" : mib(s.externalBytes),
        num(s.eventLoopDelayP99Ms, 1),
        num(s.activeDispatchers ?? Number.NaN),
      ]),
  );
}

/**
 * What the machine's CPU allows: the contenders and the emulator share its cores, so no contender
 * drains faster than cores ÷ (its CPU per message, emulator included).
 */
function cpuBound(r: BenchReport): string[] {
  const ceiling = r.main.summary.ceiling;
  const octorelay = r.main.summary.octorelay;
  if (!ceiling || !octorelay) return [];
  const c = ceiling.machineCpuUsPerMsg.median;
  const o = octorelay.machineCpuUsPerMsg.median;
  const cores = r.machine.cores;
  const busy = (ceiling.msgsPerSec.median * c) / 1e6;
  const bound = (cores * 1e6) / o;
  return [
    `CPU bound: the machine pays ${num(c)} µs of CPU per message for the ceiling and ${num(o)} µs for octorelay ` +
      `(contender + emulator). At its rate the ceiling keeps ${num(busy, 2)} of the ${cores} cores busy; with all ` +
      `${cores} cores busy, octorelay's CPU per message allows at most ${num(bound)} msg/s, ` +
      `${pct(spread([bound / ceiling.msgsPerSec.median]))} of the ceiling.`,
    "",
  ];
}
