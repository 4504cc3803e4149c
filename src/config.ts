/**
 * The configuration: what the service runs with, from files, the environment and overrides.
 * Everything lives in src/config/:
 *
 *   definitions.ts        every key, declared once: default, doc, validation, env var
 *   types.ts              the types loadConfig returns, derived from the definitions
 *   formats.ts            what a valid value looks like, and the messages when it is not
 *   layers.ts             the top level: files, overrides and the environment, layered (convict)
 *   queues.ts             the `queues` entries
 *   partner-overrides.ts  `partners.accounts` and the partners file
 *   destinations.ts       destination checks: what a type requires, fields nothing reads
 *   merge.ts              a partner's destination over its queue's, narrowed to its type
 *   entries.ts            the per-entry definitions compiled into plain checks
 *   json.ts               JSON / JSON5 files, errors with file:line:col
 *   redact.ts             URLs as messages may show them (no passwords, no query values)
 *   load.ts               loadConfig, putting these together
 *   docs.ts               the README's configuration tables, rendered from the definitions
 */
import { narrowDestination } from "./config/merge.ts";
import type { DestinationConfig } from "./config/types.ts";

export { APP_ROOT, loadConfig } from "./config/load.ts";
export { narrowDestination, partnerDestination } from "./config/merge.ts";
export { queueNameOf } from "./config/queues.ts";
export { withoutSecrets } from "./config/redact.ts";
export type {
  ClusterConfig,
  Config,
  DestinationConfig,
  DestinationFields,
  DestinationOverride,
  DestinationType,
  DispatchConfig,
  HttpDestinationConfig,
  LoadOptions,
  LogLevel,
  OpsConfig,
  PartnerOverride,
  PartnersConfig,
  QueueConfig,
  S3DestinationConfig,
  SqsDestinationConfig,
} from "./config/types.ts";

/**
 * @deprecated A queue's destination is a DestinationConfig; kept while src/partners/directory.ts merges with
 * it. Use `partnerDestination(queue, override.destination)` instead.
 */
export type FlatDestination = DestinationConfig;

/**
 * @deprecated Narrows a destination to the fields its type reads; kept for src/partners/directory.ts. Use
 * `partnerDestination(queue, override.destination)`, which merges and narrows.
 */
export const toDestination: (d: DestinationConfig) => DestinationConfig = narrowDestination;
