/** Small statistics for the bench: summaries of repeated runs and the figures of a latency histogram. */
import type { RecordableHistogram } from "node:perf_hooks";

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
 * p50, p99 and max of a `perf_hooks` histogram of whole milliseconds; NaN for an empty one (the
 * histogram itself answers 0). Its buckets keep 3 significant digits in constant memory, whatever
 * the count (a soak records millions).
 */
export function latencyFigures(histogram: Pick<RecordableHistogram, "count" | "percentile" | "max">): {
  p50: number;
  p99: number;
  max: number;
} {
  if (histogram.count === 0) return { p50: Number.NaN, p99: Number.NaN, max: Number.NaN };
  return { p50: histogram.percentile(50), p99: histogram.percentile(99), max: histogram.max };
}
