// Load client of tools/bench: WebSocket subscribers and an HTTP publisher in one lean process.
//
// Driven over stdin/stdout, one JSON object per line: each command carries an `id` and is
// answered by one line with the same `id` (`{"id", "ok": true, ...}` or `{"id", "ok": false,
// "error"}`). Commands: connect, subscribe, reset, wait, close, publish, stats, exit.
//
// It speaks to two kinds of server: `pm` (pm-server: Welcome first, ServerMessage{Event}
// frames) and `hub` (the baseline aiohttp hub: each frame is the published PublishRequest
// body, re-sent as is). Only the few protobuf fields the bench needs are hand-decoded.
//
// Timestamps are CLOCK_MONOTONIC nanoseconds (libuv's hrtime), so a publisher process and a
// subscriber process on the same machine share one clock: the publisher writes its send time
// into the payload and the subscriber computes publish-to-receive latency on arrival.

import crypto from "node:crypto";
import http from "node:http";
import net from "node:net";
import readline from "node:readline";
import { WebSocket } from "ws";

// ---- clock -------------------------------------------------------------------------------

/** CLOCK_MONOTONIC nanoseconds as a Number (exact: 2^53 ns is 104 days of uptime). */
function nowNs() {
  const [secs, nanos] = process.hrtime();
  return secs * 1e9 + nanos;
}

function cpuSnapshot() {
  return process.cpuUsage();
}

function cpuSince(start) {
  const d = process.cpuUsage(start);
  return { userUs: d.user, systemUs: d.system, totalUs: d.user + d.system };
}

// ---- protobuf: the few fields the bench reads and writes ---------------------------------

let aStart = -1;
let aEnd = -1;
let bStart = -1;
let bEnd = -1;

/** One pass over buf[start, end) for length-delimited fields `a` and `b`; sets aStart/aEnd and bStart/bEnd
 * (-1 when absent). With `a` = 0, takes the first field numbered 10 or more as `a` and
 * returns its number: a ServerMessage's oneof (10 welcome … 16 command_result). */
function scanFields(buf, start, end, a, b) {
  aStart = aEnd = bStart = bEnd = -1;
  let found = 0;
  let p = start;
  while (p < end) {
    let tag = 0;
    let shift = 0;
    let byte;
    do {
      byte = buf[p++];
      tag += (byte & 0x7f) * 2 ** shift;
      shift += 7;
    } while (byte & 0x80);
    const wireType = tag % 8;
    const field = (tag - wireType) / 8;
    if (wireType === 2) {
      let len = 0;
      shift = 0;
      do {
        byte = buf[p++];
        len += (byte & 0x7f) * 2 ** shift;
        shift += 7;
      } while (byte & 0x80);
      if (field === a || (a === 0 && field >= 10 && aStart < 0)) {
        aStart = p;
        aEnd = p + len;
        found = field;
      } else if (field === b) {
        bStart = p;
        bEnd = p + len;
      }
      p += len;
    } else if (wireType === 0) {
      while (buf[p++] & 0x80);
    } else if (wireType === 1) {
      p += 8;
    } else if (wireType === 5) {
      p += 4;
    } else {
      break;
    }
  }
  return found;
}

let fieldStart = 0;
let fieldEnd = 0;

/** Find length-delimited field `want` in buf[start, end); sets fieldStart/fieldEnd.
 * Clobbers scanFields' aStart… (callers pass those as arguments before it runs). */
function findBytes(buf, start, end, want) {
  scanFields(buf, start, end, want, -1);
  fieldStart = aStart;
  fieldEnd = aEnd;
  return aStart >= 0;
}

function varint(n) {
  const out = [];
  while (n > 127) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}

function lenField(field, bytes) {
  return Buffer.concat([Buffer.from([(field << 3) | 2, ...varint(bytes.length)]), bytes]);
}

/** ClientMessage{request_id, subscribe{project_ids: [project]}}. */
function subscribeFrame(requestId, project) {
  const subscribe = lenField(1, Buffer.from(project));
  return Buffer.concat([lenField(1, Buffer.from(requestId)), lenField(10, subscribe)]);
}

