import JSON5 from "json5";

/**
 * Parses JSON or JSON5. Plain JSON goes through JSON.parse (a partners file can be megabytes);
 * anything else through JSON5, whose errors carry a line and a column: `file:3:5: invalid character '/'`.
 */
export function parseJson(text: string, file: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    try {
      return JSON5.parse(text);
    } catch (err) {
      const e = err as SyntaxError & { lineNumber?: number; columnNumber?: number };
      const reason = e.message.replace(/^JSON5: /, "").replace(/ at \d+:\d+$/, "");
      throw new Error(
        e.lineNumber ? `${file}:${e.lineNumber}:${e.columnNumber}: ${reason}` : `${file}: ${reason}`,
      );
    }
  }
}
