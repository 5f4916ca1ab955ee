import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { PmClient, type PmClientOptions, type Recovery, type StateChange, type Update } from "../src/client.js";
import { PmClientError } from "../src/errors.js";
import type { Event } from "../src/gen/pm/v1/server_pb.js";
import type { TokenRequestReason } from "../src/token.js";
import { fakeJwt, FakeNetwork, type FakeSocket, ManualTimers, settle, START_MS } from "./fakes.js";

const URL = "ws://gateway.test/ws";
const EPOCH = "epoch-1";

interface Harness {
  client: PmClient;
  network: FakeNetwork;
  timers: ManualTimers;
  states: StateChange[];
  events: Event[];
  recoveries: Recovery[];
  errors: PmClientError[];
  tokenRequests: TokenRequestReason[];
}

function harness(options: Partial<PmClientOptions> = {}, tokens: string[] = []): Harness {
  const network = new FakeNetwork();
  const timers = new ManualTimers();
  const tokenRequests: TokenRequestReason[] = [];
  let issued = 0;
  const client = new PmClient({
    url: URL,
    getToken: (reason) => {
      tokenRequests.push(reason);
      issued += 1;
      return tokens[issued - 1] ?? `token-${issued}`;
    },
    webSocket: network.open,
    timers,
    random: () => 0.5,
    backoff: { initialMs: 100, maxMs: 1_000, jitter: 0 },
    pingIntervalMs: 0,
    ...options,
  });
  const h: Harness = { client, network, timers, states: [], events: [], recoveries: [], errors: [], tokenRequests };
  client.on("state", (change) => h.states.push(change));
  client.on("event", (event) => h.events.push(event));
  client.on("recovery", (recovery) => h.recoveries.push(recovery));
  client.on("error", (error) => h.errors.push(error));
  return h;
}

function welcome(socket: FakeSocket, timers: ManualTimers, overrides: { seq?: number; expiresInMs?: number } = {}): void {
  socket.receive({
    payload: {
      case: "welcome",
      value: {
        connectionId: "c1",
        tenantId: "t1",
        userId: "u1",
        serverTimeMs: BigInt(timers.now()),
        heartbeatIntervalSecs: 30,
        tokenExpiresAtMs: BigInt(timers.now() + (overrides.expiresInMs ?? 3_600_000)),
        position: { epoch: EPOCH, seq: BigInt(overrides.seq ?? 0) },
      },
    },
  });
}

function ack(socket: FakeSocket, requestId: string, fields: { recovered?: boolean; replayed?: number; epoch?: string; seq?: number } = {}): void {
  socket.receive({
    requestId,
    payload: {
      case: "ack",
      value: {
        recovered: fields.recovered ?? false,
        replayed: fields.replayed ?? 0,
        position: { epoch: fields.epoch ?? EPOCH, seq: BigInt(fields.seq ?? 0) },
      },
    },
  });
}

function event(socket: FakeSocket, seq: number, epoch = EPOCH): void {
  socket.receive({
    payload: {
      case: "event",
      value: {
        eventId: `e${seq}`,
        type: "card.moved",
        scope: { projectId: "p1" },
        position: { epoch, seq: BigInt(seq) },
      },
    },
  });
}

/** Connects, answers Welcome, subscribes to p1 and acknowledges at `seq`. */
async function live(h: Harness, seq = 0): Promise<FakeSocket> {
  h.client.connect();
  await settle();
  const socket = h.network.current;
  welcome(socket, h.timers, { seq });
  await settle();
  const subscribed = h.client.subscribe({ projects: ["p1"] });
  await settle();
  ack(socket, socket.last("subscribe").requestId, { seq });
  await subscribed;
  return socket;
}

