import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { jwtExpiresAtMs, MAX_TIMER_MS, refreshDelayMs } from "../src/token.js";
import { fakeJwt } from "./fakes.js";

describe("jwtExpiresAtMs", () => {
  it("reads exp from the payload in milliseconds", () => {
    assert.equal(jwtExpiresAtMs(fakeJwt(1_800_000_000)), 1_800_000_000_000);
  });

  it("gives undefined for what is not a JWT with a numeric exp", () => {
    for (const token of ["", "abc", "a.b.c", "a..c", `x.${Buffer.from('{"exp":"soon"}').toString("base64url")}.y`]) {
      assert.equal(jwtExpiresAtMs(token), undefined, token);
    }
  });
});

describe("refreshDelayMs", () => {
  const now = 1_000_000;

  it("refreshes the margin before expiry", () => {
    assert.equal(refreshDelayMs(now + 3_600_000, now, 60_000), 3_540_000);
  });

  it("refreshes halfway through a lifetime shorter than twice the margin", () => {
    assert.equal(refreshDelayMs(now + 40_000, now, 60_000), 20_000);
  });

  it("refreshes at once when the token has expired", () => {
    assert.equal(refreshDelayMs(now - 5, now, 60_000), 0);
  });

  it("never overflows a timer", () => {
    assert.equal(refreshDelayMs(now + 365 * 86_400_000, now, 60_000), MAX_TIMER_MS);
  });
});
