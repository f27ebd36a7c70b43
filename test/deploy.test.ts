/**
 * deploy/compose and deploy/k8s as far as they can be checked without Docker
 * or a cluster: every drawdown container runs a real CLI command, its
 * environment names only real settings and passes drawdown's own config
 * validation, probes and health checks hit routes that exist, raters own
 * disjoint partitions that together cover the stream, NATS is a 3-node
 * cluster whose routes name every node, Prometheus scrapes every drawdown
 * process, Grafana gets the dashboard, and every mounted file exists.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { hashKey, newKey } from '../shared/auth.js';
import { parseCatalog } from '../catalog/model.js';
import { loadConfig, parsePartitionList, settings, type SettingName } from '../shared/config.js';
import { repoRoot } from './harness.js';

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

/** Each rater's partitions: disjoint, and together every partition of the stream. */
function checkPartitionOwnership(raters: DrawdownContainer[]): void {
  expect(raters.length).toBeGreaterThanOrEqual(2);
  const owned: number[] = [];
  let partitions = 0;
  for (const rater of raters) {
    const config = validate(rater);
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
  const compose = parse(readFileSync(join(composeDir, 'docker-compose.yml'), 'utf8'), { merge: true }) as {
    services: Record<
      string,
      {
        image: string;
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
    .filter(([, s]) => s.image === 'drawdown:latest')
    .map(([name, s]) => ({
      name,
      command: s.command?.[0] ?? '',
      env: Object.fromEntries(Object.entries(s.environment ?? {}).map(([k, v]) => [k, interpolate(String(v))])),
    }));

  it('runs 2 gateways, 2 raters and the settlement service, each a real command with real, valid settings', () => {
    expect(drawdown.map((c) => c.command).sort()).toEqual(['ingest', 'ingest', 'rater', 'rater', 'settlement']);
    for (const container of drawdown) checkContainer(container);
  });

  it('gives each partition exactly one rater', () => {
    checkPartitionOwnership(drawdown.filter((c) => c.command === 'rater'));
  });

  it('health-checks drawdown on /readyz, a route every process serves', () => {
    for (const [name, service] of services.filter(([, s]) => s.image === 'drawdown:latest')) {
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

  it('has Prometheus scrape every drawdown service and Grafana load the dashboard from its Prometheus data source', () => {
    const scrape = parse(readFileSync(join(composeDir, 'prometheus.yml'), 'utf8')) as {
      scrape_configs: { static_configs: { targets: string[] }[] }[];
    };
    const targets = scrape.scrape_configs.flatMap((job) => job.static_configs.flatMap((c) => c.targets));
    expect(targets.sort()).toEqual(drawdown.map((c) => `${c.name}:${validate(c).httpPort}`).sort());
    const datasources = parse(
      readFileSync(join(composeDir, 'grafana', 'provisioning', 'datasources', 'prometheus.yml'), 'utf8'),
    ) as { datasources: { uid: string; url: string }[] };
    const dashboard = JSON.parse(
      readFileSync(join(repoRoot, 'deploy', 'grafana', 'drawdown-dashboard.json'), 'utf8'),
    ) as { panels: { datasource?: { uid: string } }[] };
    const uids = new Set(dashboard.panels.filter((p) => p.datasource).map((p) => p.datasource!.uid));
    expect([...uids]).toEqual([datasources.datasources[0]!.uid]);
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
  type Doc = {
    kind: string;
    metadata: { name: string };
    spec?: any;
    data?: Record<string, string>;
    stringData?: Record<string, string>;
  };
  const docs: Doc[] = files.flatMap((f) =>
    parseAllDocuments(readFileSync(join(k8sDir, f), 'utf8')).map((d) => {
      expect(d.errors).toEqual([]);
      return d.toJS() as Doc;
    }),
  );
  const find = (kind: string, name: string): Doc => {
    const doc = docs.find((d) => d.kind === kind && d.metadata.name === name);
    if (!doc) throw new Error(`no ${kind} ${name} in deploy/k8s`);
    return doc;
  };
  const podTemplate = (d: Doc): any => (d.kind === 'CronJob' ? d.spec.jobTemplate.spec.template : d.spec.template);
  const workloads = docs.filter((d) => ['Deployment', 'StatefulSet', 'CronJob'].includes(d.kind));
  const drawdownPods = workloads.filter((d) =>
    podTemplate(d).spec.containers.some((c: any) => c.image === 'drawdown:latest'),
  );

  /** The environment a drawdown container gets: envFrom ConfigMaps/Secrets and env, with values from the manifests. */
  function containerOf(workload: Doc): DrawdownContainer {
    const c = podTemplate(workload).spec.containers.find((x: any) => x.image === 'drawdown:latest');
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

  it('lists every manifest in kustomization.yaml', () => {
    const kustomization = parse(readFileSync(join(k8sDir, 'kustomization.yaml'), 'utf8')) as { resources: string[] };
    expect([...kustomization.resources].sort()).toEqual([...files].sort());
  });

  it('runs gateways, raters, the settlement API and a settle CronJob, each a real command with real, valid settings', () => {
    expect(drawdownPods.map((d) => `${d.kind}:${containerOf(d).command}`).sort()).toEqual([
      'CronJob:settle',
      'Deployment:ingest',
      'Deployment:rater',
      'Deployment:rater',
      'Deployment:settlement',
    ]);
    for (const workload of drawdownPods) checkContainer(containerOf(workload));
    expect(find('CronJob', 'settle').spec.concurrencyPolicy).toBe('Forbid');
    expect(containerOf(find('Deployment', 'settlement')).env.DRAWDOWN_SETTLE_EVERY_MS).toBe('0');
  });

  it('gives each partition exactly one rater, one pod at a time', () => {
    const raters = drawdownPods.filter((d) => containerOf(d).command === 'rater');
    checkPartitionOwnership(raters.map(containerOf));
    for (const rater of raters)
      expect({ name: rater.metadata.name, replicas: rater.spec.replicas, strategy: rater.spec.strategy.type }).toEqual({
        name: rater.metadata.name,
        replicas: 1,
        strategy: 'Recreate',
      });
  });

  it('probes long-running drawdown pods on /healthz and /readyz of their http port, and annotates them for Prometheus', () => {
    for (const workload of drawdownPods.filter((d) => d.kind !== 'CronJob')) {
      const template = podTemplate(workload);
      const c = template.spec.containers.find((x: any) => x.image === 'drawdown:latest');
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
      const c = template.spec.containers.find((x: any) => x.image === 'drawdown:latest');
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
  const dockerfile = readFileSync(join(repoRoot, 'deploy', 'Dockerfile'), 'utf8');
  it('builds on node:20-slim, runs the CLI the package names as a non-root user', () => {
    expect([...dockerfile.matchAll(/^FROM (\S+)/gm)].map(([, image]) => image)).toEqual([
      'node:20-slim',
      'node:20-slim',
    ]);
    const bin = (JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { bin: { drawdown: string } }).bin
      .drawdown;
    expect(dockerfile).toContain(`ENTRYPOINT ["node", "${bin}"]`);
    expect(/^USER (\S+)/m.exec(dockerfile)?.[1]).toBe('node');
    // Every directory the build compiles is copied in.
    const include = (JSON.parse(readFileSync(join(repoRoot, 'tsconfig.build.json'), 'utf8')) as { include: string[] })
      .include;
    for (const dir of include) expect(dockerfile).toContain(`COPY ${dir} ./${dir}`);
  });
});