describe("PmClient connecting", () => {
  it("offers pm.v1 and the bearer subprotocol and reads binary frames", async () => {
    const h = harness({ token: "abc.def.ghi", getToken: undefined });
    h.client.connect();
    await settle();
    const socket = h.network.current;
    assert.equal(socket.url, URL);
    assert.deepEqual(socket.protocols, ["pm.v1", "pm.bearer.abc.def.ghi"]);
    assert.equal(socket.binaryType, "arraybuffer");
    assert.deepEqual(h.tokenRequests, []);
  });

  it("asks the provider for the first token when none was given", async () => {
    const h = harness();
    h.client.connect();
    await settle();
    assert.deepEqual(h.tokenRequests, ["connect"]);
    assert.deepEqual(h.network.current.protocols, ["pm.v1", "pm.bearer.token-1"]);
  });

  it("needs a token or a provider", () => {
    assert.throws(() => new PmClient({ url: URL }), TypeError);
  });

  it("subscribes once the server has welcomed it, and goes live", async () => {
    const h = harness();
    const subscribed = h.client.subscribe({ projects: ["p1"], sprints: ["s1"] });
    h.client.connect();
    await settle();
    assert.equal(h.client.state, "connecting");
    assert.equal(h.network.current.sent.length, 0);
    welcome(h.network.current, h.timers, { seq: 7 });
    await settle();
    assert.equal(h.client.state, "open");
    const { requestId, value } = h.network.current.last("subscribe");
    assert.deepEqual([value.projectIds, value.sprintIds, value.resumeFrom], [["p1"], ["s1"], undefined]);
    ack(h.network.current, requestId, { seq: 7 });
    await subscribed;
    assert.deepEqual(h.client.position, { epoch: EPOCH, seq: 7n });
    assert.deepEqual(
      h.states.map((change) => change.state),
      ["connecting", "open"],
    );
  });

  it("rejects a subscription the server refuses, with its code", async () => {
    const h = harness();
    h.client.connect();
    await settle();
    welcome(h.network.current, h.timers);
    await settle();
    const subscribed = h.client.subscribe({ projects: ["p1"] });
    await settle();
    h.network.current.receive({
      requestId: h.network.current.last("subscribe").requestId,
      payload: { case: "error", value: { code: "SUBSCRIPTION_LIMIT", message: "at most 1 subscription" } },
    });
    await assert.rejects(subscribed, (error: unknown) => error instanceof PmClientError && error.code === "SUBSCRIPTION_LIMIT");
  });

  it("rejects invalid ids without sending anything", async () => {
    const h = harness();
    await assert.rejects(h.client.subscribe({ projects: [""] }), RangeError);
  });
});

describe("PmClient events", () => {
  it("delivers events to listeners and iterators in order, each once", async () => {
    const h = harness();
    const socket = await live(h, 2);
    const updates = h.client.updates();
    event(socket, 3);
    event(socket, 4);
    event(socket, 4);
    event(socket, 2);
    assert.deepEqual(h.events.map((e) => e.eventId), ["e3", "e4"]);
    const first = await updates.next();
    const second = await updates.next();
    assert.deepEqual([first.value, second.value].map((u: Update) => (u.kind === "event" ? u.event.eventId : u.kind)), ["e3", "e4"]);
    assert.deepEqual(h.client.position, { epoch: EPOCH, seq: 4n });
  });

  it("reports errors the server pushes without a request", async () => {
    const h = harness();
    const socket = await live(h);
    socket.receive({ payload: { case: "error", value: { code: "BROADCAST_LAGGED", message: "events were lost" } } });
    assert.deepEqual(h.errors.map((e) => e.code), ["BROADCAST_LAGGED"]);
  });

  it("reports a frame that is not a ServerMessage and stays connected", async () => {
    const h = harness();
    const socket = await live(h);
    socket.onmessage?.({ data: "text" });
    assert.deepEqual(h.errors.map((e) => e.code), ["BAD_FRAME"]);
    assert.equal(h.client.state, "open");
  });
});

