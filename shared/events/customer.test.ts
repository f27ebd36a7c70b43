import { describe, expect, it } from 'vitest';
import { customerByte, customerIdChars, customerIdLengthMax, customerIdPattern, isCustomerId } from './customer.js';
import { eventLimits } from './event.js';

describe('the customer id rule', () => {
  it("is the same for the pattern and the scanners' byte table, for every ASCII byte", () => {
    for (let c = 0; c < 128; c++)
      expect([c, customerByte[c] === 1]).toEqual([c, customerIdPattern.test(String.fromCharCode(c))]);
    expect([...customerIdChars].every((c) => isCustomerId(c))).toBe(true);
  });

  it('takes 1 to 128 characters, and the event rules use the same limit', () => {
    expect(isCustomerId('')).toBe(false);
    expect(isCustomerId('a'.repeat(customerIdLengthMax))).toBe(true);
    expect(isCustomerId('a'.repeat(customerIdLengthMax + 1))).toBe(false);
    expect(eventLimits.customerLengthMax).toBe(customerIdLengthMax);
    expect(isCustomerId('user@example.com:team-1_x')).toBe(true);
    expect(isCustomerId('a b')).toBe(false);
    expect(isCustomerId('é')).toBe(false);
  });
});
