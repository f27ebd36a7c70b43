/**
 * A real replicated ClickHouse cluster for local runs and tests: one
 * ZooKeeper and N clickhouse-server 18.16 replicas of one shard, all on
 * 127.0.0.1 and free ports, each with <zookeeper>, <remote_servers> (the
 * cluster, named `name`) and <macros> ({shard}, {replica}) in its config,
 * so drawdown's ReplicatedMergeTree tables (DRAWDOWN_CLICKHOUSE_CLUSTER)
 * replicate between them. Any replica can be killed and restarted on the
 * same ports and data.
 */
import { join, resolve } from 'node:path';
import { ClickHouseServerProcess, xmlText } from './clickhouse-server.js';
import { freePort } from './free-port.js';
import { ZooKeeperProcess } from './zookeeper.js';

export interface ClickHouseClusterOptions {
  dir: string;
  /** The cluster's name in <remote_servers> (what DRAWDOWN_CLICKHOUSE_CLUSTER names); default `drawdown`. */
  name?: string;
  /** Replicas of the one shard; default 2. */
  replicas?: number;
}

export const REPLICAS_MAX = 5;

interface ReplicaPorts {
  httpPort: number;
  tcpPort: number;
  interserverPort: number;
}

export class ClickHouseCluster {
  private constructor(
    readonly name: string,
    readonly zookeeper: ZooKeeperProcess,
    readonly replicas: readonly ClickHouseServerProcess[],
  ) {}

  /** Every replica's HTTP URL, comma-separated: a DRAWDOWN_CLICKHOUSE_URL that fails over between them. */
  get url(): string {
    return this.replicas.map((replica) => replica.url).join(',');
  }

  static async start(options: ClickHouseClusterOptions): Promise<ClickHouseCluster> {
    const dir = resolve(options.dir);
    const name = options.name ?? 'drawdown';
    const count = options.replicas ?? 2;
    if (!/^[A-Za-z0-9_]+$/.test(name)) throw new RangeError(`cluster name must be [A-Za-z0-9_]+, got ${name}`);
    if (!Number.isInteger(count) || count < 1 || count > REPLICAS_MAX)
      throw new RangeError(`replicas must be 1–${REPLICAS_MAX}, got ${count}`);
    const zookeeper = await ZooKeeperProcess.start({ dir: join(dir, 'zookeeper') });
    const started: ClickHouseServerProcess[] = [];
    try {
      // Every replica's config names every other replica's ports, so all are chosen before any starts.
      const ports: ReplicaPorts[] = [];
      for (let i = 0; i < count; i++)
        ports.push({ httpPort: await freePort(), tcpPort: await freePort(), interserverPort: await freePort() });
      for (let i = 0; i < count; i++) {
        started.push(
          await ClickHouseServerProcess.start({
            dir: join(dir, `replica-${i + 1}`),
            httpPort: ports[i]!.httpPort,
            tcpPort: ports[i]!.tcpPort,
            extraConfigXml: replicaConfig(name, zookeeper.address, ports, i),
          }),
        );
      }
    } catch (error) {
      await Promise.allSettled(started.map((replica) => replica.stop()));
      await zookeeper.stop();
      throw error;
    }
    return new ClickHouseCluster(name, zookeeper, started);
  }

  /** Stops every replica, then ZooKeeper. */
  async stop(): Promise<void> {
    await Promise.allSettled(this.replicas.map((replica) => replica.stop()));
    await this.zookeeper.stop();
  }
}

// One shard; internal_replication so a Distributed table over the cluster
// would write each block to one replica and let replication copy it.
function replicaConfig(name: string, zookeeper: string, ports: readonly ReplicaPorts[], index: number): string {
  const [host, port] = zookeeper.split(':');
  const replicas = ports.map((p) => `<replica><host>127.0.0.1</host><port>${p.tcpPort}</port></replica>`).join('');
  return `
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <interserver_http_port>${ports[index]!.interserverPort}</interserver_http_port>
  <zookeeper><node><host>${xmlText(host!)}</host><port>${xmlText(port!)}</port></node><session_timeout_ms>6000</session_timeout_ms></zookeeper>
  <remote_servers><${name}><shard><internal_replication>true</internal_replication>${replicas}</shard></${name}></remote_servers>
  <macros><shard>01</shard><replica>replica-${index + 1}</replica></macros>`;
}
