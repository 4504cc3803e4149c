import { type DestinationStream, type Logger, pino } from "pino";
import type { LogLevel } from "./config.ts";

export interface LoggerOptions {
  /** Where the JSON lines go instead of stdout (demo and try render or read them). */
  destination?: DestinationStream;
  /** Fields added to each line, from the fields it was logged with. */
  mixin?: (fields: object) => object;
}

/** Structured JSON logs, one line per event, to stdout unless a destination is given. */
export function createLogger(level: LogLevel, options: LoggerOptions = {}): Logger {
  const settings = {
    level,
    base: { service: "octorelay" },
    redact: {
      paths: ["*.secretAccessKey", "*.sessionToken", "*.authorization", "*.Authorization", "*.token"],
      censor: "[redacted]",
    },
    ...(options.mixin ? { mixin: options.mixin } : {}),
  };
  return options.destination ? pino(settings, options.destination) : pino(settings);
}
