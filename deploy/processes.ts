/**
 * Composes drawdown's stages into a running process: any subset of ingest,
 * rater and settlement, against given NATS and ClickHouse. The all-in-one,
 * the separate commands and the tests all start drawdown through here.
 */
import type { Registry } from 'prom-client';
import type { Catalog } from '../catalog/model.js';
import { openStore } from '../shared/clickhouse/open.js';
import { ensureSchema } from '../shared/clickhouse/schema.js';
import type { Store } from '../shared/clickhouse/store.js';
import { parseRaterPartitions, type Config } from '../shared/config.js';
import { DrawdownError } from '../shared/errors.js';
import { authFromConfig } from '../shared/auth.js';
import type { Route } from '../shared/http.js';
import { createLogger, type Logger } from '../shared/log.js';
import { createRegistry } from '../shared/metrics.js';
import { connectNats, type NatsHandles } from '../shared/nats/connect.js';
import { ensureStream, type StreamSettings } from '../shared/nats/stream.js';
import { checkPartitionLayout } from '../shared/nats/partition-layout.js';
import { startService, type RunningService } from '../shared/service.js';
import { startTracing, type Tracing } from '../shared/tracing.js';
import { createIngestMetrics, ingestRoutes } from '../ingest/gateway.js';
import { BatchPublisher } from '../ingest/publisher.js';
import { ensureClaimStream, KeyClaims } from '../ingest/key-claims.js';
import { Rater } from '../rater/rater.js';
import { ensureDeadLetterStream } from '../rater/dead-letter.js';
import { raterWindow } from '../rater/window.js';
import { createSettlementMetrics } from '../settlement/metrics.js';
import { settlementRoutes } from '../settlement/api.js';
import { SettlementRunner } from '../settlement/runner.js';
import { startHolds, type RunningHolds } from '../settlement/holds-service.js';
import { startNotices, type RunningNotices } from '../settlement/notices/notice-service.js';
import { balanceOf, balancesOf } from '../settlement/balance.js';
import { catalogRoutes } from '../catalog/api.js';
import {
  liveCatalog,
  liveMeterDefinitions,
  liveEventMappings,
  openStoreCatalogSource,
  readCatalogFile,
  staticCatalogSource,
  type CatalogSource,
} from '../catalog/source.js';
import { CatalogStore } from '../catalog/store.js';

export interface Parts {
  ingest: boolean;
  rater: boolean;
  settlement: boolean;
}

export interface Running {
  url: string | undefined;
  /** Always the catalog revision in use now (a live view of `catalogSource`). */
  catalog: Catalog;
  catalogSource: CatalogSource;
  store: Store | undefined;
  nats: NatsHandles | undefined;
  runner: SettlementRunner | undefined;
  /** Balance notices and webhooks (settlement with NATS only). */
  notices: RunningNotices | undefined;
  registry: Registry;
  log: Logger;
  stop(): Promise<void>;
}

// Room for the headers the gateway adds to a batch on its way into the stream.
const headerAllowanceBytes = 16 * 1024;

export function streamSettings(config: Config): StreamSettings {
  return {
    name: config.streamName,
    subjectPrefix: config.subjectPrefix,
    partitions: config.partitions,
    maxBytes: config.streamMaxBytes,
    maxMessages: config.streamMaxMessages,
    maxMessageBytes: config.bodyBytesMax + headerAllowanceBytes,
    duplicateWindowMs: config.duplicateWindowMs,
    replicas: config.streamReplicas,
  };
}