describe("PmClient reconnecting", () => {
  it("waits the server's reconnectAfterMs after a graceful shutdown, then resumes", async () => {
    const h = harness();
    const first = await live(h, 0);
    event(first, 1);
    first.receive({ payload: { case: "closing", value: { code: "SERVER_SHUTDOWN", reconnectAfterMs: 2_345 } } });
    first.serverClose(1001, "SERVER_SHUTDOWN");
    assert.equal(h.client.state, "reconnecting");
    assert.deepEqual(h.states.at(-1), {
      state: "reconnecting",
      previous: "open",
      closeCode: 1001,
      closeReason: "SERVER_SHUTDOWN",
      delayMs: 2_345,
    });
    await h.timers.advance(2_344);
    assert.equal(h.network.sockets.length, 1);
    await h.timers.advance(1);
    assert.equal(h.network.sockets.length, 2);
    const second = h.network.current;
    assert.deepEqual(second.protocols, ["pm.v1", "pm.bearer.token-1"], "the token was still good");

    welcome(second, h.timers, { seq: 3 });
    await settle();
    const { requestId, value } = second.last("subscribe");
    assert.deepEqual(value.projectIds, ["p1"]);
    assert.equal(value.resumeFrom?.epoch, EPOCH);
    assert.equal(value.resumeFrom?.seq, 1n);
    ack(second, requestId, { recovered: true, replayed: 2, seq: 3 });
    event(second, 2);
    event(second, 3);
    await settle();
    assert.equal(h.client.state, "open");
    assert.deepEqual(h.recoveries, [{ recovered: true, replayed: 2, position: { epoch: EPOCH, seq: 3n }, reason: "resumed" }]);
    assert.deepEqual(h.events.map((e) => e.eventId), ["e1", "e2", "e3"]);
  });

  it("signals explicitly when the server could not recover what was missed", async () => {
    const h = harness();
    const first = await live(h, 5);
    const updates = h.client.updates();
    first.serverClose(1006);
    await h.timers.advance(100);
    const second = h.network.current;
    welcome(second, h.timers, { seq: 0 });
    await settle();
    ack(second, second.last("subscribe").requestId, { recovered: false, epoch: "epoch-2", seq: 0 });
    await settle();
    event(second, 1, "epoch-2");
    assert.deepEqual(h.recoveries.map((r) => r.recovered), [false]);
    assert.deepEqual((await updates.next()).value, {
      kind: "recovery",
      recovery: { recovered: false, replayed: 0, position: { epoch: "epoch-2", seq: 0n }, reason: "resumed" },
    });
    assert.equal(((await updates.next()).value as Update).kind, "event");
    assert.deepEqual(h.client.position, { epoch: "epoch-2", seq: 1n });
  });

  it("backs off exponentially while attempts keep failing, and resets after a Welcome", async () => {
    const h = harness();
    await live(h);
    h.network.current.serverClose(1011);
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      const change = h.states.at(-1);
      assert.equal(change?.state, "reconnecting");
      delays.push(change?.delayMs ?? -1);
      await h.timers.advance(change?.delayMs ?? 0);
      h.network.current.serverClose(1006);
    }
    assert.deepEqual(delays, [100, 200, 400, 800, 1_000]);
    await h.timers.advance(1_000);
    welcome(h.network.current, h.timers);
    await settle();
    h.network.current.serverClose(4009);
    assert.equal(h.states.at(-1)?.delayMs, 100);
  });

  it("asks for a fresh token after an attempt refused before Welcome (a 401 looks like 1006)", async () => {
    const h = harness();
    await live(h);
    h.network.current.serverClose(1001);
    await h.timers.advance(100);
    h.network.current.serverClose(1006);
    await h.timers.advance(200);
    assert.deepEqual(h.tokenRequests, ["connect", "rejected"]);
    assert.deepEqual(h.network.current.protocols, ["pm.v1", "pm.bearer.token-2"]);
  });

  it("keeps retrying while the token provider fails, reporting each failure", async () => {
    let calls = 0;
    const h = harness({
      getToken: () => {
        calls += 1;
        if (calls === 1) {
          return "first";
        }
        if (calls < 4) {
          throw new Error("offline");
        }
        return "fourth";
      },
    });
    await live(h);
    h.network.current.serverClose(1001);
    await h.timers.advance(100);
    h.network.current.serverClose(1006);
    await h.timers.advance(200 + 400 + 800);
    assert.deepEqual(h.errors.map((e) => e.code), ["TOKEN_UNAVAILABLE", "TOKEN_UNAVAILABLE"]);
    assert.deepEqual(h.network.current.protocols, ["pm.v1", "pm.bearer.fourth"]);
  });

  it("gets a new token and reconnects at once after 4001", async () => {
    const h = harness();
    await live(h);
    h.network.current.serverClose(4001, "TOKEN_EXPIRED");
    assert.equal(h.states.at(-1)?.delayMs, 0);
    await h.timers.advance(0);
    assert.deepEqual(h.tokenRequests, ["connect", "expired"]);
    assert.deepEqual(h.network.current.protocols, ["pm.v1", "pm.bearer.token-2"]);
  });

  it("stops after 4001 when it has no token provider", async () => {
    const h = harness({ token: "static", getToken: undefined });
    await live(h);
    h.network.current.serverClose(4001);
    assert.equal(h.client.state, "closed");
    assert.equal(h.states.at(-1)?.stopReason, "token-expired");
  });

  for (const code of [4003, 4010, 1008, 1009]) {
    it(`stops for good on close code ${code}`, async () => {
      const h = harness();
      await live(h);
      const updates = h.client.updates();
      h.network.current.serverClose(code);
      assert.equal(h.client.state, "closed");
      assert.deepEqual(h.states.at(-1), { state: "closed", previous: "open", closeCode: code, closeReason: "", stopReason: "terminal-code" });
      await h.timers.advance(120_000);
      assert.equal(h.network.sockets.length, 1);
      assert.deepEqual(await updates.next(), { value: undefined, done: true });
      await assert.rejects(h.client.subscribe({ projects: ["p2"] }), (e: unknown) => e instanceof PmClientError && e.code === "CLIENT_CLOSED");
    });
  }

  it("resubscribes in several messages when the set is too big for one, and says it could not resume", async () => {
    const h = harness();
    const projects = Array.from({ length: 150 }, (_, i) => `p${i}`);
    h.client.connect();
    await settle();
    welcome(h.network.current, h.timers);
    await settle();
    const subscribed = h.client.subscribe({ projects });
    await settle();
    ack(h.network.current, h.network.current.last("subscribe").requestId, { seq: 1 });
    await settle();
    ack(h.network.current, h.network.current.last("subscribe").requestId, { seq: 1 });
    await subscribed;
    h.network.current.serverClose(1006);
    await h.timers.advance(100);
    const socket = h.network.current;
    welcome(socket, h.timers);
    await settle();
    assert.equal(socket.last("subscribe").value.resumeFrom, undefined);
    ack(socket, socket.last("subscribe").requestId, { seq: 4 });
    await settle();
    ack(socket, socket.last("subscribe").requestId, { seq: 4 });
    await settle();
    assert.deepEqual(socket.sent.map((m) => (m.payload.case === "subscribe" ? m.payload.value.projectIds.length : 0)), [100, 50]);
    assert.deepEqual(h.recoveries.map((r) => [r.recovered, r.reason]), [[false, "too-many-subscriptions"]]);
  });

  it("stops reconnecting when closed by the application", async () => {
    const h = harness();
    await live(h);
    h.network.current.serverClose(1006);
    h.client.close();
    await h.timers.advance(60_000);
    assert.equal(h.network.sockets.length, 1);
    assert.equal(h.client.state, "closed");
  });

  it("closes its socket with 1000 when closed by the application", async () => {
    const h = harness();
    const socket = await live(h);
    h.client.close();
    assert.deepEqual(socket.closedWith, { code: 1000, reason: "client closed" });
    assert.equal(h.states.at(-1)?.stopReason, "client-closed");
  });
});

