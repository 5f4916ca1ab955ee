/**
 * The connection: a WebSocket speaking pm.v1, kept alive across drops.
 *
 * Decisions (reconnect or stop, delays, token timing, positions) live in the
 * pure modules next to this one; this class wires them to a socket and timers,
 * both injectable so the whole client runs under `node --test` without a network.
 */

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";

import { backoffOptions, type BackoffOptions, type Random } from "./backoff.js";
import { PmClientError } from "./errors.js";
import { StreamPositionSchema } from "./gen/pm/v1/common_pb.js";
import {
  ClientMessageSchema,
  CommandSchema,
  PingSchema,
  RefreshTokenSchema,
  SubscribeSchema,
  UnsubscribeSchema,
  type ClientMessage,
} from "./gen/pm/v1/client_pb.js";
import {
  ServerMessageSchema,
  type Ack,
  type Event,
  type ServerMessage,
  type Welcome,
} from "./gen/pm/v1/server_pb.js";
import { advance, isSeen, type Position } from "./position.js";
import { CloseCode, planReconnect, WebSocketCloseCode, type StopReason } from "./reconnect.js";
import { chunk, isEmpty, TopicSet, type TopicLists, type Topics } from "./subscriptions.js";
import { jwtExpiresAtMs, refreshDelayMs, type TokenRequestReason } from "./token.js";
import { UpdateQueue } from "./updates.js";

/** The application protocol the server selects. */
export const SUBPROTOCOL = "pm.v1";
/** Prefix of the subprotocol that carries the token (browsers cannot set headers). */
export const BEARER_SUBPROTOCOL_PREFIX = "pm.bearer.";

const REFRESH_RETRY_MS = 10_000;

