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
import { KeyedWrites } from './keyed-writes.js';

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

/** Purchases being written by this process (keyed-writes.ts). */
const writes = new KeyedWrites<PurchaseResult>();

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
  const { result, waited } = await writes.run(store, id, write);
  return answer(result, request, !waited && result.created);
}
