/** How the CLI reports a failure: one line an operator can act on, the stack only on request. */
import { ConfigError } from "../errors.ts";

/** One line (one per problem for configuration), the stack only with OCTORELAY_DEBUG=1. */
export function reportError(command: string, err: unknown): number {
  const prefix = `octorelay ${command}`;
  if (err instanceof ConfigError) {
    process.stderr.write(`${prefix}: ${err.message}\n`);
    return 2;
  }
  process.stderr.write(`${prefix}: ${explainError(err)}\n`);
  if (process.env.OCTORELAY_DEBUG === "1" && err instanceof Error) process.stderr.write(`${err.stack}\n`);
  return 1;
}

const NO_CREDENTIALS =
  "could not reach AWS: no credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where an IAM role is attached)";

/** What went wrong, in words an operator can act on. */
export function explainError(err: unknown): string {
  if (isCredentialsError(err)) return NO_CREDENTIALS;
  if (err instanceof AggregateError && err.errors.some(isCredentialsError)) {
    return err.message.replace(/Could not load credentials from any providers/g, NO_CREDENTIALS);
  }
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === "ECONNREFUSED" || code === "ENOTFOUND") {
    return `could not reach AWS: ${(err as Error).message} (check AWS_ENDPOINT_URL and AWS_REGION)`;
  }
  return err instanceof Error ? err.message : String(err);
}

function isCredentialsError(err: unknown): boolean {
  return err instanceof Error && err.name === "CredentialsProviderError";
}