/** The part of the browser's `WebSocket` the client uses. */
export interface WebSocketLike {
  binaryType: string;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

/** Opens a WebSocket; `new WebSocket(url, protocols)` by default. */
export type WebSocketFactory = (url: string, protocols: string[]) => WebSocketLike;

/** Timers and the wall clock, injectable for tests. */
export interface Timers {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  now(): number;
}

/**
 * Returns a token (a JWT the gateway accepts). Asked on the first connection
 * when no `token` was given, after a 4001 close, after an attempt that failed
 * before the server's `Welcome` (the token may be the reason: browsers do not
 * show the HTTP 401), and shortly before expiry. It may cache; it should fetch
 * a new token for `"expired"`, `"rejected"` and `"refresh"`. A rejection counts
 * as a failed attempt and is retried with backoff.
 */
export type TokenProvider = (reason: TokenRequestReason) => string | Promise<string>;

export interface PmClientOptions {
  /** The gateway's WebSocket URL, e.g. `wss://rt.example.com/ws`. */
  readonly url: string;
  /** A token to start with; optional when `getToken` is given. */
  readonly token?: string;
  /** Where new tokens come from; without it a 4001 close is the end. */
  readonly getToken?: TokenProvider;
  /** Reconnect delays; see `BackoffOptions`. */
  readonly backoff?: Partial<BackoffOptions>;
  /** Refresh the token this long before it expires (default 60 s; half the lifetime when shorter). */
  readonly refreshMarginMs?: number;
  /** A request with no answer after this long rejects with `REQUEST_TIMEOUT` (default 10 s). */
  readonly requestTimeoutMs?: number;
  /** Send an application `Ping` this often (default: the server's heartbeat interval; 0 turns it off). */
  readonly pingIntervalMs?: number;
  /** With no answer to a `Ping` after this long the connection is treated as dead (default 10 s). */
  readonly pongTimeoutMs?: number;
  /** Subscriptions to hold from the start, as if `subscribe` had been called and acknowledged. */
  readonly subscriptions?: Topics;
  /**
   * Resume `subscriptions` from here on the first connection too (a position the
   * application saved), with a `recovery` signal like after a reconnect.
   */
  readonly resumeFrom?: Position;
  /** How many unread items one `updates()` iterator holds before it fails (default 1000). */
  readonly maxBufferedUpdates?: number;
  readonly webSocket?: WebSocketFactory;
  readonly timers?: Timers;
  readonly random?: Random;
}

/**
 * - `idle`: built, `connect()` not called yet.
 * - `connecting`: opening the socket, waiting for `Welcome`, restoring subscriptions.
 * - `open`: live; subscriptions are in place.
 * - `reconnecting`: waiting before the next attempt.
 * - `closed`: stopped, by `close()` or a terminal close code.
 */
export type ConnectionState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

const TRANSITIONS: Readonly<Record<ConnectionState, readonly ConnectionState[]>> = {
  idle: ["connecting", "closed"],
  connecting: ["open", "reconnecting", "closed"],
  open: ["reconnecting", "closed"],
  reconnecting: ["connecting", "closed"],
  closed: ["connecting"],
};

/** A state change, with what caused it when a connection ended. */
export interface StateChange {
  readonly state: ConnectionState;
  readonly previous: ConnectionState;
  /** The close code that ended the last connection (`reconnecting`, `closed`). */
  readonly closeCode?: number;
  /** The close frame's reason, or the `Closing` message's code when the server sent one. */
  readonly closeReason?: string;
  /** How long until the next attempt (`reconnecting`). */
  readonly delayMs?: number;
  /** Why the client gave up (`closed` after a terminal code). */
  readonly stopReason?: StopReason | "client-closed";
}

/**
 * The outcome of re-subscribing after a reconnect. When `recovered` is false,
 * events may have been missed (the server restarted, or its history no longer
 * reaches back): the application must refetch its state. Events replayed
 * (`replayed` of them) follow this signal, then live events.
 */
export interface Recovery {
  readonly recovered: boolean;
  readonly replayed: number;
  /** The stream position the server reported. */
  readonly position?: Position;
  /** `too-many-subscriptions`: the set needed several messages, so no exact resume was possible. */
  readonly reason: "resumed" | "too-many-subscriptions" | "resubscribe-failed";
}

/** What `updates()` yields, in the order things happened. */
export type Update =
  | { readonly kind: "event"; readonly event: Event }
  | { readonly kind: "recovery"; readonly recovery: Recovery };

export interface ClientEventMap {
  state: StateChange;
  welcome: Welcome;
  event: Event;
  recovery: Recovery;
  /** Errors no request awaits: pushed server errors, token provider and refresh failures. */
  error: PmClientError;
}

type Listener<T> = (value: T) => void;

interface Pending {
  readonly resolve: (message: ServerMessage) => void;
  readonly reject: (error: PmClientError) => void;
  readonly timer: unknown;
  /** Runs as the answer is read, before any later frame: position bookkeeping must not wait. */
  readonly onAnswer: ((message: ServerMessage) => void) | undefined;
}

/** One connection attempt: its socket and what it learned. */
class Attempt {
  socket: WebSocketLike | undefined;
  welcomed = false;
  closingCode: string | undefined;
  reconnectAfterMs: number | undefined;
  /** The server's clock minus ours, from `Welcome`. */
  skewMs = 0;
  /** When the connection's token expires (server clock), as far as the client knows. */
  tokenExpiresAtMs = 0;
  readonly pending = new Map<string, Pending>();
  readonly timers = new Set<unknown>();
}

/**
 * A pm.v1 client for browsers.
 *
 * It authenticates with the subprotocol pair (`pm.v1`, `pm.bearer.<jwt>`),
 * reconnects with exponential backoff and jitter (honouring the server's
 * `Closing.reconnectAfterMs`), stops on terminal close codes (4003, 4010,
 * 1008, 1009), asks the token provider for a new token on 4001, refreshes the
 * token in-band before it expires, and after a reconnect re-subscribes with
 * `resumeFrom` its last position, reporting whether the server could replay
 * everything (`recovery`). Events are delivered once and in stream order.
 *
 * Limits: a subscription set with more than 100 ids of one kind cannot be
 * restored in one message, so such a reconnect reports `recovered: false`.
 * Listeners run synchronously; one that throws does not stop the others (its
 * error is rethrown asynchronously).
 */
export class PmClient {
  private readonly url: string;
  private readonly getToken: TokenProvider | undefined;
  private readonly backoff: BackoffOptions;
  private readonly refreshMarginMs: number;
  private readonly requestTimeoutMs: number;
  private readonly pingIntervalMs: number | undefined;
  private readonly pongTimeoutMs: number;
  private readonly maxBufferedUpdates: number;
  private readonly openSocket: WebSocketFactory;
  private readonly timers: Timers;
  private readonly random: Random;

