/**
 * Routes each message to the account named in its body: `{ "account": "acme", ... }` is delivered,
 * whole, to acme. A body without an account can never be routed, so it is dead-lettered.
 *
 * OCTORELAY_ACCOUNT_FIELD names another field to route by, a dot path (`tenant.id`); `octorelay try
 * passthrough --account-field tenant.id` sets it.
 */
import { type HandlerMessage, type HandlerOutput, PermanentError } from "octorelay/handler";

const FIELD = process.env.OCTORELAY_ACCOUNT_FIELD || "account";
const PATH = FIELD.split(".");

export default async function handle(message: HandlerMessage): Promise<HandlerOutput> {
  let value: unknown = message.body;
  for (const key of PATH) value = (value as Record<string, unknown> | null)?.[key];
  if (typeof value !== "string" || value === "") {
    throw new PermanentError(`body has no ${JSON.stringify(FIELD)} string to route by`);
  }
  return { account: value, payload: message.body };
}