export async function startDrawdown(
  config: Config,
  parts: Parts,
  options: { store?: Store; log?: Logger; now?: () => number } = {},
): Promise<Running> {
  const name = [parts.ingest && 'ingest', parts.rater && 'rater', parts.settlement && 'settlement']
    .filter(Boolean)
    .join('+');
  const log = options.log ?? createLogger(config.logLevel, `drawdown-${name}`);
  const registry = createRegistry();
  // The file is checked first even when the store will win: a broken file is a configuration error.
  const catalogFile =
    config.catalog === undefined || config.catalog === '' ? undefined : readCatalogFile(config.catalog);
  if (catalogFile === undefined && config.clickhouseUrl === undefined && options.store === undefined) {
    throw new DrawdownError(
      'config_invalid',
      'DRAWDOWN_CATALOG (or --catalog) is required without DRAWDOWN_CLICKHOUSE_URL (the catalog store)',
    );
  }
  // Checked before anything starts: a process serving /v1 routes must not come up open by accident.
  const servesApi = parts.ingest || parts.settlement;
  const auth = authFromConfig(config, servesApi);
  if (auth === 'off' && servesApi)
    log.warn('API keys are off (DRAWDOWN_AUTH=off): every /v1 route is open to anyone who can reach this port');
  const stream = streamSettings(config);
  const stops: (() => Promise<void>)[] = [];
  const stopAll = async (): Promise<void> => {
    for (const stop of stops.reverse()) {
      try {
        await stop();
      } catch (error) {
        log.warn({ err: error }, 'error while stopping');
      }
    }
  };

  try {
    // Loaded only when asked for; stopped last, after every span the stages end while stopping.
    let tracing: Tracing | undefined;
    if (config.otlpTracesEndpoint !== undefined) {
      const started = await startTracing(config.otlpTracesEndpoint, log);
      tracing = started;
      stops.push(() => started.shutdown());
    }
    let store: Store | undefined = options.store;
    // The gateway needs no ClickHouse, but with one it follows catalog changes (new meters) without a restart.
    if (
      (parts.rater || parts.settlement || (parts.ingest && config.clickhouseUrl !== undefined)) &&
      store === undefined
    ) {
      if (config.clickhouseUrl === undefined)
        throw new DrawdownError('config_invalid', 'DRAWDOWN_CLICKHOUSE_URL (or --clickhouse-url) is required');
      const opened = await openStore(config.clickhouseUrl, { cluster: config.clickhouseCluster });
      store = opened;
      stops.push(() => opened.close());
    }
    if (store) await ensureSchema(store);

    // The catalog store is the source of truth; an empty store is seeded from the file.
    const catalogs = store && new CatalogStore(store);
    let catalogSource: CatalogSource;
    if (catalogs !== undefined) {
      const source = await openStoreCatalogSource(catalogs, {
        refreshMs: config.catalogRefreshMs,
        log,
        registry,
        ...(catalogFile === undefined ? {} : { seed: { raw: catalogFile.raw, appliedBy: `seed:${config.catalog}` } }),
      });
      catalogSource = source;
      stops.push(async () => source.close());
    } else {
      catalogSource = staticCatalogSource(catalogFile!.raw, catalogFile!.catalog);
    }
    const catalog = liveCatalog(catalogSource);

    let nats: NatsHandles | undefined;
    // Settlement uses NATS for credit holds when it is given a NATS URL; without one it serves no hold routes.
    if (parts.ingest || parts.rater || (parts.settlement && config.natsUrl !== undefined)) {
      if (config.natsUrl === undefined)
        throw new DrawdownError('config_invalid', 'DRAWDOWN_NATS_URL (or --nats-url) is required');
      const handles = await connectNats(config.natsUrl, `drawdown-${name}`, log);
      nats = handles;
      // Draining needs the server; if it is away, give up after a bound and close.
      stops.push(async () => {
        const drained = handles.nc.drain().then(
          () => true,
          () => false,
        );
        const inTime = await Promise.race([
          drained,
          new Promise<boolean>((r) => setTimeout(() => r(false), 5_000).unref()),
        ]);
        if (!inTime && !handles.nc.isClosed()) await handles.nc.close();
      });
      const maxPayload = handles.nc.info?.max_payload ?? 1024 * 1024;
      if (stream.maxMessageBytes > maxPayload) {
        throw new DrawdownError(
          'config_invalid',
          `DRAWDOWN_BODY_BYTES_MAX (${config.bodyBytesMax}) plus ${headerAllowanceBytes} bytes of headers exceeds the NATS server's max_payload (${maxPayload}); raise max_payload or lower the body limit`,
        );
      }
      if (parts.ingest || parts.rater) {
        await ensureStream(handles.jsm, stream);
        // Refuses to start with another partition count than the one recorded (or records it, first).
        const { recorded, layout } = await checkPartitionLayout(handles.js, handles.jsm, stream, `drawdown-${name}`);
        if (recorded) log.info({ layout }, 'partition layout recorded');
      }
      if (parts.ingest) await ensureClaimStream(handles.jsm, stream);
      if (parts.rater)
        await ensureDeadLetterStream(handles.jsm, stream, {
          maxAgeMs: config.deadLetterMaxAgeMs,
          maxBytes: config.deadLetterMaxBytes,
        });
    }

    const routes: Route[] = [];
    if (parts.ingest) {
      const publisher = new BatchPublisher(
        nats!.js,
        stream,
        config.publishTimeoutMs,
        new KeyClaims(nats!.js, nats!.jsm, stream, config.publishTimeoutMs),
      );
      routes.push(
        ...ingestRoutes({
          publisher,
          // Kept current in place: a meter added (or archived) in the catalog applies after the next refresh.
          meters: liveMeterDefinitions(catalogSource, { includeArchived: false }),
          catalogRevision: () => catalogSource.current().revision,
          eventMappings: liveEventMappings(catalogSource),
          limits: {
            batchEventsMax: config.batchEventsMax,
            bodyBytesMax: config.bodyBytesMax,
            bodyTimeoutMs: config.bodyTimeoutMs,
            lateMs: config.lateMs,
            skewMs: config.skewMs,
          },
          metrics: createIngestMetrics(registry),
          tracer: tracing?.tracer('drawdown-ingest'),
          ...(options.now ? { now: options.now } : {}),
        }),
      );
    }

    let rater: Rater | undefined;
    if (parts.rater) {
      rater = new Rater({
        nc: nats!.nc,
        js: nats!.js,
        jsm: nats!.jsm,
        store: store!,
        stream,
        partitions: parseRaterPartitions(config.raterPartitions, config.partitions),
        lease: { ttlMs: config.raterLeaseTtlMs, replicas: config.streamReplicas },
        limits: {
          flushIntervalMs: config.flushIntervalMs,
          flushRowsMax: Math.max(config.flushRowsMax, config.batchEventsMax),
          fetchMessagesMax: config.fetchMessagesMax,
          retryDelayMaxMs: config.retryDelayMaxMs,
          storeAttemptsBeforeUnready: config.storeAttemptsBeforeUnready,
          publishTimeoutMs: config.publishTimeoutMs,
          window: raterWindow(config),
          ackWaitMs: config.ackWaitMs,
          maxAckPending: config.maxAckPending,
        },
        threads: config.raterThreads,
        dedupe: { idsMax: config.dedupeIds, retentionDays: config.dedupeRetentionDays },
        // Kept current in place; workers get each new revision with their next task, and a
        // batch validated against a newer revision than this makes the rater refresh first.
        catalog: {
          meters: liveMeterDefinitions(catalogSource, { includeArchived: true }),
          revision: () => catalogSource.current().revision,
          refresh: async () => void (await catalogSource.refresh()),
        },
        log,
        registry,
        tracer: tracing?.tracer('drawdown-rater'),
      });
      const started = rater;
      await started.start();
      stops.push(() => started.stop());
    }

    let runner: SettlementRunner | undefined;
    let notices: RunningNotices | undefined;
    if (parts.settlement) {
      // Each run reads the latest revision first, and prices the whole run with it.
      const runCatalog = async () => {
        const snapshot = await catalogSource.refresh();
        return { revision: snapshot.revision, catalog: snapshot.catalog };
      };
      const settlementRunner = new SettlementRunner(store!, runCatalog, log, createSettlementMetrics(registry), {
        snapshotRetentionDays: config.snapshotRetentionDays,
        usageRetentionMonths: config.usageRetentionMonths,
      });
      runner = settlementRunner;
      settlementRunner.schedule(config.settleEveryMs);
      stops.push(() => settlementRunner.stop());
      let holds: RunningHolds | undefined;
      // Notices start after holds (they read available after holds) but hold routes touch them: a late binding.
      if (nats) {
        const started = await startHolds({
          nc: nats.nc,
          store: store!,
          catalog,
          settings: config,
          registry,
          log,
          ...(options.now ? { now: options.now } : {}),
          onChange: (customer) => notices?.touch(customer),
        });
        holds = started;
        stops.push(() => started.stop());
        routes.push(...started.routes);
        const holdsBalance = started.balance;
        const nowFn = options.now ?? Date.now;
        const runningNotices = await startNotices({
          nc: nats.nc,
          js: nats.js,
          jsm: nats.jsm,
          store: store!,
          catalog,
          settings: config,
          registry,
          log,
          balance: holdsBalance ?? ((customer) => balanceOf(store!, catalog, customer, nowFn())),
          balances: started.balances ?? ((customers) => balancesOf(store!, catalog, customers, nowFn())),
          ...(options.now ? { now: options.now } : {}),
        });
        notices = runningNotices;
        stops.push(() => runningNotices.stop());
        routes.push(...runningNotices.routes);
        settlementRunner.onCompleted((report) => {
          for (const customer of Object.keys(report.customers)) runningNotices.touch(customer, { background: true });
          // The run left every block's remaining exact: look for blocks now inside their grant.expiring lead time.
          runningNotices.checkExpiring().catch((error: unknown) => {
            log.warn({ err: error }, 'notices: grant.expiring check after a settlement run failed');
          });
        });
      }
      routes.push(
        ...settlementRoutes({
          store: store!,
          catalog,
          runner: settlementRunner,
          log,
          ...(options.now ? { now: options.now } : {}),
          ...(holds?.balance ? { balance: holds.balance } : {}),
          ...(notices
            ? {
                onPurchase: notices.purchasePosted,
                onBalanceChange: (customer: string) => notices?.touch(customer),
              }
            : {}),
        }),
      );
      routes.push(
        ...catalogRoutes({
          catalogs: catalogs!,
          source: catalogSource,
          auth,
          ...(options.now ? { now: options.now } : {}),
        }),
      );
    }

    const service: RunningService = await startService({
      host: config.httpHost,
      port: config.httpPort,
      routes,
      registry,
      log,
      requestTimeoutMs: config.bodyTimeoutMs,
      auth,
      ready: async () => {
        const checks: Record<string, boolean> = {};
        if (nats)
          checks.nats =
            !nats.nc.isClosed() &&
            nats.nc.info !== undefined &&
            !(nats.nc as { isReconnecting?: () => boolean }).isReconnecting?.();
        if (store) checks.clickhouse = await store.ping().catch(() => false);
        // A partition whose ClickHouse writes keep failing (DRAWDOWN_STORE_ATTEMPTS_BEFORE_UNREADY) is not ready.
        if (rater) checks.rater = rater.ready;
        return checks;
      },
    });
    stops.push(() => service.close());

    return { url: service.url, catalog, catalogSource, store, nats, runner, notices, registry, log, stop: stopAll };
  } catch (error) {
    await stopAll();
    throw error;
  }
}