  private currentState: ConnectionState = "idle";
  private attempt: Attempt | undefined;
  private token: string | undefined;
  private tokenReason: TokenRequestReason | undefined = "connect";
  private failures = 0;
  private retryTimer: unknown;
  private lastWelcome: Welcome | undefined;
  private streamPosition: Position | undefined;
  /** After a resume Ack: the position to take once its replayed events have arrived. */
  private replay: { remaining: number; position: Position | undefined } | undefined;
  private nextRequestId = 0;
  private readonly confirmed = new TopicSet();
  private readonly listeners = new Map<keyof ClientEventMap, Set<Listener<never>>>();
  private readonly queues = new Set<UpdateQueue<Update>>();
  private liveWaiters: Array<{ resolve: () => void; reject: (error: PmClientError) => void }> = [];

  constructor(options: PmClientOptions) {
    if (options.token === undefined && options.getToken === undefined) {
      throw new TypeError("PmClient needs a token or a getToken provider");
    }
    this.url = options.url;
    this.token = options.token;
    this.tokenReason = options.token === undefined ? "connect" : undefined;
    this.getToken = options.getToken;
    this.backoff = backoffOptions(options.backoff);
    this.refreshMarginMs = options.refreshMarginMs ?? 60_000;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    this.pingIntervalMs = options.pingIntervalMs;
    this.pongTimeoutMs = options.pongTimeoutMs ?? 10_000;
    this.maxBufferedUpdates = options.maxBufferedUpdates ?? 1000;
    this.streamPosition = options.resumeFrom;
    this.confirmed.add(options.subscriptions ?? {});
    this.openSocket = options.webSocket ?? defaultWebSocket;
    this.timers = options.timers ?? defaultTimers;
    this.random = options.random ?? Math.random;
  }

  /** Where the client is in its life. */
  get state(): ConnectionState {
    return this.currentState;
  }

  /** The last stream position this client has seen (what a reconnect resumes from). */
  get position(): Position | undefined {
    return this.streamPosition;
  }

  /** The current connection's `Welcome`, while connected. */
  get welcome(): Welcome | undefined {
    return this.attempt?.welcomed === true ? this.lastWelcome : undefined;
  }

  /** Starts connecting (from `idle`, or again after `closed`); otherwise does nothing. */
  connect(): void {
    if (this.currentState === "idle" || this.currentState === "closed") {
      void this.startAttempt();
    }
  }

  /**
   * Closes the connection (1000) and stops reconnecting. Pending requests reject
   * with `CLIENT_CLOSED`; `updates()` iterators end.
   */
  close(): void {
    if (this.currentState === "closed") {
      return;
    }
    const attempt = this.attempt;
    this.attempt = undefined;
    this.clearRetry();
    if (attempt !== undefined) {
      this.dispose(attempt, new PmClientError("CLIENT_CLOSED", "the client was closed"));
      attempt.socket?.close(CloseCode.NORMAL, "client closed");
    }
    this.stop({ stopReason: "client-closed" });
  }

  /**
   * Subscribes to events of these projects, sprints and work items; kept across
   * reconnects. Resolves once the server acknowledged (waiting for the
   * connection when it is not open). Rejects with a `RangeError` for an invalid
   * id, with the server's code (e.g. `SUBSCRIPTION_LIMIT`) when refused, and
   * with `CLIENT_CLOSED` when the client stops first.
   */
  async subscribe(topics: Topics): Promise<void> {
    const wanted = new TopicSet();
    wanted.add(topics);
    for (;;) {
      const attempt = await this.live();
      const fresh = wanted.lists();
      try {
        for (const part of chunk(fresh)) {
          await this.request(attempt, subscribePayload(part, undefined), (answer) => {
            if (answer.payload.case === "ack") {
              this.confirmed.add(part);
              this.advanceTo(positionOf(answer.payload.value));
            }
          });
          wanted.remove(part);
        }
        return;
      } catch (error) {
        if (!(error instanceof PmClientError && error.code === "CONNECTION_CLOSED")) {
          throw error;
        }
      }
    }
  }

  /**
   * Stops events of these ids. Resolves once the server acknowledged, or at
   * once when not connected (nothing is restored on the next connection).
   */
  async unsubscribe(topics: Topics): Promise<void> {
    const removed = this.confirmed.remove(topics);
    const attempt = this.attempt;
    if (this.currentState !== "open" || attempt === undefined || isEmpty(removed)) {
      return;
    }
    for (const part of chunk(removed)) {
      const value = create(UnsubscribeSchema, {
        projectIds: part.projects,
        sprintIds: part.sprints,
        workItemIds: part.workItems,
      });
      await this.request(attempt, { case: "unsubscribe", value });
    }
  }

