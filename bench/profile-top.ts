/**
 * `node dist/bench/profile-top.js FILE.cpuprofile [N]`: the functions with
 * the most self time in a V8 CPU profile (node --cpu-prof), as % of samples.
 */
import { readFileSync } from 'node:fs';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

const [file, top = '30'] = process.argv.slice(2);
if (file === undefined) throw new Error('usage: profile-top FILE.cpuprofile [N]');
const profile = JSON.parse(readFileSync(file, 'utf8')) as { nodes: Node[]; samples: number[]; timeDeltas: number[] };
const selfMs = new Map<string, number>();
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
let totalMs = 0;
for (let i = 0; i < profile.samples.length; i++) {
  const node = byId.get(profile.samples[i]!)!;
  const ms = (profile.timeDeltas[i] ?? 0) / 1000;
  totalMs += ms;
  const { functionName, url, lineNumber } = node.callFrame;
  const where = url === '' ? '' : ` ${url.replace(/^.*\/(node_modules\/|dist\/)?/, '')}:${lineNumber + 1}`;
  const key = `${functionName || '(anonymous)'}${where}`;
  selfMs.set(key, (selfMs.get(key) ?? 0) + ms);
}
const idle = [...selfMs].filter(([k]) => k.startsWith('(idle)')).reduce((s, [, v]) => s + v, 0);
process.stdout.write(`${(totalMs / 1000).toFixed(1)} s profiled, ${((100 * idle) / totalMs).toFixed(1)} % idle\n`);
for (const [name, ms] of [...selfMs].sort((a, b) => b[1] - a[1]).slice(0, Number(top))) {
  process.stdout.write(`${((100 * ms) / totalMs).toFixed(1).padStart(5)} %  ${name}\n`);
}
