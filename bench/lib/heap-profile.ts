/** Reads V8 sampling heap profiles (.heapprofile) and ranks functions and origins by bytes allocated. */
import { readFileSync } from "node:fs";
import { relative } from "node:path";
import { fileURLToPath } from "node:url";
import { originOf, REPO } from "./cpu-profile.ts";

interface HeapNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: HeapNode[];
}

export interface Allocation {
  fn: string;
  at: string;
  bytes: number;
  share: number;
}

export function topAllocations(
  file: string,
  limit: number,
): { totalBytes: number; top: Allocation[]; origins: { origin: string; bytes: number; share: number }[] } {
  const { head } = JSON.parse(readFileSync(file, "utf8")) as { head: HeapNode };
  const byFn = new Map<string, { fn: string; at: string; bytes: number }>();
  const byOrigin = new Map<string, number>();
  let total = 0;
  const stack: HeapNode[] = [head];
  for (let node = stack.pop(); node; node = stack.pop()) {
    stack.push(...node.children);
    if (node.selfSize === 0) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    const path = url.startsWith("file://") ? relative(REPO, fileURLToPath(url)) : url;
    const at = path ? `${path}:${lineNumber + 1}` : "(native)";
    const key = `${functionName}@${at}`;
    const entry = byFn.get(key) ?? { fn: functionName || "(anonymous)", at, bytes: 0 };
    entry.bytes += node.selfSize;
    byFn.set(key, entry);
    const origin = originOf(functionName, path);
    byOrigin.set(origin, (byOrigin.get(origin) ?? 0) + node.selfSize);
    total += node.selfSize;
  }
  return {
    totalBytes: total,
    top: [...byFn.values()]
      .sort((a, b) => b.bytes - a.bytes)
      .slice(0, limit)
      .map((e) => ({ ...e, share: e.bytes / total })),
    origins: [...byOrigin]
      .sort((a, b) => b[1] - a[1])
      .map(([origin, bytes]) => ({ origin, bytes, share: bytes / total })),
  };
}