  /** Sends a `Command` to a handler the server's application registered; resolves with its result body. */
  async command(name: string, body: Uint8Array = new Uint8Array()): Promise<Uint8Array> {
    const attempt = await this.live();
    const answer = await this.request(attempt, {
      case: "command",
      value: create(CommandSchema, { name, body }),
    });
    return answer.payload.case === "commandResult" ? answer.payload.value.body : new Uint8Array();
  }

  /**
   * Listens to `state`, `welcome`, `event`, `recovery` or `error`; returns a
   * function that stops listening.
   */
  on<K extends keyof ClientEventMap>(type: K, listener: Listener<ClientEventMap[K]>): () => void {
    let set = this.listeners.get(type);
    if (set === undefined) {
      set = new Set();
      this.listeners.set(type, set);
    }
    set.add(listener as Listener<never>);
    return () => {
      set.delete(listener as Listener<never>);
    };
  }

  /**
   * Events and recovery signals from now on, in order, as an async iterator.
   * It ends when the client stops; it throws `BUFFER_OVERFLOW` when more than
   * `maxBufferedUpdates` items wait unread (the consumer must then refetch).
   */
  updates(): AsyncIterableIterator<Update> {
    const queue: UpdateQueue<Update> = new UpdateQueue(this.maxBufferedUpdates, () => {
      this.queues.delete(queue);
    });
    if (this.currentState === "closed") {
      queue.end();
    } else {
      this.queues.add(queue);
    }
    return queue;
  }

  private async startAttempt(): Promise<void> {
    const attempt = new Attempt();
    this.attempt = attempt;
    this.setState("connecting");
    let token: string;
    try {
      token = await this.tokenForAttempt();
    } catch (error) {
      if (this.attempt === attempt) {
        this.emit("error", asClientError(error, "TOKEN_UNAVAILABLE", "the token provider failed"));
        this.socketClosed(attempt, WebSocketCloseCode.ABNORMAL, "no token");
      }
      return;
    }
    if (this.attempt !== attempt) {
      return;
    }
    let socket: WebSocketLike;
    try {
      socket = this.openSocket(this.url, [SUBPROTOCOL, BEARER_SUBPROTOCOL_PREFIX + token]);
    } catch (error) {
      // A token with characters a subprotocol cannot carry, or a bad URL.
      this.emit("error", asClientError(error, "CONNECT_FAILED", "the WebSocket could not be opened"));
      this.tokenReason = "rejected";
      this.socketClosed(attempt, WebSocketCloseCode.ABNORMAL, "could not open");
      return;
    }
    attempt.socket = socket;
    socket.binaryType = "arraybuffer";
    socket.onmessage = (event) => this.frameReceived(attempt, event.data);
    socket.onclose = (event) => this.socketClosed(attempt, event.code, event.reason);
    // A close event always follows an error event; the close decides.
    socket.onerror = () => undefined;
  }

  private async tokenForAttempt(): Promise<string> {
    const reason = this.tokenReason;
    if (reason !== undefined && this.getToken !== undefined) {
      const token = await this.getToken(reason);
      if (typeof token !== "string" || token === "") {
        throw new PmClientError("TOKEN_UNAVAILABLE", "the token provider returned no token");
      }
      this.token = token;
      this.tokenReason = undefined;
    }
    if (this.token === undefined) {
      throw new PmClientError("TOKEN_UNAVAILABLE", "no token");
    }
    return this.token;
  }

  private frameReceived(attempt: Attempt, data: unknown): void {
    if (this.attempt !== attempt) {
      return;
    }
    let message: ServerMessage;
    try {
      if (!(data instanceof ArrayBuffer)) {
        throw new TypeError("not a binary frame");
      }
      message = fromBinary(ServerMessageSchema, new Uint8Array(data));
    } catch {
      this.emit("error", new PmClientError("BAD_FRAME", "the server sent a frame that is not a pm.v1 ServerMessage"));
      return;
    }
    const payload = message.payload;
    switch (payload.case) {
      case "welcome":
        this.welcomed(attempt, payload.value);
        return;
      case "event":
        this.eventReceived(payload.value);
        return;
      case "closing":
        attempt.closingCode = payload.value.code;
        attempt.reconnectAfterMs = payload.value.reconnectAfterMs;
        return;
      case "error":
        if (!this.answer(attempt, message)) {
          const { code, message: text, field } = payload.value;
          this.emit("error", new PmClientError(code, text, field));
        }
        return;
      case "ack":
      case "pong":
      case "commandResult":
        this.answer(attempt, message);
        return;
      default:
        return;
    }
  }

