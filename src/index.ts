/** The package's public surface: the handler contract, and the service for embedding. */

export { type Config, loadConfig } from "./config.ts";
export type { Handler, HandlerMessage, HandlerOutput, HandlerResult } from "./handler-contract.ts";
export { PermanentError } from "./handler-contract.ts";
export { Service } from "./service.ts";
