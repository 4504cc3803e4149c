/**
 * The package's public surface: the service for embedding. Handlers import their contract from
 * "octorelay/handler" (src/handler-contract.ts); it is re-exported here too.
 */

export { type Config, loadConfig } from "./config.ts";
export type {
  Handler,
  HandlerMessage,
  HandlerOutput,
  HandlerResult,
  RunHandlerOptions,
} from "./handler-contract.ts";
export { PermanentError, runHandler } from "./handler-contract.ts";
export { Service } from "./service.ts";
