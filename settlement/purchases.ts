/**
 * Buying a credit package posts its credits at once as a `purchase` entry.
 * The entry id derives from the customer and the purchase's idempotency key,
 * so a retried purchase request returns the first one instead of buying twice.
 */
import type { Catalog } from '../catalog/model.js';
import type { Store } from '../shared/clickhouse/store.js';
import { DrawdownError } from '../shared/errors.js';
import { formatAmount, money } from '../shared/money.js';
import { entryExists, entryId, writeEntries, type LedgerEntry } from './ledger.js';

export interface PurchaseRequest {
  customer: string;
  packageId: string;
  idempotencyKey: string;
  nowSec: number;
  /** When the credits take effect; defaults to now. Earlier is allowed (imports, late recording), later is not. */
  effectiveAtSec?: number;
}

export interface PurchaseResult {
  entry: LedgerEntry;
  created: boolean;
}

/**
 * Purchases being written by this process, by entry id, per store. Checking
 * the ledger and then writing is a race: concurrent requests under one key
 * would all find nothing and all write — rows with the same id but each
 * request's own posted time (or package), which reads then mix. Here the
 * later requests wait for the first and answer with its entry. Across
 * processes only the deterministic id holds (settlement/README.md).
 */
const inFlight = new WeakMap<Store, Map<string, Promise<PurchaseResult>>>();

const sourcePrefix = (packageId: string): string => `package ${packageId} (`;

/**
 * Whether a request asks for the purchase `entry` records: the same package
 * and, when it names one, the same effective instant. Package ids have no
 * spaces or parentheses, so the source's prefix names the package exactly.
 */
function sameRequest(entry: LedgerEntry, request: PurchaseRequest): boolean {
  if (!entry.source.startsWith(sourcePrefix(request.packageId))) return false;
  return (
    request.effectiveAtSec === undefined || Math.min(request.effectiveAtSec, request.nowSec) === entry.effectiveAtSec
  );
}

function answer(result: PurchaseResult, request: PurchaseRequest, created: boolean): PurchaseResult {
  if (!sameRequest(result.entry, request)) {
    throw new DrawdownError(
      'idempotency_key_reused',
      `Idempotency-Key ${JSON.stringify(request.idempotencyKey)} already bought ${result.entry.source} effective ${new Date(result.entry.effectiveAtSec * 1000).toISOString()}; use a new key for a different purchase`,
    );
  }
  return { entry: result.entry, created };
}

export async function purchasePackage(
  store: Store,
  catalog: Catalog,
  request: PurchaseRequest,
): Promise<PurchaseResult> {
  const pkg = catalog.packages.get(request.packageId);
  if (pkg === undefined)
    throw new DrawdownError('unknown_package', `no credit package ${JSON.stringify(request.packageId)}`);
  const id = entryId('purchase', [request.customer, request.idempotencyKey]);
  let pending = inFlight.get(store);
  if (pending === undefined) inFlight.set(store, (pending = new Map()));
  for (let first = pending.get(id); first !== undefined; first = pending.get(id)) {
    // A first attempt that failed (store away) leaves the key free: this request then tries on its own.
    const result = await first.catch(() => undefined);
    if (result !== undefined) return answer(result, request, false);
  }
  const write = async (): Promise<PurchaseResult> => {
    const existing = await entryExists(store, request.customer, id);
    if (existing) return { entry: existing, created: false };
    const entry: LedgerEntry = {
      entryId: id,
      customer: request.customer,
      unit: pkg.unit,
      kind: 'purchase',
      amount: pkg.credits,
      effectiveAtSec: Math.min(request.effectiveAtSec ?? request.nowSec, request.nowSec),
      postedAtSec: request.nowSec,
      runId: '',
      meter: '',
      dimensions: '',
      quantity: money(1),
      rateVersion: '',
      // A purchase is a block of its own; purchased credits do not expire.
      blockId: id,
      expiresAtSec: 0,
      source: `${sourcePrefix(pkg.id)}${formatAmount(pkg.price.amount)} ${pkg.price.currency})`,
    };
    await writeEntries(store, [entry]);
    return { entry, created: true };
  };
  // Removed before anyone waiting on it resumes, so a waiter never finds a settled attempt again.
  const attempt: Promise<PurchaseResult> = write().finally(() => {
    if (pending.get(id) === attempt) pending.delete(id);
  });
  pending.set(id, attempt);
  const result = await attempt;
  return answer(result, request, result.created);
}
