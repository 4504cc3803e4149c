import { LimitsLayer, type LimitsProfile } from "../delivery/limits.ts";

export { limitSpec, MAX_RETRY_AFTER_MS } from "../delivery/limits.ts";

/** What a partner's profile sets of its shared limits. */
export type PartnerProfile = LimitsProfile;

export type PartnerState = "active" | "idle" | "breaker-open" | "parked";

/**
 * One partner account as the directory holds it: its limits layer (the part of the delivery stack
 * shared by every dispatcher of the account, see delivery/limits.ts), plus what the directory counts
 * to know when to forget it and what `/partners` shows.
 */
export class Partner extends LimitsLayer {
  /** Dispatchers of this account alive now, across queues. */
  dispatchers = 0;
  parkedBatches = 0;

  state(): PartnerState {
    if (this.breakerTripped) return "breaker-open";
    if (this.parkedBatches > 0) return "parked";
    return this.dispatchers > 0 ? "active" : "idle";
  }
}