/** PublishRequest{tenant_id, type, scope{project_id}, payload}; payload's first 12 bytes are
 * filled per publish (send time, index) by the caller through the returned offset. */
function publishBody(tenant, type, project, payloadBytes) {
  const payload = Buffer.alloc(Math.max(12, payloadBytes), 0x78);
  const head = Buffer.concat([
    lenField(1, Buffer.from(tenant)),
    lenField(2, Buffer.from(type)),
    lenField(3, lenField(1, Buffer.from(project))),
  ]);
  const payloadHeader = Buffer.from([(4 << 3) | 2, ...varint(payload.length)]);
  const body = Buffer.concat([head, payloadHeader, payload]);
  return { body, payloadOffset: head.length + payloadHeader.length };
}

// ---- JWT (HS256, as pm-server's validator expects) ---------------------------------------

function mintToken(secret, sub, tenant, ttlSecs) {
  const now = Math.floor(Date.now() / 1000);
  const header = Buffer.from(JSON.stringify({ alg: "HS256", typ: "JWT" })).toString("base64url");
  const claims = { sub, tenant_id: tenant, iat: now, exp: now + ttlSecs };
  const payload = Buffer.from(JSON.stringify(claims)).toString("base64url");
  const signature = crypto
    .createHmac("sha256", secret)
    .update(`${header}.${payload}`)
    .digest("base64url");
  return `${header}.${payload}.${signature}`;
}

// ---- latency histogram: log buckets 1% wide, mergeable across processes ------------------

const GROWTH = 1.01;
const INV_LN_GROWTH = 1 / Math.log(GROWTH);
const BUCKETS = 2600;

class Histogram {
  constructor() {
    this.counts = new Uint32Array(BUCKETS);
    this.n = 0;
    this.minUs = Infinity;
    this.maxUs = 0;
    this.sumUs = 0;
  }

  record(us) {
    let i = us <= 1 ? 0 : Math.ceil(Math.log(us) * INV_LN_GROWTH);
    if (i >= BUCKETS) i = BUCKETS - 1;
    this.counts[i]++;
    this.n++;
    this.sumUs += us;
    if (us < this.minUs) this.minUs = us;
    if (us > this.maxUs) this.maxUs = us;
  }

  /** Sparse form: {growth, buckets: [[index, count], ...], n, minUs, maxUs, sumUs}. */
  toJSON() {
    const buckets = [];
    for (let i = 0; i < BUCKETS; i++) if (this.counts[i]) buckets.push([i, this.counts[i]]);
    return {
      growth: GROWTH,
      buckets,
      n: this.n,
      minUs: this.n ? this.minUs : null,
      maxUs: this.n ? this.maxUs : null,
      sumUs: this.sumUs,
    };
  }
}

function percentiles(values) {
  if (values.length === 0) return { n: 0, p50: null, p99: null, max: null };
  const sorted = Float64Array.from(values).sort();
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  return { n: sorted.length, p50: at(0.5), p99: at(0.99), max: sorted[sorted.length - 1] };
}

// ---- WebSocket transports: `ws`, or a raw client that parses frames itself --------------
//
// Both give the same surface: callbacks onOpen(), onFail(reason) (the handshake failed),
// onMessage(buffer, start, end, arrivedNs) (one binary message: buffer[start, end)),
// onClose(code); methods send(buffer) (one binary
// message), terminate() (drop the TCP connection); property closed.

const WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

function openWs(url, { headers, localAddress, timeoutMs }) {
  const ws = new WebSocket(url, {
    headers,
    localAddress,
    perMessageDeflate: false,
    skipUTF8Validation: true,
    handshakeTimeout: timeoutMs,
    maxPayload: 16 * 1024 * 1024,
  });
  const transport = {
    onOpen: null,
    onFail: null,
    onMessage: null,
    onClose: null,
    send: (data) => ws.send(data, { binary: true }),
    terminate: () => ws.terminate(),
    get closed() {
      return ws.readyState === WebSocket.CLOSED;
    },
  };
  ws.on("unexpected-response", (_req, res) => {
    res.resume();
    transport.onFail(`http_${res.statusCode}`);
  });
  ws.on("error", (err) => transport.onFail(`error:${err.code || err.message}`));
  ws.on("open", () => transport.onOpen());
  ws.on("message", (data) => transport.onMessage(data, 0, data.length, nowNs()));
  ws.on("close", (code) => transport.onClose(code));
  return transport;
}

