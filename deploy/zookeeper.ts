/**
 * A real ZooKeeper (Debian's zookeeper package, 3.8) child process for the
 * replicated ClickHouse cluster of local runs and tests: one standalone
 * server on 127.0.0.1, its config, data and log under one directory, the
 * admin HTTP server off. ClickHouse 18.16 predates ClickHouse Keeper, so its
 * replicated tables coordinate through ZooKeeper.
 */
import { accessSync, constants, mkdirSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './free-port.js';
import {
  findBinary,
  LaunchError,
  logTail,
  ManagedServer,
  retryWhilePortInUse,
  type Launched,
} from './server-process.js';

export interface ZooKeeperOptions {
  dir: string;
  /** Client port; default: a free port. */
  port?: number;
  /** How long start()/restart() wait for `ruok` to answer `imok`; default 30 s (a JVM starts slowly). */
  startTimeoutMs?: number;
}

// Debian's libzookeeper-java: the jar's manifest names its dependencies' jars.
const ZOOKEEPER_JAR = '/usr/share/java/zookeeper.jar';
const MAIN_CLASS = 'org.apache.zookeeper.server.quorum.QuorumPeerMain';
const DEFAULT_START_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 5_000;
const POLL_INTERVAL_MS = 100;
const PROBE_TIMEOUT_MS = 1_000;
const LAUNCH_RETRY_DELAY_MS = 250;
// A test cluster's metadata is small; a bounded heap keeps the JVM from sizing itself to the machine.
const HEAP_MAX = '-Xmx256m';

interface Settings {
  dir: string;
  java: string;
  port: number;
  startTimeoutMs: number;
}

export class ZooKeeperProcess extends ManagedServer {
  readonly port: number;
  readonly dir: string;
  /** host:port, as ClickHouse's <zookeeper><node> names it. */
  readonly address: string;

  private constructor(private readonly settings: Settings) {
    super(STOP_GRACE_MS, LAUNCH_RETRY_DELAY_MS);
    this.port = settings.port;
    this.dir = settings.dir;
    this.address = `127.0.0.1:${settings.port}`;
  }

  static async start(options: ZooKeeperOptions): Promise<ZooKeeperProcess> {
    const dir = resolve(options.dir);
    mkdirSync(join(dir, 'data'), { recursive: true });
    try {
      accessSync(ZOOKEEPER_JAR, constants.R_OK);
    } catch {
      throw new Error(
        `${ZOOKEEPER_JAR} not found: Debian's zookeeper package is missing; run \`bash deploy/install.sh\` (as root it installs it with apt-get)`,
      );
    }
    const java = findBinary('java');
    return retryWhilePortInUse(async () => {
      const server = new ZooKeeperProcess({
        dir,
        java,
        port: options.port ?? (await freePort()),
        startTimeoutMs: options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS,
      });
      await server.launch();
      return server;
    }, LAUNCH_RETRY_DELAY_MS);
  }

  protected async launch(): Promise<void> {
    const { dir, java } = this.settings;
    const configPath = join(dir, 'zoo.cfg');
    writeFileSync(configPath, zooConfig(this.settings));
    const output = join(dir, 'zookeeper.log');
    await this.run(java, [HEAP_MAX, '-cp', ZOOKEEPER_JAR, MAIN_CLASS, configPath], output, [output], (launched) =>
      this.waitReady(launched),
    );
  }

  private async waitReady(launched: Launched): Promise<void> {
    const where = `zookeeper (port ${this.port}, dir ${this.dir})`;
    const deadline = Date.now() + this.settings.startTimeoutMs;
    for (;;) {
      if (launched.ended !== undefined) {
        const tail = logTail(launched);
        throw new LaunchError(
          `${where} exited during startup (${launched.ended}); ${tail}`,
          /address already in use/i.test(tail),
        );
      }
      if (Date.now() >= deadline)
        throw new LaunchError(
          `${where} did not answer ruok within ${this.settings.startTimeoutMs} ms; ${logTail(launched)}`,
          false,
        );
      if ((await fourLetterWord(this.port, 'ruok')) === 'imok') return;
      await Promise.race([sleep(POLL_INTERVAL_MS), launched.exited]);
    }
  }
}

/** Sends one of ZooKeeper's four-letter commands; its answer, or undefined when nothing answered in time. */
export function fourLetterWord(port: number, word: string): Promise<string | undefined> {
  return new Promise((resolveAnswer) => {
    let answer = '';
    const socket = connect({ host: '127.0.0.1', port }, () => socket.end(word));
    socket.setEncoding('utf8');
    socket.setTimeout(PROBE_TIMEOUT_MS, () => socket.destroy());
    socket.on('data', (chunk: string) => (answer += chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => resolveAnswer(answer === '' ? undefined : answer));
  });
}

// Standalone mode (no server.N lines). A short tick keeps session expiry
// (2–20 ticks) short, so ClickHouse notices a restarted ZooKeeper quickly;
// the admin server (Jetty, port 8080 by default) stays off so it cannot
// collide with anything.
function zooConfig(settings: Settings): string {
  return `# Written by deploy/zookeeper.ts on every start; edits here are overwritten.
tickTime=500
initLimit=10
syncLimit=5
dataDir=${join(settings.dir, 'data')}
clientPort=${settings.port}
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,mntr
autopurge.purgeInterval=1
`;
}