describe("PmClient token refresh", () => {
  it("refreshes in-band before the token expires, then plans the next refresh from the new token", async () => {
    const refreshAtMs = START_MS + 3_540_000;
    const newToken = fakeJwt(refreshAtMs / 1000 + 7_200);
    const h = harness({ refreshMarginMs: 60_000 }, ["token-1", newToken]);
    const socket = await live(h);
    await h.timers.advance(3_540_000 - 1);
    assert.deepEqual(h.tokenRequests, ["connect"]);
    await h.timers.advance(1);
    assert.deepEqual(h.tokenRequests, ["connect", "refresh"]);
    const { requestId, value } = socket.last("refreshToken");
    assert.equal(value.token, newToken);
    ack(socket, requestId);
    await settle();
    assert.ok(h.timers.pending().includes(7_200_000 - 60_000), `pending: ${h.timers.pending().join(", ")}`);
    await h.timers.advance(7_140_000);
    assert.deepEqual(h.tokenRequests, ["connect", "refresh", "refresh"]);
  });

  it("does not refresh again when the provider hands out a token that expires no later", async () => {
    const stale = fakeJwt(START_MS / 1000 + 3_600);
    const h = harness({ refreshMarginMs: 60_000 }, ["token-1", stale]);
    const socket = await live(h);
    await h.timers.advance(3_540_000);
    ack(socket, socket.last("refreshToken").requestId);
    await settle();
    await h.timers.advance(60_000);
    assert.deepEqual(h.tokenRequests, ["connect", "refresh"]);
  });

  it("retries a refresh the server refused, reporting the error", async () => {
    const h = harness({ refreshMarginMs: 1_000 });
    const socket = await live(h);
    await h.timers.advance(3_599_000);
    socket.receive({
      requestId: socket.last("refreshToken").requestId,
      payload: { case: "error", value: { code: "INVALID_TOKEN", message: "bad token" } },
    });
    await settle();
    assert.deepEqual(h.errors.map((e) => e.code), ["INVALID_TOKEN"]);
    await h.timers.advance(10_000);
    assert.equal(socket.sent.filter((m) => m.payload.case === "refreshToken").length, 2);
  });
});

describe("PmClient liveness", () => {
  it("pings at the heartbeat interval and drops a connection that stops answering", async () => {
    const h = harness({ pingIntervalMs: undefined, pongTimeoutMs: 5_000 });
    const socket = await live(h);
    await h.timers.advance(30_000);
    const ping = socket.last("ping");
    socket.receive({ requestId: ping.requestId, payload: { case: "pong", value: { clientTimeMs: 0n, serverTimeMs: 0n } } });
    await settle();
    await h.timers.advance(30_000);
    assert.equal(socket.sent.filter((m) => m.payload.case === "ping").length, 2);
    await h.timers.advance(5_000);
    assert.deepEqual(socket.closedWith, { code: 4009, reason: "no answer to ping" });
    assert.equal(h.client.state, "reconnecting");
    assert.equal(h.states.at(-1)?.closeCode, 4009);
  });
});
