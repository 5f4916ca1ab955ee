import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { backoffOptions } from "../src/backoff.js";
import { CloseCode, planReconnect, WebSocketCloseCode, type CloseFacts } from "../src/reconnect.js";

const backoff = backoffOptions({ initialMs: 100, maxMs: 1_000, jitter: 0 });
const facts = (overrides: Partial<CloseFacts>): CloseFacts => ({
  code: WebSocketCloseCode.ABNORMAL,
  welcomed: true,
  attempt: 0,
  canRenewToken: true,
  ...overrides,
});
const plan = (overrides: Partial<CloseFacts>) => planReconnect(facts(overrides), backoff, () => 0);

describe("CloseCode", () => {
  it("is the generated pm.v1.CloseCode table, with the codes the server closes with", () => {
    assert.equal(CloseCode.SLOW_CLIENT, 4008);
    assert.equal(CloseCode.DISCONNECTED_BY_OPERATOR, 4010);
    assert.equal(CloseCode[CloseCode.SERVER_SHUTDOWN], "SERVER_SHUTDOWN");
  });
});

describe("planReconnect", () => {
  for (const code of [4003, 4010, 1008, 1009, 1002, 1003, 1007]) {
    it(`stops for terminal close code ${code}`, () => {
      assert.deepEqual(plan({ code }), { kind: "stop", reason: "terminal-code" });
    });
  }

  for (const code of [1001, 1011, 4008, 4009, 4011, 1006, 1000, 4999]) {
    it(`retries with backoff after close code ${code}`, () => {
      assert.deepEqual(plan({ code, attempt: 2 }), { kind: "retry", delayMs: 400, renewToken: false });
    });
  }

  it("honours the server's reconnectAfterMs over its own backoff", () => {
    assert.deepEqual(plan({ code: 1001, reconnectAfterMs: 3_217, attempt: 5 }), {
      kind: "retry",
      delayMs: 3_217,
      renewToken: false,
    });
  });

  it("ignores a zero reconnectAfterMs", () => {
    assert.deepEqual(plan({ code: 1011, reconnectAfterMs: 0 }), { kind: "retry", delayMs: 100, renewToken: false });
  });

  it("asks for a new token and retries at once after 4001", () => {
    assert.deepEqual(plan({ code: 4001 }), { kind: "retry", delayMs: 0, renewToken: true });
  });

  it("backs off when new tokens keep failing after 4001", () => {
    assert.deepEqual(plan({ code: 4001, attempt: 3 }), { kind: "retry", delayMs: 800, renewToken: true });
  });

  it("stops after 4001 when nothing can provide a new token", () => {
    assert.deepEqual(plan({ code: 4001, canRenewToken: false }), { kind: "stop", reason: "token-expired" });
  });

  it("renews the token after an attempt the server refused before Welcome", () => {
    assert.deepEqual(plan({ code: 1006, welcomed: false }), { kind: "retry", delayMs: 100, renewToken: true });
    assert.deepEqual(plan({ code: 1006, welcomed: false, canRenewToken: false }), {
      kind: "retry",
      delayMs: 100,
      renewToken: false,
    });
  });
});
