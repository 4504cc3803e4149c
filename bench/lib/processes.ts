/** The orchestrator's side of the child processes: the emulator and one contender at a time. */
import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import type {
  ContenderKind,
  ContenderResult,
  ContenderSpec,
  EmulatorReply,
  EmulatorRequest,
  EmulatorResults,
  FromContender,
  HeapMeasure,
  ToContender,
} from "./protocol.ts";

const BENCH_DIR = fileURLToPath(new URL("..", import.meta.url));
/** The SDK in every child reads these; fauxqs accepts any. */
const AWS_ENV = { AWS_ACCESS_KEY_ID: "bench", AWS_SECRET_ACCESS_KEY: "bench", AWS_REGION: "us-east-1" };
const STDERR_TAIL_CHARS = 8000;

function forkChild(
  file: string,
  execArgv: string[],
  echo: boolean,
): { child: ChildProcess; stderr: () => string } {
  const child = fork(`${BENCH_DIR}${file}`, [], {
    execArgv: ["--disable-warning=ExperimentalWarning", ...execArgv],
    env: { ...process.env, ...AWS_ENV },
    stdio: ["ignore", echo ? "inherit" : "ignore", "pipe", "ipc"],
  });
  let tail = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    if (echo) process.stderr.write(chunk);
    tail = (tail + chunk.toString("utf8")).slice(-STDERR_TAIL_CHARS);
  });
  return { child, stderr: () => tail };
}

export class EmulatorProcess {
  readonly endpoint: string;
  readonly #child: ChildProcess;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #nextId = 0;

  private constructor(child: ChildProcess, endpoint: string) {
    this.#child = child;
    this.endpoint = endpoint;
    child.on("message", (reply: EmulatorReply) => {
      if (reply.kind !== "reply") return;
      const waiter = this.#pending.get(reply.id);
      this.#pending.delete(reply.id);
      if (reply.ok) waiter?.resolve(reply.result);
      else waiter?.reject(new Error(`emulator: ${reply.error}`));
    });
    child.on("exit", (code) => {
      for (const waiter of this.#pending.values()) waiter.reject(new Error(`emulator exited with ${code}`));
      this.#pending.clear();
    });
  }

  static async start(echo: boolean): Promise<EmulatorProcess> {
    const { child, stderr } = forkChild("emulator-process.ts", [], echo);
    const endpoint = await new Promise<string>((resolve, reject) => {
      child.once("message", (reply: EmulatorReply) => {
        if (reply.kind === "ready") resolve(reply.endpoint);
      });
      child.once("exit", (code) =>
        reject(new Error(`emulator exited with ${code} before it was ready: ${stderr()}`)),
      );
    });
    return new EmulatorProcess(child, endpoint);
  }

  request<K extends EmulatorRequest["op"]>(
    request: Extract<EmulatorRequest, { op: K }>,
  ): Promise<EmulatorResults[K]> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.#child.send({ id, request });
    });
  }

  async stop(): Promise<void> {
    if (this.#child.exitCode !== null) return;
    const exited = new Promise((resolve) => this.#child.once("exit", resolve));
    this.#child.disconnect();
    await exited;
  }
}

/** One contender in its own process, from start to its result. */
export class ContenderProcess {
  readonly kind: ContenderKind;
  readonly #child: ChildProcess;
  readonly #stderr: () => string;
  readonly #messages: FromContender[] = [];
  readonly #waiters: (() => void)[] = [];
  #exit: string | undefined;

  constructor(kind: ContenderKind, execArgv: string[], echo: boolean) {
    this.kind = kind;
    const { child, stderr } = forkChild(`contenders/${kind}.ts`, execArgv, echo);
    this.#child = child;
    this.#stderr = stderr;
    child.on("message", (m: FromContender) => {
      this.#messages.push(m);
      for (const wake of this.#waiters.splice(0)) wake();
    });
    child.on("exit", (code, signal) => {
      this.#exit = `exited with ${signal ?? code}`;
      for (const wake of this.#waiters.splice(0)) wake();
    });
  }

  /** Sends the spec and resolves once the contender is receiving. */
  async start(spec: ContenderSpec): Promise<void> {
    await this.#next("listening", 60_000);
    this.#send({ type: "start", spec });
    await this.#next("ready", 60_000);
  }

  async measure(deletedAtLeast: number, settleMs: number, timeoutMs: number): Promise<HeapMeasure> {
    this.#send({ type: "measure", deletedAtLeast, settleMs });
    const m = await this.#next("measured", timeoutMs);
    return m.measure;
  }

  stop(): void {
    this.#send({ type: "stop" });
  }

  /** The contender's result; kills it and rejects if none comes within `timeoutMs`. */
  async result(timeoutMs: number): Promise<ContenderResult> {
    const m = await this.#next("result", timeoutMs);
    await new Promise((resolve) => (this.#exit ? resolve(undefined) : this.#child.once("exit", resolve)));
    return m.result;
  }

  kill(): void {
    if (this.#child.exitCode === null) this.#child.kill("SIGKILL");
  }

  #send(message: ToContender): void {
    this.#child.send(message);
  }

  async #next<T extends FromContender["type"]>(
    type: T,
    timeoutMs: number,
  ): Promise<Extract<FromContender, { type: T }>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const index = this.#messages.findIndex((m) => m.type === type);
      if (index >= 0) return this.#messages.splice(index, 1)[0] as Extract<FromContender, { type: T }>;
      if (this.#exit)
        throw new Error(`${this.kind} ${this.#exit} before "${type}"; stderr:\n${this.#stderr()}`);
      const left = deadline - Date.now();
      if (left <= 0) {
        this.kill();
        throw new Error(`${this.kind} sent no "${type}" within ${timeoutMs} ms; stderr:\n${this.#stderr()}`);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 1000));
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
}
