/** The per-test figures the fault tests report: what was sent and where each message ended. */
export interface Figures {
  sent: number;
  delivered: number;
  deadLettered: number;
  duplicated: number;
  lost: number;
}

/**
 * Accounts for every sent id: delivered (in S3), dead-lettered, or lost (neither). Duplicates are
 * records beyond the first for the same id and account.
 */
export function account(
  sent: string[],
  delivered: { id: string; account: string }[],
  deadLettered: string[],
): Figures & { lostIds: string[] } {
  const seen = new Set<string>();
  let duplicated = 0;
  for (const r of delivered) {
    const key = `${r.id}/${r.account}`;
    if (seen.has(key)) duplicated++;
    seen.add(key);
  }
  const deliveredIds = new Set(delivered.map((r) => r.id));
  const dead = new Set(deadLettered);
  const lostIds = sent.filter((id) => !deliveredIds.has(id) && !dead.has(id));
  return {
    sent: sent.length,
    delivered: sent.filter((id) => deliveredIds.has(id)).length,
    deadLettered: sent.filter((id) => dead.has(id)).length,
    duplicated,
    lost: lostIds.length,
    lostIds,
  };
}

export function report(test: string, f: Figures): void {
  console.log(
    `[figures] ${test}: sent ${f.sent}, delivered ${f.delivered}, dead-lettered ${f.deadLettered}, duplicated ${f.duplicated}, lost ${f.lost}`,
  );
}
