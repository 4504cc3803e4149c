/** Small statistics for the bench: summaries of repeated runs and a fixed-size latency histogram. */

export interface Spread {
  median: number;
  min: number;
  max: number;
}

export function median(values: readonly number[]): number {
  return quantile(values, 0.5);
}

/** Linear-interpolated quantile of `values` (q in [0, 1]); NaN for none. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const at = (sorted.length - 1) * q;
  const lo = Math.floor(at);
  const hi = Math.ceil(at);
  const low = sorted[lo] as number;
  return low + ((sorted[hi] as number) - low) * (at - lo);
}

export function spread(values: readonly number[]): Spread {
  const finite = values.filter((v) => Number.isFinite(v));
  if (finite.length === 0) return { median: Number.NaN, min: Number.NaN, max: Number.NaN };
  return { median: median(finite), min: Math.min(...finite), max: Math.max(...finite) };
}

/**
 * Latencies in ms, in log-spaced buckets 1% wide: constant memory whatever the count (a soak
 * records millions), quantiles within 1%. Values below 1 ms share the first bucket.
 */
export class LatencyHistogram {
  static readonly #GROWTH = Math.log(1.01);
  readonly #counts: number[] = [];
  count = 0;
  maxMs = 0;

  record(ms: number): void {
    const index = ms <= 1 ? 0 : Math.ceil(Math.log(ms) / LatencyHistogram.#GROWTH);
    while (this.#counts.length <= index) this.#counts.push(0);
    this.#counts[index] = (this.#counts[index] as number) + 1;
    this.count++;
    if (ms > this.maxMs) this.maxMs = ms;
  }

  /** The upper bound of the bucket holding the q-th value (q in [0, 1]); NaN when empty. */
  quantile(q: number): number {
    if (this.count === 0) return Number.NaN;
    const rank = Math.max(1, Math.ceil(q * this.count));
    let seen = 0;
    for (let i = 0; i < this.#counts.length; i++) {
      seen += this.#counts[i] as number;
      if (seen >= rank) return Math.min(this.maxMs, i === 0 ? 1 : Math.exp(i * LatencyHistogram.#GROWTH));
    }
    return this.maxMs;
  }
}
