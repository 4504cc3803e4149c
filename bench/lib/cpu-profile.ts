/** Reads V8 .cpuprofile files (node --cpu-prof) and ranks functions by self time. */
import { readFileSync } from "node:fs";
import { relative } from "node:path";
import { fileURLToPath } from "node:url";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface SelfTime {
  fn: string;
  /** file:line, relative to the repository when inside it; 1-based line. */
  at: string;
  selfMs: number;
  share: number;
}

export const REPO = fileURLToPath(new URL("../../", import.meta.url));

export interface OriginTime {
  /** src/, handlers/, a package under node_modules, a node: module, or a V8 bucket such as (garbage collector). */
  origin: string;
  selfMs: number;
  /** Share of the thread's busy (non-idle) time. */
  share: number;
}

/** Where a frame's code lives, coarsely: which package, which node: module, or our own code. */
export function originOf(fn: string, path: string): string {
  if (!path) return fn.startsWith("(") ? fn : "(native)";
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(path);
  if (pkg) return pkg[1] as string;
  if (path.startsWith("node:")) return path.replace(/^node:(internal\/)?(deps\/)?([^/:]+).*$/, "node:$3");
  return path.split("/")[0] === "src" ? "src/" : (path.split("/")[0] ?? path);
}

export function topSelfTime(
  file: string,
  limit: number,
): { totalMs: number; busyMs: number; top: SelfTime[]; origins: OriginTime[] } {
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<string, { fn: string; at: string; us: number }>();
  const originUs = new Map<string, number>();
  let totalUs = 0;
  profile.samples.forEach((id, i) => {
    const node = byId.get(id);
    const us = profile.timeDeltas[i] ?? 0;
    if (!node) return;
    totalUs += us;
    const { functionName, url, lineNumber } = node.callFrame;
    const path = url.startsWith("file://") ? relative(REPO, fileURLToPath(url)) : url;
    const at = path ? `${path}:${lineNumber + 1}` : "(native)";
    const origin = originOf(functionName, path);
    originUs.set(origin, (originUs.get(origin) ?? 0) + us);
    const key = `${functionName}@${at}`;
    const entry = selfUs.get(key) ?? { fn: functionName || "(anonymous)", at, us: 0 };
    entry.us += us;
    selfUs.set(key, entry);
  });
  const top = [...selfUs.values()]
    .sort((a, b) => b.us - a.us)
    .slice(0, limit)
    .map((e) => ({ fn: e.fn, at: e.at, selfMs: e.us / 1000, share: e.us / totalUs }));
  const busyUs = totalUs - (originUs.get("(idle)") ?? 0);
  const origins = [...originUs]
    .filter(([origin]) => origin !== "(idle)")
    .sort((a, b) => b[1] - a[1])
    .map(([origin, us]) => ({ origin, selfMs: us / 1000, share: us / busyUs }));
  return { totalMs: totalUs / 1000, busyMs: busyUs / 1000, top, origins };
}