/** RFC 6455 client over a plain socket: unmasked server frames parsed in place, no streams. */
class RawTransport {
  constructor(url, { headers, localAddress, timeoutMs }) {
    this.onOpen = null;
    this.onFail = null;
    this.onMessage = null;
    this.onClose = null;
    this.closed = false;
    this.open = false;
    this.pending = null;
    this.closeCode = 1006;
    this.handshake = Buffer.alloc(0);
    const target = new URL(url);
    const key = crypto.randomBytes(16).toString("base64");
    this.accept = crypto.createHash("sha1").update(key + WS_GUID).digest("base64");
    const lines = [
      `GET ${target.pathname}${target.search} HTTP/1.1`,
      `Host: ${target.host}`,
      "Connection: Upgrade",
      "Upgrade: websocket",
      `Sec-WebSocket-Key: ${key}`,
      "Sec-WebSocket-Version: 13",
      ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`),
    ];
    const socket = net.connect({ host: target.hostname, port: Number(target.port), localAddress });
    this.socket = socket;
    socket.setNoDelay(true);
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error("handshake timeout")));
    socket.on("connect", () => socket.write(`${lines.join("\r\n")}\r\n\r\n`));
    socket.on("data", (chunk) => (this.open ? this.receive(chunk) : this.readHandshake(chunk)));
    socket.on("error", (err) => this.fail(`error:${err.code || err.message}`));
    socket.on("close", () => {
      if (!this.open) return this.fail("closed_during_handshake");
      this.closed = true;
      this.onClose(this.closeCode);
    });
  }

  /** Collect the HTTP response head; 101 with the right accept key opens the connection. */
  readHandshake(chunk) {
    this.handshake = Buffer.concat([this.handshake, chunk]);
    const end = this.handshake.indexOf("\r\n\r\n");
    if (end < 0) return;
    const head = this.handshake.toString("latin1", 0, end).split("\r\n");
    const rest = this.handshake.subarray(end + 4);
    this.handshake = null;
    const status = Number(head[0].split(" ")[1]);
    if (status !== 101) {
      this.fail(`http_${status}`);
      this.socket.destroy();
      return;
    }
    const accept = head.find((line) => line.toLowerCase().startsWith("sec-websocket-accept:"));
    if (!accept || accept.slice(21).trim() !== this.accept) {
      this.fail("bad_accept");
      this.socket.destroy();
      return;
    }
    this.open = true;
    this.socket.setTimeout(0);
    this.onOpen();
    if (rest.length) this.receive(Buffer.from(rest));
  }

  fail(reason) {
    if (this.closed || this.open) return;
    this.closed = true;
    this.onFail(reason);
  }

  receive(chunk) {
    let buf = chunk;
    if (this.pending !== null) {
      buf = Buffer.concat([this.pending, chunk]);
      this.pending = null;
    }
    const n = buf.length;
    const now = nowNs(); // every message of one read arrived together
    let p = 0;
    while (n - p >= 2) {
      const b0 = buf[p];
      let len = buf[p + 1] & 0x7f;
      let header = 2;
      if (len === 126) {
        if (n - p < 4) break;
        len = buf.readUInt16BE(p + 2);
        header = 4;
      } else if (len === 127) {
        if (n - p < 10) break;
        len = buf.readUInt32BE(p + 2) * 4294967296 + buf.readUInt32BE(p + 6);
        header = 10;
      }
      if (n - p - header < len) break;
      const start = p + header;
      p = start + len;
      const opcode = b0 & 0x0f;
      if (opcode === 0x2 && b0 & 0x80) {
        this.onMessage(buf, start, p, now);
      } else if (opcode === 0x9) {
        this.sendFrame(0xa, buf.subarray(start, p));
      } else if (opcode === 0x8) {
        this.closeCode = len >= 2 ? buf.readUInt16BE(start) : 1005;
        this.sendFrame(0x8, buf.subarray(start, start + Math.min(len, 2)));
        this.socket.end();
        return;
      } else if (opcode !== 0xa) {
        // Text, continuation or reserved: nothing the bench servers send. Fail loudly.
        this.closeCode = 1002;
        this.socket.destroy();
        return;
      }
    }
    if (p < n) this.pending = Buffer.from(buf.subarray(p));
  }

  sendFrame(opcode, payload) {
    if (this.socket.destroyed) return;
    const len = payload.length;
    const header = len < 126 ? 2 : 4;
    const frame = Buffer.allocUnsafe(header + 4 + len);
    frame[0] = 0x80 | opcode;
    if (len < 126) {
      frame[1] = 0x80 | len;
    } else {
      frame[1] = 0x80 | 126;
      frame.writeUInt16BE(len, 2);
    }
    crypto.randomFillSync(frame, header, 4);
    for (let i = 0; i < len; i++) frame[header + 4 + i] = payload[i] ^ frame[header + (i & 3)];
    this.socket.write(frame);
  }

  send(data) {
    this.sendFrame(0x2, data);
  }

  terminate() {
    // RST instead of FIN: no TIME_WAIT left on this side. Thousands of TIME_WAIT
    // sockets from earlier runs make the kernel's ephemeral-port search slow and
    // turn later runs' handshake figures into a measure of that search.
    if (typeof this.socket.resetAndDestroy === "function") this.socket.resetAndDestroy();
    else this.socket.destroy();
  }
}

function openRaw(url, options) {
  return new RawTransport(url, options);
}

// ---- subscribers -------------------------------------------------------------------------

const MSG_WELCOME = 10;
const MSG_ACK = 11;
const MSG_ERROR = 12;
const MSG_EVENT = 13;
const MSG_CLOSING = 15;

class Subscribers {
  constructor() {
    this.conns = [];
    this.reset();
    this.errors = {};
    this.unexpectedCloses = 0;
    this.closeCodes = {};
    this.waiter = null;
  }

  reset() {
    this.received = 0;
    this.foreign = 0;
    this.firstRecvNs = null;
    this.lastRecvNs = null;
    this.hist = new Histogram();
    this.cpuStart = cpuSnapshot();
    for (const c of this.conns) c.count = 0;
  }

  noteError(key) {
    this.errors[key] = (this.errors[key] || 0) + 1;
  }

  /** One binary message buf[start, end), which arrived at `now` (ns). */
  onFrame(conn, buf, start, end, now) {
    let payload = -1;
    if (conn.mode === "pm") {
      const kind = scanFields(buf, start, end, 0, -1);
      if (kind !== MSG_EVENT) {
        this.onControl(conn, kind, buf.subarray(start, end));
        return;
      }
      scanFields(buf, aStart, aEnd, 3, 7); // Event.scope, Event.payload
    } else {
      if (!conn.acked) {
        conn.acked = true;
        if (conn.onAck) conn.onAck(true);
        return;
      }
      scanFields(buf, start, end, 3, 4); // PublishRequest.scope, PublishRequest.payload
    }
    payload = bStart;
    if (payload < 0) return this.noteError("event_without_payload");
    if (conn.project !== null && aStart >= 0 && findBytes(buf, aStart, aEnd, 1)) {
      if (buf.compare(conn.project, 0, conn.project.length, fieldStart, fieldEnd) !== 0) {
        this.foreign++;
      }
    }
    const sentNs = buf.readUInt32BE(payload) * 4294967296 + buf.readUInt32BE(payload + 4);
    this.hist.record((now - sentNs) / 1000);
    conn.count++;
    this.received++;
    if (this.firstRecvNs === null) this.firstRecvNs = now;
    this.lastRecvNs = now;
    if (this.waiter !== null && this.received >= this.waiter.expected) this.finishWait();
  }

  onControl(conn, kind, message) {
    if (kind === MSG_WELCOME) {
      if (conn.onReady) conn.onReady(true);
    } else if (kind === MSG_ACK) {
      conn.acked = true;
      if (conn.onAck) conn.onAck(true);
    } else if (kind === MSG_ERROR) {
      scanFields(message, 0, message.length, 12, -1);
      findBytes(message, aStart, aEnd, 1);
      this.noteError(`server:${message.toString("utf8", fieldStart, fieldEnd)}`);
      if (!conn.acked && conn.onAck) conn.onAck(false);
    } else if (kind === MSG_CLOSING) {
      this.noteError("server:closing");
    } else {
      this.noteError(`unexpected_message_${kind}`);
    }
  }

  connectOne(opts, index) {
    return new Promise((resolve) => {
      const started = nowNs();
      const sub = `${opts.userPrefix}${index}`;
      const addrs = opts.localAddresses || [];
      const transport = (opts.impl === "ws" ? openWs : openRaw)(opts.url, {
        headers: { Authorization: `Bearer ${mintToken(opts.secret, sub, opts.tenant, 3600)}` },
        localAddress: addrs.length ? addrs[index % addrs.length] : undefined,
        timeoutMs: opts.timeoutMs,
      });
      const conn = {
        transport,
        index,
        mode: opts.mode,
        project: null,
        projectName: null,
        expected: 0,
        acked: false,
        count: 0,
        closing: false,
        onReady: null,
        onAck: null,
        onClosed: null,
      };
      let settled = false;
      const settle = (ok, why) => {
        if (settled) return;
        settled = true;
        conn.onReady = null;
        if (!ok) {
          this.noteError(why);
          transport.terminate();
          resolve(null);
          return;
        }
        this.conns.push(conn);
        resolve({ conn, elapsedNs: nowNs() - started });
      };
      conn.onReady = (ok) => settle(ok, "no_welcome");
      transport.onFail = (why) => settle(false, why);
      transport.onOpen = () => {
        if (opts.mode === "hub") settle(true);
      };
      transport.onMessage = (buf, start, end, now) => this.onFrame(conn, buf, start, end, now);
      transport.onClose = (code) => {
        settle(false, `closed_before_ready_${code}`);
        if (!conn.closing) {
          this.unexpectedCloses++;
          this.closeCodes[code] = (this.closeCodes[code] || 0) + 1;
        }
        if (conn.onClosed) conn.onClosed();
      };
    });
  }

  async connect(opts) {
    const cpu0 = cpuSnapshot();
    const started = nowNs();
    const times = [];
    let failed = 0;
    let next = 0;
    const worker = async () => {
      while (next < opts.count) {
        const index = opts.offset + next++;
        const result = await this.connectOne(opts, index);
        if (result === null) failed++;
        else times.push(result.elapsedNs / 1e6);
      }
    };
    await Promise.all(Array.from({ length: Math.min(opts.concurrency, opts.count) }, worker));
    const elapsedNs = nowNs() - started;
    return {
      opened: times.length,
      failed,
      startNs: started,
      elapsedMs: elapsedNs / 1e6,
      connectMs: percentiles(times),
      errors: this.errors,
      cpu: cpuSince(cpu0),
      rssBytes: process.memoryUsage().rss,
    };
  }

  async subscribe(opts) {
    const cpu0 = cpuSnapshot();
    const started = nowNs();
    let failed = 0;
    await Promise.all(
      this.conns.map(
        (conn) =>
          new Promise((resolve) => {
            const project = `${opts.prefix}${conn.index % opts.projects}`;
            conn.project = Buffer.from(project);
            conn.projectName = project;
            conn.acked = false;
            const timer = setTimeout(() => done(false), opts.timeoutMs);
            const done = (ok) => {
              clearTimeout(timer);
              conn.onAck = null;
              if (!ok) failed++;
              resolve();
            };
            conn.onAck = done;
            conn.transport.send(subscribeFrame("s", project));
          }),
      ),
    );
    return { subscribed: this.conns.length - failed, failed, elapsedMs: (nowNs() - started) / 1e6, cpu: cpuSince(cpu0) };
  }

  /** Resolve when every connection could have its events (`perProject[its project]`, 0 for
   * projects not listed), or at the timeout; then report counts, latency and CPU. */
  wait(opts) {
    let expected = 0;
    for (const c of this.conns) {
      c.expected = opts.perProject[c.projectName] ?? 0;
      expected += c.expected;
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.finishWait(), opts.timeoutMs);
      this.waiter = { expected, resolve, timer };
      if (this.received >= expected) this.finishWait();
    });
  }

  finishWait() {
    const waiter = this.waiter;
    if (waiter === null) return;
    this.waiter = null;
    clearTimeout(waiter.timer);
    let miscounted = 0;
    for (const c of this.conns) if (c.count !== c.expected) miscounted++;
    waiter.resolve({
      expected: waiter.expected,
      received: this.received,
      foreign: this.foreign,
      connections: this.conns.length,
      miscounted,
      firstRecvNs: this.firstRecvNs,
      lastRecvNs: this.lastRecvNs,
      latency: this.hist.toJSON(),
      errors: this.errors,
      unexpectedCloses: this.unexpectedCloses,
      closeCodes: this.closeCodes,
      cpu: cpuSince(this.cpuStart),
    });
  }

  async close(opts) {
    const conns = this.conns;
    this.conns = [];
    await Promise.all(
      conns.map(
        (conn) =>
          new Promise((resolve) => {
            conn.closing = true;
            if (conn.transport.closed) return resolve();
            const timer = setTimeout(resolve, opts.timeoutMs);
            conn.onClosed = () => {
              clearTimeout(timer);
              resolve();
            };
            conn.transport.terminate();
          }),
      ),
    );
    this.errors = {};
    this.unexpectedCloses = 0;
    this.closeCodes = {};
    return { closed: conns.length };
  }
}

// ---- publisher ---------------------------------------------------------------------------

/** POST `count` events: as fast as `concurrency` allows (rate 0), or paced at `rate`/s. */
async function publish(opts) {
  const cpu0 = cpuSnapshot();
  const agent = new http.Agent({ keepAlive: true, maxSockets: opts.concurrency });
  const url = new URL(opts.url);
  const templates = [];
  for (let p = 0; p < opts.projects; p++) {
    templates.push(publishBody(opts.tenant, opts.type, `${opts.prefix}${p}`, opts.payloadBytes));
  }
  const statuses = {};
  let accepted = 0;
  let inFlight = 0;
  let firstSendNs = null;
  let lastSendNs = null;
  let lastDoneNs = null;
  let wake = null;

  const send = (k) => {
    const project = k % opts.projects;
    const { body: template, payloadOffset } = templates[project];
    const body = Buffer.from(template);
    const sent = nowNs();
    body.writeUInt32BE(Math.floor(sent / 4294967296), payloadOffset);
    body.writeUInt32BE(sent % 4294967296, payloadOffset + 4);
    body.writeUInt32BE(k, payloadOffset + 8);
    if (firstSendNs === null) firstSendNs = sent;
    lastSendNs = sent;
    const path = opts.target === "hub" ? `${url.pathname}?project=${opts.prefix}${project}` : url.pathname;
    inFlight++;
    const finish = (key) => {
      statuses[key] = (statuses[key] || 0) + 1;
      lastDoneNs = nowNs();
      inFlight--;
      if (wake) wake();
    };
    const req = http.request(
      {
        agent,
        host: url.hostname,
        port: url.port,
        path,
        method: "POST",
        headers: {
          Authorization: `Bearer ${opts.key}`,
          "Content-Type": "application/x-protobuf",
          "Content-Length": body.length,
        },
      },
      (res) => {
        res.resume();
        res.on("end", () => {
          if (res.statusCode === 200) accepted++;
          finish(String(res.statusCode));
        });
      },
    );
    req.on("error", (err) => finish(`error:${err.code || err.message}`));
    req.end(body);
  };
  const idle = () => new Promise((resolve) => (wake = resolve));

  if (!opts.rate) {
    for (let k = 0; k < opts.count; k++) {
      while (inFlight >= opts.concurrency) {
        await idle();
        wake = null;
      }
      send(k);
    }
  } else {
    const start = nowNs();
    const intervalNs = 1e9 / opts.rate;
    let k = 0;
    while (k < opts.count) {
      const now = nowNs();
      while (k < opts.count && start + k * intervalNs <= now) send(k++);
      if (k < opts.count) {
        const waitMs = (start + k * intervalNs - nowNs()) / 1e6;
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, waitMs)));
      }
    }
  }
  const deadline = nowNs() + opts.timeoutMs * 1e6;
  while (inFlight > 0 && nowNs() < deadline) {
    await Promise.race([idle(), new Promise((resolve) => setTimeout(resolve, 50))]);
    wake = null;
  }
  agent.destroy();
  return {
    sent: opts.count,
    accepted,
    statuses,
    unanswered: inFlight,
    firstSendNs,
    lastSendNs,
    lastDoneNs,
    cpu: cpuSince(cpu0),
  };
}

// ---- command loop ------------------------------------------------------------------------

const subscribers = new Subscribers();

const COMMANDS = {
  connect: (o) =>
    subscribers.connect({
      url: o.url,
      count: o.count,
      offset: o.offset ?? 0,
      concurrency: o.concurrency ?? 100,
      secret: o.secret,
      tenant: o.tenant ?? "bench",
      userPrefix: o.userPrefix ?? "user-",
      mode: o.mode ?? "pm",
      impl: o.impl ?? "raw",
      localAddresses: o.localAddresses ?? [],
      timeoutMs: o.timeoutMs ?? 30000,
    }),
  subscribe: (o) =>
    subscribers.subscribe({
      projects: o.projects ?? 1,
      prefix: o.prefix ?? "p",
      timeoutMs: o.timeoutMs ?? 30000,
    }),
  reset: async () => {
    subscribers.reset();
    return { nowNs: nowNs() };
  },
  wait: (o) => subscribers.wait({ perProject: o.perProject, timeoutMs: o.timeoutMs ?? 30000 }),
  close: (o) => subscribers.close({ timeoutMs: o.timeoutMs ?? 10000 }),
  publish: (o) =>
    publish({
      url: o.url,
      key: o.key,
      target: o.target ?? "pm",
      count: o.count,
      rate: o.rate ?? 0,
      concurrency: o.concurrency ?? 16,
      projects: o.projects ?? 1,
      prefix: o.prefix ?? "p",
      tenant: o.tenant ?? "bench",
      type: o.type ?? "bench.event",
      payloadBytes: o.payloadBytes ?? 64,
      timeoutMs: o.timeoutMs ?? 30000,
    }),
  stats: async () => ({
    nowNs: nowNs(),
    cpu: cpuSince({ user: 0, system: 0 }),
    rssBytes: process.memoryUsage().rss,
    connections: subscribers.conns.length,
  }),
  exit: async () => {
    setImmediate(() => process.exit(0));
    return {};
  },
};

function reply(message) {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

async function run(line) {
  let command;
  try {
    command = JSON.parse(line);
  } catch (err) {
    reply({ id: null, ok: false, error: `bad JSON: ${err.message}` });
    return;
  }
  const handler = COMMANDS[command.cmd];
  if (!handler) {
    reply({ id: command.id, ok: false, error: `unknown command ${command.cmd}` });
    return;
  }
  try {
    reply({ id: command.id, ok: true, ...(await handler(command)) });
  } catch (err) {
    reply({ id: command.id, ok: false, error: String(err && err.stack ? err.stack : err) });
  }
}

// Commands run one at a time, in order: a driver may queue several lines at once.
let queue = Promise.resolve();
const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  if (line.trim()) queue = queue.then(() => run(line));
});
lines.on("close", () => queue.then(() => process.exit(0)));
reply({ id: 0, ok: true, ready: true, pid: process.pid, node: process.version });
