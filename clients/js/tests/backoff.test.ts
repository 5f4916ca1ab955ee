import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { backoffDelay, backoffOptions, DEFAULT_BACKOFF } from "../src/backoff.js";

const options = backoffOptions({ initialMs: 100, maxMs: 1_000, multiplier: 2, jitter: 0.5 });

describe("backoffDelay", () => {
  it("doubles the ceiling with each attempt until the maximum", () => {
    const top = (attempt: number): number => backoffDelay(attempt, options, () => 0.999999);
    assert.deepEqual([0, 1, 2, 3, 4, 5].map(top), [100, 200, 400, 800, 1_000, 1_000]);
  });

  it("draws from the top jitter share of the ceiling", () => {
    assert.equal(backoffDelay(2, options, () => 0), 200);
    assert.equal(backoffDelay(2, options, () => 0.5), 300);
    for (let i = 0; i < 200; i++) {
      const delay = backoffDelay(3, options);
      assert.ok(delay >= 400 && delay <= 800, `delay ${delay} outside [400, 800]`);
    }
  });

  it("spreads clients that retry at the same attempt", () => {
    const delays = new Set(Array.from({ length: 50 }, () => backoffDelay(4, DEFAULT_BACKOFF)));
    assert.ok(delays.size > 10);
  });

  it("stays finite and capped for huge attempt counts", () => {
    assert.equal(backoffDelay(10_000, options, () => 0.999999), 1_000);
    assert.equal(backoffDelay(Number.MAX_SAFE_INTEGER, options, () => 0), 500);
  });

  it("without jitter is deterministic", () => {
    const fixed = backoffOptions({ initialMs: 250, maxMs: 4_000, jitter: 0 });
    assert.deepEqual([0, 1, 2, 3, 4, 5].map((n) => backoffDelay(n, fixed, Math.random)), [250, 500, 1_000, 2_000, 4_000, 4_000]);
  });
});

describe("backoffOptions", () => {
  it("fills in the defaults", () => {
    assert.deepEqual(backoffOptions({ maxMs: 5_000 }), { ...DEFAULT_BACKOFF, maxMs: 5_000 });
  });

  it("refuses options that make no sense", () => {
    assert.throws(() => backoffOptions({ initialMs: 10, maxMs: 5 }), RangeError);
    assert.throws(() => backoffOptions({ multiplier: 0.5 }), RangeError);
    assert.throws(() => backoffOptions({ jitter: 2 }), RangeError);
  });
});
