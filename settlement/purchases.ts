/**
 * Buying a credit package posts its credits at once as a `purchase` entry.
 * The entry id derives from the customer and the purchase's idempotency key,
 * so a retried purchase request returns the first one instead of buying twice.
 */
import type { Catalog } from '../shared/catalog.js';
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

export async function purchasePackage(store: Store, catalog: Catalog, request: PurchaseRequest): Promise<{ entry: LedgerEntry; created: boolean }> {
  const pkg = catalog.packages.get(request.packageId);
  if (pkg === undefined) throw new DrawdownError('unknown_package', `no credit package ${JSON.stringify(request.packageId)}`);
  const id = entryId('purchase', [request.customer, request.idempotencyKey]);
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
    source: `package ${pkg.id} (${formatAmount(pkg.price.amount)} ${pkg.price.currency})`,
  };
  await writeEntries(store, [entry]);
  return { entry, created: true };
}
