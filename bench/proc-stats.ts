import { readFileSync } from 'node:fs';

export interface ProcStats {
  /** User + system CPU seconds used so far. */
  cpuSeconds: number;
  /** Peak resident memory so far (VmHWM). */
  peakRssBytes: number;
  /** Resident memory now (VmRSS). */
  rssBytes: number;
}

/** CPU seconds, current and peak resident memory of a process, from /proc (Linux). */
export function procStats(pid: number): ProcStats {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kB = (name: string): number => {
    const match = new RegExp(`${name}:\\s+(\\d+) kB`).exec(status);
    return match ? Number(match[1]) * 1024 : 0;
  };
  return { cpuSeconds: ticks / 100, peakRssBytes: kB('VmHWM'), rssBytes: kB('VmRSS') };
}

/** procStats that answers undefined once the process is gone. */
export function procStatsIfAlive(pid: number | undefined): ProcStats | undefined {
  if (pid === undefined) return undefined;
  try {
    return procStats(pid);
  } catch {
    return undefined;
  }
}

export const mib = (bytes: number): number => Math.round(bytes / 1024 / 1024);
