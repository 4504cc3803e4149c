import { type Logger, pino } from "pino";
import type { LogLevel } from "./config.ts";

/** Structured JSON logs to stdout; `pretty` (the demo) renders them for a terminal instead. */
export function createLogger(level: LogLevel, options: { pretty?: boolean } = {}): Logger {
  return pino({
    level,
    base: { service: "octorelay" },
    redact: {
      paths: ["*.secretAccessKey", "*.sessionToken", "*.authorization", "*.Authorization", "*.token"],
      censor: "[redacted]",
    },
    ...(options.pretty
      ? {
          transport: {
            target: "pino-pretty",
            options: { colorize: true, singleLine: true, destination: 2, ignore: "pid,hostname,service" },
          },
        }
      : {}),
  });
}