  private welcomed(attempt: Attempt, welcome: Welcome): void {
    if (attempt.welcomed) {
      return;
    }
    attempt.welcomed = true;
    attempt.skewMs = Number(welcome.serverTimeMs) - this.timers.now();
    this.failures = 0;
    this.lastWelcome = welcome;
    this.emit("welcome", welcome);
    const expiresAtMs = Number(welcome.tokenExpiresAtMs);
    if (this.getToken !== undefined && expiresAtMs > 0) {
      this.scheduleRefresh(attempt, expiresAtMs);
    }
    const interval = this.pingIntervalMs ?? welcome.heartbeatIntervalSecs * 1000;
    if (interval > 0) {
      this.schedule(attempt, interval, () => this.ping(attempt, interval));
    }
    void this.restore(attempt);
  }

  /** Re-subscribes what was confirmed before, resuming from the last position, then goes live. */
  private async restore(attempt: Attempt): Promise<void> {
    const lists = this.confirmed.lists();
    const resumeFrom = this.streamPosition;
    let recovery: Recovery | undefined;
    try {
      const parts = chunk(lists);
      if (parts.length === 1 && parts[0] !== undefined) {
        await this.request(attempt, subscribePayload(parts[0], resumeFrom), (answer) => {
          if (answer.payload.case === "ack" && resumeFrom !== undefined) {
            this.resumed(answer.payload.value);
          } else if (answer.payload.case === "ack") {
            this.advanceTo(positionOf(answer.payload.value));
          }
        });
      } else {
        for (const part of parts) {
          await this.request(attempt, subscribePayload(part, undefined), (answer) => {
            if (answer.payload.case === "ack") {
              this.advanceTo(positionOf(answer.payload.value));
            }
          });
        }
        if (parts.length > 1 && resumeFrom !== undefined) {
          recovery = { recovered: false, replayed: 0, position: this.streamPosition, reason: "too-many-subscriptions" };
        }
      }
    } catch (error) {
      if (this.attempt !== attempt || !(error instanceof PmClientError)) {
        return;
      }
      this.emit("error", error);
      if (resumeFrom !== undefined) {
        recovery = { recovered: false, replayed: 0, position: this.streamPosition, reason: "resubscribe-failed" };
      }
    }
    if (this.attempt !== attempt) {
      return;
    }
    if (recovery !== undefined) {
      this.recovered(recovery);
    }
    this.setState("open");
    const waiters = this.liveWaiters;
    this.liveWaiters = [];
    for (const waiter of waiters) {
      waiter.resolve();
    }
  }

  private resumed(ack: Ack): void {
    const position = positionOf(ack);
    if (ack.replayed > 0) {
      this.replay = { remaining: ack.replayed, position };
    } else {
      this.advanceTo(position);
    }
    this.recovered({ recovered: ack.recovered, replayed: ack.replayed, position, reason: "resumed" });
  }

  private recovered(recovery: Recovery): void {
    this.emit("recovery", recovery);
    for (const queue of this.queues) {
      queue.push({ kind: "recovery", recovery });
    }
  }

  private eventReceived(event: Event): void {
    const position = event.position === undefined ? undefined : toPosition(event.position);
    const replay = this.replay;
    if (replay !== undefined) {
      replay.remaining -= 1;
    }
    if (position === undefined || !isSeen(this.streamPosition, position)) {
      this.advanceTo(position);
      this.emit("event", event);
      for (const queue of this.queues) {
        queue.push({ kind: "event", event });
      }
    }
    if (replay !== undefined && replay.remaining <= 0) {
      this.replay = undefined;
      this.advanceTo(replay.position);
    }
  }

  private advanceTo(position: Position | undefined): void {
    this.streamPosition = advance(this.streamPosition, position);
  }

  private scheduleRefresh(attempt: Attempt, expiresAtMs: number): void {
    attempt.tokenExpiresAtMs = expiresAtMs;
    const delay = refreshDelayMs(expiresAtMs, this.timers.now() + attempt.skewMs, this.refreshMarginMs);
    this.schedule(attempt, delay, () => void this.refresh(attempt));
  }

