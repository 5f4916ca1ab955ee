/**
 * The one error type the client throws or rejects with.
 */

/**
 * An error with a stable, machine-readable `code`.
 *
 * Codes from the server (`Error` frames answering a request) are those of
 * SPEC §2, e.g. `SUBSCRIPTION_LIMIT`, `RATE_LIMIT_EXCEEDED`, `TOKEN_EXPIRED`.
 * The client adds its own: `CONNECTION_CLOSED` (the connection ended before an
 * answer came), `CLIENT_CLOSED` (`close()` was called), `REQUEST_TIMEOUT`,
 * `BUFFER_OVERFLOW` (an `updates()` consumer fell behind), `TOKEN_UNAVAILABLE`
 * (the token provider failed), `BAD_FRAME` (undecodable server frame).
 */
export class PmClientError extends Error {
  override readonly name = "PmClientError";

  constructor(
    readonly code: string,
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}
