/**
 * A status line for terminal commands (demo, try): on a TTY one line rewritten in place, with log
 * lines printed above it; elsewhere nothing is rewritten and `periodic` lines are printed instead.
 */
export class StatusLine {
  readonly tty: boolean;
  readonly #out: NodeJS.WriteStream;
  #text = "";

  constructor(out: NodeJS.WriteStream = process.stdout) {
    this.#out = out;
    this.tty = out.isTTY === true;
  }

  /** Replaces the status line (TTY only). */
  set(text: string): void {
    if (!this.tty) return;
    const width = Math.max(20, (this.#out.columns ?? 120) - 1);
    this.#text = text.length > width ? `${text.slice(0, width - 1)}…` : text;
    this.#out.write(`\r${this.#text}\x1b[K`);
  }

  /** Writes whole lines above the status line, to `stream` (stdout by default). */
  print(lines: string, stream: NodeJS.WritableStream = this.#out): void {
    const text = lines.endsWith("\n") ? lines : `${lines}\n`;
    if (!this.tty || !this.#text) {
      stream.write(text);
      return;
    }
    this.#out.write("\r\x1b[K");
    stream.write(text);
    this.#out.write(`\r${this.#text}\x1b[K`);
  }

  /** Removes the status line. */
  clear(): void {
    if (this.tty && this.#text) this.#out.write("\r\x1b[K");
    this.#text = "";
  }

  /** Ends the status line, leaving its last text on screen. */
  done(): void {
    if (this.tty && this.#text) this.#out.write("\n");
    this.#text = "";
  }
}

/** Messages per second over the last `windowMs`, from a counter sampled now and then. */
export class RecentRate {
  readonly #windowMs: number;
  readonly #samples: { atMs: number; count: number }[] = [];

  /** `startedAtMs`: counting starts from 0 then, so the first sample already has a rate. */
  constructor(windowMs = 5000, startedAtMs?: number) {
    this.#windowMs = windowMs;
    if (startedAtMs !== undefined) this.#samples.push({ atMs: startedAtMs, count: 0 });
  }

  sample(count: number, atMs = Date.now()): number {
    this.#samples.push({ atMs, count });
    while (this.#samples.length > 2 && (this.#samples[1] as { atMs: number }).atMs <= atMs - this.#windowMs) {
      this.#samples.shift();
    }
    const first = this.#samples[0] as { atMs: number; count: number };
    const seconds = (atMs - first.atMs) / 1000;
    return seconds > 0 ? (count - first.count) / seconds : 0;
  }
}

export function formatCount(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}
