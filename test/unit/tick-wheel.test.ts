import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { TickWheel } from "../../src/pipeline/tick-wheel.ts";

beforeEach(() => {
  vi.useFakeTimers({ now: 0 });
});
afterEach(() => {
  vi.useRealTimers();
});

/** A member that records the fake-clock time of each tick. */
const member = () => {
  const ticks: number[] = [];
  return { ticks, tick: () => ticks.push(Date.now()) };
};

describe("TickWheel", () => {
  it("ticks each member every interval, within one slot of exact, starting one interval after it joined", async () => {
    const wheel = new TickWheel(50);
    const a = member();
    wheel.add(a, 1000);
    await vi.advanceTimersByTimeAsync(320);
    const b = member();
    wheel.add(b, 1000);
    await vi.advanceTimersByTimeAsync(5000);
    for (const [m, joinedAt] of [
      [a, 0],
      [b, 320],
    ] as const) {
      expect(m.ticks.length).toBeGreaterThanOrEqual(4);
      m.ticks.forEach((t, i) => {
        expect(Math.abs(t - (joinedAt + (i + 1) * 1000))).toBeLessThanOrEqual(50);
      });
    }
    // Joined at different times, they tick in different slots: not all at once.
    expect(a.ticks[0]).not.toBe(b.ticks[0]);
  });

  it("stops ticking a removed member, and holds no timer once empty", async () => {
    const wheel = new TickWheel(50);
    const a = member();
    const slot = wheel.add(a, 200);
    await vi.advanceTimersByTimeAsync(450);
    const before = a.ticks.length;
    wheel.remove(a, 200, slot);
    expect(vi.getTimerCount()).toBe(0);
    await vi.advanceTimersByTimeAsync(1000);
    expect(a.ticks).toHaveLength(before);
  });

  it("lets a member remove itself while it ticks", async () => {
    const wheel = new TickWheel(50);
    let slot = -1;
    const self = { ticks: 0, tick: () => (++self.ticks === 2 ? wheel.remove(self, 100, slot) : undefined) };
    slot = wheel.add(self, 100);
    const other = member();
    wheel.add(other, 100);
    await vi.advanceTimersByTimeAsync(1000);
    expect(self.ticks).toBe(2);
    expect(other.ticks.length).toBeGreaterThanOrEqual(9);
  });
});
