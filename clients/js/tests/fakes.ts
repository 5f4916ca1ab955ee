// Test doubles: a WebSocket the test drives by hand, timers on a manual clock,
// and helpers that speak pm.v1 from the server's side.
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";

import type { Timers, WebSocketLike } from "../src/client.js";
import { ClientMessageSchema, type ClientMessage } from "../src/gen/pm/v1/client_pb.js";
import { ServerMessageSchema } from "../src/gen/pm/v1/server_pb.js";

export class FakeSocket implements WebSocketLike {
  binaryType = "blob";
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  readonly sent: ClientMessage[] = [];
  closedWith: { code?: number | undefined; reason?: string | undefined } | undefined;

  constructor(
    readonly url: string,
    readonly protocols: string[],
  ) {}

  send(data: Uint8Array): void {
    this.sent.push(fromBinary(ClientMessageSchema, data));
  }

  close(code?: number, reason?: string): void {
    this.closedWith = { code, reason };
  }

  /** The server sends one ServerMessage. */
  receive(init: MessageInitShape<typeof ServerMessageSchema>): void {
    const bytes = toBinary(ServerMessageSchema, create(ServerMessageSchema, init));
    const data = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    this.onmessage?.({ data });
  }

  /** The connection ends with `code`. */
  serverClose(code: number, reason = ""): void {
    this.onclose?.({ code, reason });
  }

  /** The last message the client sent, which must be of `kind`. */
  last<K extends NonNullable<ClientMessage["payload"]["case"]>>(
    kind: K,
  ): { requestId: string; value: Extract<ClientMessage["payload"], { case: K }>["value"] } {
    const message = this.sent.at(-1);
    if (message === undefined || message.payload.case !== kind) {
      throw new Error(`expected the client to have sent ${kind}, got ${message?.payload.case ?? "nothing"}`);
    }
    return { requestId: message.requestId, value: message.payload.value as never };
  }
}

export class FakeNetwork {
  readonly sockets: FakeSocket[] = [];
  readonly open = (url: string, protocols: string[]): FakeSocket => {
    const socket = new FakeSocket(url, protocols);
    this.sockets.push(socket);
    return socket;
  };

  get current(): FakeSocket {
    const socket = this.sockets.at(-1);
    if (socket === undefined) {
      throw new Error("no socket was opened");
    }
    return socket;
  }
}

/** Where the manual clock starts (a whole second). */
export const START_MS = 1_700_000_000_000;

interface Timer {
  readonly id: number;
  readonly at: number;
  readonly callback: () => void;
}

export class ManualTimers implements Timers {
  private clock = START_MS;
  private nextId = 0;
  private timers: Timer[] = [];

  now(): number {
    return this.clock;
  }

  setTimeout(callback: () => void, ms: number): unknown {
    this.nextId += 1;
    this.timers.push({ id: this.nextId, at: this.clock + ms, callback });
    return this.nextId;
  }

  clearTimeout(handle: unknown): void {
    this.timers = this.timers.filter((timer) => timer.id !== handle);
  }

  /** Delays of the timers that are waiting, soonest first. */
  pending(): number[] {
    return this.timers.map((timer) => timer.at - this.clock).sort((a, b) => a - b);
  }

  /** Moves the clock forward, firing due timers in order (and draining promises after each). */
  async advance(ms: number): Promise<void> {
    const end = this.clock + ms;
    for (;;) {
      const due = this.timers.filter((timer) => timer.at <= end).sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (due === undefined) {
        break;
      }
      this.timers = this.timers.filter((timer) => timer !== due);
      this.clock = Math.max(this.clock, due.at);
      due.callback();
      await settle();
    }
    this.clock = end;
  }
}

/** Lets every pending promise continuation run (no time passes on the manual clock). */
export function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** An unsigned JWT-shaped token whose payload carries `exp` (seconds). */
export function fakeJwt(expSeconds: number, sub = "u1"): string {
  const encode = (value: object): string => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${encode({ alg: "HS256", typ: "JWT" })}.${encode({ sub, exp: expSeconds })}.c2ln`;
}
