/**
 * Routes each message to the account named in its body: `{ "account": "acme", ... }` is delivered,
 * whole, to acme. A body without an account can never be routed, so it is dead-lettered.
 */
import type { HandlerMessage, HandlerOutput } from "../src/handler-contract.ts";

export default async function handle(message: HandlerMessage): Promise<HandlerOutput> {
  const body = message.body as { account?: unknown } | null;
  if (typeof body?.account !== "string" || body.account === "") {
    throw Object.assign(new Error('body has no "account" string to route by'), { permanent: true });
  }
  return { account: body.account, payload: body };
}
