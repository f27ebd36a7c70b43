/**
 * Test-only crash points. The fault tests need a process to die at an exact
 * instant (say, after its ClickHouse insert and before its ack) to prove that
 * nothing is lost or double-counted there. DRAWDOWN_FAULT=<point>:<n> makes
 * the n-th arrival at <point> SIGKILL the process; unset, this costs one
 * comparison.
 */
const spec = process.env.DRAWDOWN_FAULT;
const [point, countText] = spec === undefined ? [undefined, undefined] : spec.split(':');
let remaining = countText === undefined ? 1 : Number(countText);

export function crashPoint(name: string): void {
  if (point !== name) return;
  remaining -= 1;
  if (remaining === 0) {
    // A JSON line like every other line the process writes (pino's shape: fatal is level 60).
    process.stderr.write(
      `${JSON.stringify({ level: 60, time: Date.now(), msg: `DRAWDOWN_FAULT: killing process at ${name}` })}\n`,
    );
    process.kill(process.pid, 'SIGKILL');
  }
}
