/**
 * Seeded randomness for the bench's traffic, so every contender of a run drains the same messages:
 * a small PRNG and a Zipf(s) sampler over account ranks (a few accounts get most of the traffic).
 */

/** mulberry32: a tiny, fast, seedable PRNG; returns floats in [0, 1). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/**
 * Draws ranks 0 … n−1 with P(rank k) ∝ 1 / (k+1)^s. With s = 1 and 2,900 accounts the busiest
 * account gets ~12% of the messages and half of them go to the top ~70 accounts.
 */
export function zipfSampler(n: number, random: () => number, s = 1): () => number {
  const cdf = new Float64Array(n);
  let total = 0;
  for (let k = 0; k < n; k++) {
    total += 1 / (k + 1) ** s;
    cdf[k] = total;
  }
  return () => {
    const target = random() * total;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((cdf[mid] as number) < target) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
}
