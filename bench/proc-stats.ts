import { readdirSync, readFileSync } from 'node:fs';

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

/** CPU seconds per thread (/proc/<pid>/task/<tid>/stat): `main`, then name#tid. */
export function threadCpuSeconds(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      // Worker threads share the process's name; the main thread's id is the pid.
      const name = tid === String(pid) ? 'main' : `${stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))}#${tid}`;
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(name, (out.get(name) ?? 0) + (Number(fields[11]) + Number(fields[12])) / 100);
    } catch {
      // The thread ended between listing and reading.
    }
  }
  return out;
}

/**
 * Busy CPU seconds of the whole machine so far (/proc/stat: all but idle and
 * iowait), so a phase can tell whether the cores were the limit.
 */
export function machineCpuSeconds(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
  const [user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number);
  return (user! + nice! + system! + irq! + softirq! + (steal ?? 0)) / 100;
}
