/** Something that wants `tick()` called every interval until it is removed. */
export interface Tickable {
  tick(): void;
}

/**
 * One timer for many dispatchers. Each dispatcher ticks every `intervalMs`, in a slot of the wheel
 * picked when it was added, so ticks stay spread over the interval instead of firing all at once.
 * A Node timer costs about 250 bytes; with tens of thousands of idle dispatchers, sharing one per
 * interval is what keeps an idle dispatcher under a kilobyte. Ticks land within `slotMs` of an
 * exact interval.
 */
export class TickWheel {
  readonly #slotMs: number;
  readonly #wheels = new Map<number, Wheel>();

  constructor(slotMs = 50) {
    this.#slotMs = slotMs;
  }

  /** Returns the slot, which the member hands back to `remove`. */
  add(member: Tickable, intervalMs: number): number {
    let wheel = this.#wheels.get(intervalMs);
    if (!wheel) {
      wheel = new Wheel(Math.max(1, Math.round(intervalMs / this.#slotMs)), intervalMs, () =>
        this.#wheels.delete(intervalMs),
      );
      this.#wheels.set(intervalMs, wheel);
    }
    return wheel.add(member);
  }

  remove(member: Tickable, intervalMs: number, slot: number): void {
    this.#wheels.get(intervalMs)?.remove(member, slot);
  }
}

class Wheel {
  readonly #slots: Set<Tickable>[];
  readonly #slotMs: number;
  readonly #onEmpty: () => void;
  #members = 0;
  #cursor = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(slotCount: number, intervalMs: number, onEmpty: () => void) {
    this.#slots = Array.from({ length: slotCount }, () => new Set<Tickable>());
    this.#slotMs = intervalMs / slotCount;
    this.#onEmpty = onEmpty;
  }

  /** The member's first tick comes one full turn of the wheel (one interval) from now. */
  add(member: Tickable): number {
    const slot = (this.#cursor + this.#slots.length - 1) % this.#slots.length;
    (this.#slots[slot] as Set<Tickable>).add(member);
    this.#members++;
    this.#timer ??= setInterval(() => this.#turn(), this.#slotMs);
    return slot;
  }

  remove(member: Tickable, slot: number): void {
    if (!this.#slots[slot]?.delete(member)) return;
    this.#members--;
    if (this.#members === 0) {
      clearInterval(this.#timer);
      this.#timer = undefined;
      this.#onEmpty();
    }
  }

  #turn(): void {
    const slot = this.#slots[this.#cursor] as Set<Tickable>;
    this.#cursor = (this.#cursor + 1) % this.#slots.length;
    // A member may remove itself while ticking; Set iteration allows that.
    for (const member of slot) member.tick();
  }
}