  private async refresh(attempt: Attempt): Promise<void> {
    const getToken = this.getToken;
    if (getToken === undefined) {
      return;
    }
    try {
      const token = await getToken("refresh");
      if (this.attempt !== attempt) {
        return;
      }
      await this.request(attempt, { case: "refreshToken", value: create(RefreshTokenSchema, { token }) });
      this.token = token;
      const expiresAtMs = jwtExpiresAtMs(token);
      // A token that lives no longer than the last (a provider's stale cache) would make
      // the refreshes come ever faster; stop instead, and let 4001 ask for a new one.
      if (expiresAtMs !== undefined && expiresAtMs > attempt.tokenExpiresAtMs && this.attempt === attempt) {
        this.scheduleRefresh(attempt, expiresAtMs);
      }
    } catch (error) {
      if (this.attempt !== attempt) {
        return;
      }
      // The connection stays up until the old token expires (then 4001); try again meanwhile.
      this.emit("error", asClientError(error, "TOKEN_UNAVAILABLE", "the token could not be refreshed"));
      this.schedule(attempt, REFRESH_RETRY_MS, () => void this.refresh(attempt));
    }
  }

  private ping(attempt: Attempt, interval: number): void {
    this.request(
      attempt,
      { case: "ping", value: create(PingSchema, { clientTimeMs: BigInt(Math.round(this.timers.now())) }) },
      undefined,
      this.pongTimeoutMs,
    ).then(
      () => this.schedule(attempt, interval, () => this.ping(attempt, interval)),
      (error: unknown) => {
        if (this.attempt !== attempt) {
          return;
        }
        if (error instanceof PmClientError && error.code === "REQUEST_TIMEOUT") {
          // No answer in time: the connection is dead even if the browser has not noticed.
          this.abandon(attempt, CloseCode.HEARTBEAT_TIMEOUT, "no answer to ping");
        } else {
          this.schedule(attempt, interval, () => this.ping(attempt, interval));
        }
      },
    );
  }

  private request(
    attempt: Attempt,
    payload: ClientMessage["payload"],
    onAnswer?: (message: ServerMessage) => void,
    timeoutMs: number = this.requestTimeoutMs,
  ): Promise<ServerMessage> {
    const socket = attempt.socket;
    if (this.attempt !== attempt || socket === undefined) {
      return Promise.reject(new PmClientError("CONNECTION_CLOSED", "not connected"));
    }
    this.nextRequestId += 1;
    const requestId = String(this.nextRequestId);
    const message = create(ClientMessageSchema, { requestId, payload });
    return new Promise<ServerMessage>((resolve, reject) => {
      const timer = this.timers.setTimeout(() => {
        if (attempt.pending.delete(requestId)) {
          reject(new PmClientError("REQUEST_TIMEOUT", `no answer within ${timeoutMs} ms`));
        }
      }, timeoutMs);
      attempt.pending.set(requestId, { resolve, reject, timer, onAnswer });
      socket.send(toBinary(ClientMessageSchema, message));
    });
  }

  /** Settles the request `message` answers; false when no request waits for it. */
  private answer(attempt: Attempt, message: ServerMessage): boolean {
    const pending = attempt.pending.get(message.requestId);
    if (pending === undefined) {
      return false;
    }
    attempt.pending.delete(message.requestId);
    this.timers.clearTimeout(pending.timer);
    if (message.payload.case === "error") {
      const { code, message: text, field } = message.payload.value;
      pending.reject(new PmClientError(code, text, field));
      return true;
    }
    pending.onAnswer?.(message);
    pending.resolve(message);
    return true;
  }

  /** Gives up on a socket the browser still thinks is open, and handles it as closed with `code`. */
  private abandon(attempt: Attempt, code: number, reason: string): void {
    const socket = attempt.socket;
    if (socket !== undefined) {
      socket.onmessage = socket.onclose = socket.onerror = null;
      socket.close(code, reason);
    }
    this.socketClosed(attempt, code, reason);
  }

