/**
 * A real clickhouse-server (Debian's 18.16) child process for local runs and
 * tests, bound to 127.0.0.1, with its config, data and logs under one
 * directory so a restart finds the tables the previous run left.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './free-port.js';
import {
  findBinary,
  httpGet,
  LaunchError,
  logTail,
  ManagedServer,
  retryWhilePortInUse,
  type Launched,
} from './server-process.js';

export interface ClickHouseServerOptions {
  dir: string;
  /** HTTP interface port; default: a free port. */
  httpPort?: number;
  /** Native protocol port; default: a free port. */
  tcpPort?: number;
  /** How long start()/restart() wait for /ping to answer; default 30 s. */
  startTimeoutMs?: number;
  /**
   * More server settings, as XML elements inside <yandex> (deploy/clickhouse-cluster.ts adds
   * <zookeeper>, <remote_servers>, <macros> and the interserver port this way).
   */
  extraConfigXml?: string;
}

const DEFAULT_START_TIMEOUT_MS = 30_000;
// 18.16 gives open connections 5 s on SIGTERM (shutdown_wait_unfinished) and
// then can hang several more seconds on a client's idle keep-alive socket,
// while its own storage shutdown takes milliseconds: past 5 s, killing it
// loses nothing a graceful exit would have kept.
const STOP_GRACE_MS = 5_000;
const POLL_INTERVAL_MS = 100;
const PROBE_TIMEOUT_MS = 1_000;
const LAUNCH_RETRY_DELAY_MS = 250;

interface Settings {
  dir: string;
  binary: string;
  httpPort: number;
  tcpPort: number;
  startTimeoutMs: number;
  extraConfigXml: string;
}

export class ClickHouseServerProcess extends ManagedServer {
  readonly url: string;
  readonly httpPort: number;
  readonly tcpPort: number;
  readonly dir: string;

  private constructor(private readonly settings: Settings) {
    super(STOP_GRACE_MS, LAUNCH_RETRY_DELAY_MS);
    this.httpPort = settings.httpPort;
    this.tcpPort = settings.tcpPort;
    this.dir = settings.dir;
    this.url = `http://127.0.0.1:${settings.httpPort}`;
  }

  static async start(options: ClickHouseServerOptions): Promise<ClickHouseServerProcess> {
    const dir = resolve(options.dir);
    mkdirSync(dir, { recursive: true });
    const binary = findBinary('clickhouse-server');
    // Ports we picked are simply picked again; ports the caller chose may just need a moment.
    return retryWhilePortInUse(async () => {
      const server = new ClickHouseServerProcess({
        dir,
        binary,
        httpPort: options.httpPort ?? (await freePort()),
        tcpPort: options.tcpPort ?? (await freePort()),
        startTimeoutMs: options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS,
        extraConfigXml: options.extraConfigXml ?? '',
      });
      await server.launch();
      return server;
    }, LAUNCH_RETRY_DELAY_MS);
  }

  protected async launch(): Promise<void> {
    const { dir, binary } = this.settings;
    const configPath = join(dir, 'config.xml');
    writeFileSync(configPath, serverConfig(this.settings));
    writeFileSync(join(dir, 'users.xml'), USERS_XML);
    const output = join(dir, 'stdout.log');
    await this.run(binary, [`--config-file=${configPath}`], output, [join(dir, 'error.log'), output], (launched) =>
      this.waitReady(launched),
    );
  }

  private async waitReady(launched: Launched): Promise<void> {
    const { settings } = this;
    const where = `clickhouse-server (http ${settings.httpPort}, tcp ${settings.tcpPort}, dir ${settings.dir})`;
    const deadline = Date.now() + settings.startTimeoutMs;
    for (;;) {
      if (launched.ended !== undefined) {
        const tail = logTail(launched);
        throw new LaunchError(
          `${where} exited during startup (${launched.ended}); ${tail}`,
          /address already in use/i.test(tail),
        );
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new LaunchError(
          `${where} did not answer /ping within ${settings.startTimeoutMs} ms; ${logTail(launched)}`,
          false,
        );
      }
      const ping = await httpGet(`${this.url}/ping`, Math.min(PROBE_TIMEOUT_MS, remaining));
      if (ping?.status === 200 && ping.body.trim() === 'Ok.') {
        await this.checkIdentity(launched, where);
        return;
      }
      await Promise.race([sleep(POLL_INTERVAL_MS), launched.exited]);
    }
  }

  // "Ok." could come from another clickhouse-server that holds our HTTP port
  // (ours would then be failing to bind it), so make sure it serves our data directory.
  private async checkIdentity(launched: Launched, where: string): Promise<void> {
    const expected = `${join(this.dir, 'data')}/data/system/`;
    const query = encodeURIComponent("SELECT data_path FROM system.databases WHERE name = 'system'");
    const answer = await httpGet(`${this.url}/?query=${query}`, PROBE_TIMEOUT_MS);
    const actual = answer?.status === 200 ? answer.body.trim() : `no answer (${answer?.status ?? 'connection failed'})`;
    if (actual !== expected) {
      throw new LaunchError(
        `another server answers on ${where}'s HTTP port: its system database lives at ${actual}, expected ${expected}; ${logTail(launched)}`,
        true,
      );
    }
  }
}

export function xmlText(value: string | number): string {
  return String(value).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

// 18.16's root element is <yandex>, and it refuses to start on settings it
// does not know (allow_experimental_decimal_type, for one). query_log and
// part_log stay off because they are only on when configured; the mark cache
// is kept small for small test machines.
function serverConfig(settings: Settings): string {
  const path = (sub: string) => xmlText(`${join(settings.dir, sub)}/`);
  return `<?xml version="1.0"?>
<!-- Written by deploy/clickhouse-server.ts on every start; edits here are overwritten. -->
<yandex>
  <logger><level>warning</level><log>${xmlText(join(settings.dir, 'server.log'))}</log><errorlog>${xmlText(join(settings.dir, 'error.log'))}</errorlog><console>0</console></logger>
  <http_port>${settings.httpPort}</http_port>
  <tcp_port>${settings.tcpPort}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>${path('data')}</path>
  <tmp_path>${path('tmp')}</tmp_path>
  <user_files_path>${path('user_files')}</user_files_path>
  <format_schema_path>${path('format_schemas')}</format_schema_path>
  <mark_cache_size>67108864</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>${settings.extraConfigXml}
</yandex>
`;
}

const USERS_XML = `<?xml version="1.0"?>
<!-- Written by deploy/clickhouse-server.ts on every start; edits here are overwritten. -->
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
`;
