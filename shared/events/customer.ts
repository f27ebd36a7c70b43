/**
 * The one rule for a customer id (SPEC §2): 1–128 characters of
 * [A-Za-z0-9._:@-]. Event validation, the byte scanners, the API's path
 * parameters and holds all check it through this module.
 */
export const customerIdLengthMax = 128;
export const customerIdChars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@-';
export const customerIdPattern = /^[A-Za-z0-9._:@-]{1,128}$/;

/** 1 for each ASCII byte a customer id may hold, for the byte scanners. */
export const customerByte = new Uint8Array(128);
for (const c of customerIdChars) customerByte[c.charCodeAt(0)] = 1;

export function isCustomerId(value: string): boolean {
  return customerIdPattern.test(value);
}