  private socketClosed(attempt: Attempt, code: number, reason: string): void {
    if (this.attempt !== attempt) {
      return;
    }
    this.attempt = undefined;
    this.replay = undefined;
    this.dispose(attempt, new PmClientError("CONNECTION_CLOSED", `the connection closed (${code})`));
    const plan = planReconnect(
      {
        code,
        welcomed: attempt.welcomed,
        reconnectAfterMs: attempt.reconnectAfterMs,
        attempt: this.failures,
        canRenewToken: this.getToken !== undefined,
      },
      this.backoff,
      this.random,
    );
    const closeReason = attempt.closingCode ?? reason;
    if (plan.kind === "stop") {
      this.stop({ closeCode: code, closeReason, stopReason: plan.reason });
      return;
    }
    if (plan.renewToken) {
      this.tokenReason = code === CloseCode.TOKEN_EXPIRED ? "expired" : "rejected";
    }
    this.failures += 1;
    this.setState("reconnecting", { closeCode: code, closeReason, delayMs: plan.delayMs });
    this.retryTimer = this.timers.setTimeout(() => {
      this.retryTimer = undefined;
      if (this.currentState === "reconnecting") {
        void this.startAttempt();
      }
    }, plan.delayMs);
  }

  private dispose(attempt: Attempt, error: PmClientError): void {
    for (const timer of attempt.timers) {
      this.timers.clearTimeout(timer);
    }
    attempt.timers.clear();
    for (const pending of attempt.pending.values()) {
      this.timers.clearTimeout(pending.timer);
      pending.reject(error);
    }
    attempt.pending.clear();
  }

  private stop(change: Omit<StateChange, "state" | "previous">): void {
    this.setState("closed", change);
    const error = new PmClientError("CLIENT_CLOSED", "the client stopped");
    const waiters = this.liveWaiters;
    this.liveWaiters = [];
    for (const waiter of waiters) {
      waiter.reject(error);
    }
    for (const queue of [...this.queues]) {
      queue.end();
    }
  }

  private clearRetry(): void {
    if (this.retryTimer !== undefined) {
      this.timers.clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
  }

  /** The current attempt once it is open; waits for that (rejects when the client stops). */
  private live(): Promise<Attempt> {
    const attempt = this.attempt;
    if (this.currentState === "open" && attempt !== undefined) {
      return Promise.resolve(attempt);
    }
    if (this.currentState === "closed") {
      return Promise.reject(new PmClientError("CLIENT_CLOSED", "the client is closed"));
    }
    return new Promise<void>((resolve, reject) => {
      this.liveWaiters.push({ resolve, reject });
    }).then(() => this.live());
  }

  private schedule(attempt: Attempt, ms: number, callback: () => void): void {
    const handle = this.timers.setTimeout(() => {
      attempt.timers.delete(handle);
      if (this.attempt === attempt) {
        callback();
      }
    }, ms);
    attempt.timers.add(handle);
  }

  private setState(state: ConnectionState, change: Omit<StateChange, "state" | "previous"> = {}): void {
    const previous = this.currentState;
    if (!TRANSITIONS[previous].includes(state)) {
      throw new Error(`PmClient: no transition from ${previous} to ${state}`);
    }
    this.currentState = state;
    this.emit("state", { ...change, state, previous });
  }

  private emit<K extends keyof ClientEventMap>(type: K, value: ClientEventMap[K]): void {
    const set = this.listeners.get(type);
    if (set === undefined) {
      return;
    }
    for (const listener of [...set]) {
      try {
        (listener as Listener<ClientEventMap[K]>)(value);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }
}

function subscribePayload(lists: TopicLists, resumeFrom: Position | undefined): ClientMessage["payload"] {
  const value = create(SubscribeSchema, {
    projectIds: lists.projects,
    sprintIds: lists.sprints,
    workItemIds: lists.workItems,
  });
  if (resumeFrom !== undefined) {
    value.resumeFrom = create(StreamPositionSchema, resumeFrom);
  }
  return { case: "subscribe", value };
}

function positionOf(ack: Ack): Position | undefined {
  return ack.position === undefined ? undefined : toPosition(ack.position);
}

function toPosition(position: { epoch: string; seq: bigint }): Position {
  return { epoch: position.epoch, seq: position.seq };
}

function asClientError(error: unknown, code: string, message: string): PmClientError {
  if (error instanceof PmClientError) {
    return error;
  }
  const detail = error instanceof Error ? `: ${error.message}` : "";
  return new PmClientError(code, message + detail);
}

const defaultWebSocket: WebSocketFactory = (url, protocols) =>
  new WebSocket(url, protocols) as unknown as WebSocketLike;

const defaultTimers: Timers = {
  setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof globalThis.setTimeout>),
  now: () => Date.now(),
};
