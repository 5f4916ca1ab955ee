/**
 * pm-realtime's browser client: connect to the gateway, subscribe, receive
 * events live, survive reconnects. See `PmClient`.
 */

export { backoffDelay, backoffOptions, DEFAULT_BACKOFF, type BackoffOptions, type Random } from "./backoff.js";
export {
  BEARER_SUBPROTOCOL_PREFIX,
  PmClient,
  SUBPROTOCOL,
  type ClientEventMap,
  type ConnectionState,
  type PmClientOptions,
  type Recovery,
  type StateChange,
  type Timers,
  type TokenProvider,
  type Update,
  type WebSocketFactory,
  type WebSocketLike,
} from "./client.js";
export { PmClientError } from "./errors.js";
export type { Ack, Event, Welcome } from "./gen/pm/v1/server_pb.js";
export type { Scope } from "./gen/pm/v1/common_pb.js";
export { advance, isSeen, type Position } from "./position.js";
export {
  CloseCode,
  planReconnect,
  TERMINAL_CLOSE_CODES,
  WebSocketCloseCode,
  type CloseFacts,
  type ReconnectPlan,
  type StopReason,
} from "./reconnect.js";
export { MAX_IDS_PER_MESSAGE, type Topics } from "./subscriptions.js";
export { jwtExpiresAtMs, refreshDelayMs, type TokenRequestReason } from "./token.js";
