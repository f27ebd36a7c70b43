/**
 * Test-only crash and pause points. The fault tests need a process to die at
 * an exact instant (say, after its ClickHouse insert and before its ack) to
 * prove that nothing is lost or double-counted there. DRAWDOWN_FAULT=<point>:<n>
 * makes the n-th arrival at <point> SIGKILL the process;
 * DRAWDOWN_FAULT=<point>:<n>:<ms> makes it freeze the whole thread for <ms>
 * instead (no timer, no I/O callback runs: what SIGSTOP does to a process,
 * but at a known instant). Unset, each costs one comparison.
 */
const spec = process.env.DRAWDOWN_FAULT;
const [point, countText, pauseText] = spec === undefined ? [undefined, undefined, undefined] : spec.split(':');
let remaining = countText === undefined ? 1 : Number(countText);

/** A JSON line like every other line the process writes (pino's shape). */
function announce(level: number, msg: string): void {
  process.stderr.write(`${JSON.stringify({ level, time: Date.now(), msg })}\n`);
}

export function crashPoint(name: string): void {
  if (point !== name || pauseText !== undefined) return;
  remaining -= 1;
  if (remaining === 0) {
    announce(60, `DRAWDOWN_FAULT: killing process at ${name}`);
    process.kill(process.pid, 'SIGKILL');
  }
}

export function pausePoint(name: string): void {
  if (point !== name || pauseText === undefined) return;
  remaining -= 1;
  if (remaining === 0) {
    const pauseMs = Number(pauseText);
    announce(40, `DRAWDOWN_FAULT: freezing the process for ${pauseMs} ms at ${name}`);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, pauseMs);
    announce(40, `DRAWDOWN_FAULT: process thawed at ${name}`);
  }
}
