/**
 * Reconnect delays: exponential backoff with jitter. Pure; no timers here.
 */

/** How reconnect delays grow. All values in milliseconds. */
export interface BackoffOptions {
  /** Ceiling of the first delay. */
  readonly initialMs: number;
  /** No delay is longer than this. */
  readonly maxMs: number;
  /** Each failed attempt multiplies the ceiling by this. */
  readonly multiplier: number;
  /**
   * Share of the ceiling that is random, 0..1: with 0.5 a delay falls in
   * [ceiling / 2, ceiling). Jitter keeps a fleet of clients that lost the same
   * server from reconnecting in lockstep.
   */
  readonly jitter: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = Object.freeze({
  initialMs: 500,
  maxMs: 30_000,
  multiplier: 2,
  jitter: 0.5,
});

/** A source of uniformly distributed numbers in [0, 1), like `Math.random`. */
export type Random = () => number;

/**
 * The delay before reconnect attempt number `attempt` (0 for the first retry).
 *
 * The ceiling is `initialMs × multiplier^attempt`, capped at `maxMs`; the delay
 * is drawn from the top `jitter` share of it. Never negative, never above
 * `maxMs`, and finite for any attempt count.
 */
export function backoffDelay(
  attempt: number,
  options: BackoffOptions = DEFAULT_BACKOFF,
  random: Random = Math.random,
): number {
  const exponent = Math.max(0, Math.floor(attempt));
  const ceiling = Math.min(options.maxMs, options.initialMs * options.multiplier ** exponent);
  const jitter = Math.min(1, Math.max(0, options.jitter));
  const spread = ceiling * jitter;
  const sample = Math.min(Math.max(random(), 0), 1);
  return Math.max(0, Math.min(options.maxMs, Math.round(ceiling - spread + sample * spread)));
}

/** Fills the options a caller left out with the defaults, and rejects nonsense. */
export function backoffOptions(partial: Partial<BackoffOptions> = {}): BackoffOptions {
  const options = { ...DEFAULT_BACKOFF, ...partial };
  if (!(options.initialMs >= 0 && options.maxMs >= options.initialMs && options.multiplier >= 1)) {
    throw new RangeError("backoff needs 0 <= initialMs <= maxMs and multiplier >= 1");
  }
  if (!(options.jitter >= 0 && options.jitter <= 1)) {
    throw new RangeError("backoff jitter must be within 0..1");
  }
  return Object.freeze(options);
}
