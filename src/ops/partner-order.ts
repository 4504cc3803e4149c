/** The orders partners are listed in, by `/partners` and by the console: one definition for both. */
import type { PartnerSnapshot } from "../service.ts";

/** What the orders read of a partner. */
export type Sortable = Pick<PartnerSnapshot, "account" | "buffered" | "inFlight" | "oldestBufferedAgeMs">;

const byAccount = (a: Sortable, b: Sortable) => (a.account < b.account ? -1 : a.account > b.account ? 1 : 0);

/** Each order ends on the account, so pages of an unchanged set never overlap or skip. */
export const PARTNER_SORTS = {
  /** Most records held (buffered and in flight) first. */
  held: (a: Sortable, b: Sortable) => b.buffered + b.inFlight - (a.buffered + a.inFlight) || byAccount(a, b),
  /** Oldest buffered record first; partners holding nothing last. */
  oldest: (a: Sortable, b: Sortable) => {
    const x = a.oldestBufferedAgeMs;
    const y = b.oldestBufferedAgeMs;
    if (x === undefined || y === undefined) return x === y ? byAccount(a, b) : x === undefined ? 1 : -1;
    return y - x || byAccount(a, b);
  },
  account: byAccount,
} satisfies Record<string, (a: Sortable, b: Sortable) => number>;

export type PartnerSort = keyof typeof PARTNER_SORTS;
