/**
 * What to do after a connection ends: the close codes of the pm.v1 contract and
 * the reconnect decision. Pure; the client only carries the plan out.
 */

import { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions, type Random } from "./backoff.js";
import { CloseCode } from "./gen/pm/v1/common_pb.js";

/**
 * The close codes of the pm.v1 contract, generated from `pm.v1.CloseCode` in
 * proto/pm/v1/common.proto: the one table the server and both clients read.
 */
export { CloseCode };

/**
 * RFC 6455 close codes the pm.v1 server never sends, but that a browser reports
 * or a WebSocket layer may close with.
 */
export const WebSocketCloseCode = Object.freeze({
  UNSUPPORTED_DATA: 1003,
  /** Reported by browsers when the connection failed or dropped without a close frame. */
  ABNORMAL: 1006,
  INVALID_PAYLOAD: 1007,
});

/**
 * Codes after which reconnecting would fail the same way or defy an order:
 * 4003 (a refresh token for another identity) and 4010 (an operator's
 * disconnect) are terminal by contract; 1008 and 1009 mean this client sends
 * what the server refuses; 1002, 1003 and 1007 are the same kind of fault
 * reported by the WebSocket layer.
 */
export const TERMINAL_CLOSE_CODES: ReadonlySet<number> = new Set<number>([
  CloseCode.PROTOCOL_ERROR,
  WebSocketCloseCode.UNSUPPORTED_DATA,
  WebSocketCloseCode.INVALID_PAYLOAD,
  CloseCode.POLICY_VIOLATION,
  CloseCode.MESSAGE_TOO_BIG,
  CloseCode.IDENTITY_CHANGED,
  CloseCode.DISCONNECTED_BY_OPERATOR,
]);

/** What the client knows when a connection has ended. */
export interface CloseFacts {
  /** The close code the browser reported (1006 when there was no close frame). */
  readonly code: number;
  /** Whether this attempt got as far as the server's `Welcome`. */
  readonly welcomed: boolean;
  /** `Closing.reconnectAfterMs` the server sent just before closing, if any. */
  readonly reconnectAfterMs?: number | undefined;
  /** Failed attempts since the last `Welcome` (0 for the first retry). */
  readonly attempt: number;
  /** Whether a token provider can be asked for a new token. */
  readonly canRenewToken: boolean;
}

/** The plan after a close: give up, or retry after a delay (with a new token or not). */
export type ReconnectPlan =
  | { readonly kind: "stop"; readonly reason: StopReason }
  | { readonly kind: "retry"; readonly delayMs: number; readonly renewToken: boolean };

export type StopReason = "terminal-code" | "token-expired";

/**
 * Decides what follows a close, per SPEC §2.
 *
 * - Terminal codes (`TERMINAL_CLOSE_CODES`) stop the client.
 * - 4001 (token expired) retries at once with a token from the provider; with
 *   no provider there is no way back, so the client stops.
 * - A server-advised `reconnectAfterMs` (graceful shutdown sends one with its
 *   own jitter) is honoured as it is.
 * - Anything else (1001, 1011, 4008, 4009, 4011, network loss, codes this
 *   client does not know) retries with exponential backoff and jitter.
 * - An attempt that never reached `Welcome` may have been refused for its token
 *   (browsers hide the HTTP 401 behind close code 1006), so the next attempt
 *   asks the provider for a fresh one.
 */
export function planReconnect(
  facts: CloseFacts,
  backoff: BackoffOptions = DEFAULT_BACKOFF,
  random: Random = Math.random,
): ReconnectPlan {
  if (TERMINAL_CLOSE_CODES.has(facts.code)) {
    return { kind: "stop", reason: "terminal-code" };
  }
  if (facts.code === CloseCode.TOKEN_EXPIRED) {
    if (!facts.canRenewToken) {
      return { kind: "stop", reason: "token-expired" };
    }
    const delayMs = facts.attempt === 0 ? 0 : backoffDelay(facts.attempt, backoff, random);
    return { kind: "retry", delayMs, renewToken: true };
  }
  const renewToken = facts.canRenewToken && !facts.welcomed;
  const advised = facts.reconnectAfterMs;
  if (advised !== undefined && advised > 0) {
    return { kind: "retry", delayMs: advised, renewToken };
  }
  return { kind: "retry", delayMs: backoffDelay(facts.attempt, backoff, random), renewToken };
}
