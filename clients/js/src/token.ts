/**
 * Token timing: when to refresh a token before it expires. Pure; a JWT is read
 * (never verified: that is the server's job) only for its `exp` claim.
 */

/** Longest delay `setTimeout` honours; larger values fire at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** Why the client asks its token provider for a token. */
export type TokenRequestReason =
  /** The first connection, or a client built with no token. */
  | "connect"
  /** The server closed with 4001: the token expired. */
  | "expired"
  /** An attempt failed before the server's `Welcome`: the token may have been refused. */
  | "rejected"
  /** Proactive renewal shortly before `exp`, sent in-band as `RefreshToken`. */
  | "refresh";

/** `exp` × 1000 of a JWT, or undefined when the token is not a readable JWT. */
export function jwtExpiresAtMs(token: string): number | undefined {
  const payload = token.split(".")[1];
  if (payload === undefined || payload === "") {
    return undefined;
  }
  try {
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const claims: unknown = JSON.parse(atob(padded));
    if (typeof claims === "object" && claims !== null && "exp" in claims) {
      const exp = (claims as { exp: unknown }).exp;
      if (typeof exp === "number" && Number.isFinite(exp)) {
        return exp * 1000;
      }
    }
  } catch {
    return undefined;
  }
  return undefined;
}

/**
 * Milliseconds from `nowMs` until the client should refresh a token expiring
 * at `expiresAtMs` (both on the server's clock).
 *
 * The refresh happens `marginMs` before expiry, or halfway through what is
 * left when that is shorter, so a short-lived token is still refreshed in time.
 * Never negative; capped at `MAX_TIMER_MS` so a far expiry cannot overflow a timer.
 */
export function refreshDelayMs(expiresAtMs: number, nowMs: number, marginMs: number): number {
  const remaining = expiresAtMs - nowMs;
  if (!(remaining > 0)) {
    return 0;
  }
  const margin = Math.min(Math.max(0, marginMs), remaining / 2);
  return Math.min(MAX_TIMER_MS, Math.max(0, Math.floor(remaining - margin)));
}
