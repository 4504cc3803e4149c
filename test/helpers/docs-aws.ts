/**
 * The `aws` CLI commands the docs show against LocalStack, parsed as a shell would split them, so
 * the docs test can check their names and run what they do with the SDK (no aws CLI here).
 */

export interface AwsCommand {
  /** The line as written, for failure messages. */
  text: string;
  endpointUrl: string | undefined;
  service: string;
  command: string;
  options: Record<string, string | true>;
  positional: string[];
}

/**
 * Splits one command line like sh: '...' literal, "..." with \" and \\ escapes, bare words; an
 * unquoted `|`, `||`, `&&` or `;` ends a command. Returns the words of each command.
 */
export function shellCommands(line: string): string[][] {
  const commands: string[][] = [[]];
  let word: string | undefined;
  const endWord = () => {
    if (word !== undefined) commands[commands.length - 1]?.push(word);
    word = undefined;
  };
  for (let i = 0; i < line.length; i++) {
    const c = line[i] as string;
    if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw new Error(`unclosed ' in: ${line}`);
      word = (word ?? "") + line.slice(i + 1, end);
      i = end;
    } else if (c === '"') {
      let text = "";
      for (i++; i < line.length && line[i] !== '"'; i++) {
        if (line[i] === "\\" && /["\\$`]/.test(line[i + 1] ?? "")) i++;
        text += line[i];
      }
      if (i >= line.length) throw new Error(`unclosed " in: ${line}`);
      word = (word ?? "") + text;
    } else if (c === "\\") {
      word = (word ?? "") + (line[++i] ?? "");
    } else if (c === "|" || c === ";" || (c === "&" && line[i + 1] === "&")) {
      endWord();
      if (line[i + 1] === c) i++;
      commands.push([]);
    } else if (/\s/.test(c)) {
      endWord();
    } else if (c === "#" && word === undefined) {
      break;
    } else {
      word = (word ?? "") + c;
    }
  }
  endWord();
  return commands.filter((words) => words.length > 0);
}

/** The logical lines of a shell block: continuations joined, comments and blank lines dropped. */
export function shellLines(code: string): string[] {
  return code
    .replace(/\\\n/g, " ")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"));
}

/** Every `aws` command of a shell block (pipelines and `&&` chains split; other commands skipped). */
export function awsCommands(code: string): AwsCommand[] {
  const commands: AwsCommand[] = [];
  for (const line of shellLines(code)) {
    for (const words of shellCommands(line)) {
      if (words[0] !== "aws") continue;
      const options: Record<string, string | true> = {};
      const positional: string[] = [];
      for (let i = 1; i < words.length; i++) {
        const w = words[i] as string;
        if (w.startsWith("--")) {
          const next = words[i + 1];
          if (next === undefined || next.startsWith("--")) options[w.slice(2)] = true;
          else {
            options[w.slice(2)] = next;
            i++;
          }
        } else positional.push(w);
      }
      const endpoint = options["endpoint-url"];
      delete options["endpoint-url"];
      const [service = "", command = "", ...rest] = positional;
      commands.push({
        text: words.join(" "),
        endpointUrl: typeof endpoint === "string" ? endpoint : undefined,
        service,
        command,
        options,
        positional: rest,
      });
    }
  }
  return commands;
}

/** `s3://bucket/some/prefix` → { bucket, prefix }. */
export function s3Location(uri: string): { bucket: string; prefix: string } {
  const m = /^s3:\/\/([^/]+)\/?(.*)$/.exec(uri);
  if (!m) throw new Error(`not an s3:// location: ${uri}`);
  return { bucket: m[1] as string, prefix: m[2] as string };
}
