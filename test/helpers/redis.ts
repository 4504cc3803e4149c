/**
 * A real redis-server for a test file: loopback, a free port, no persistence (so a restart loses
 * everything, as a Redis without persistence would), stopped with SIGTERM after.
 *
 * `cluster` starts a one-node Redis Cluster holding every slot: it refuses a script whose keys are
 * in different slots (CROSSSLOT), as a real cluster does. `tls` serves TLS only, with a self-signed
 * certificate for localhost/127.0.0.1 (`ca` to trust it). `user` adds an ACL user and requires AUTH.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createConnection, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as connectTls } from "node:tls";

const REDIS_SERVER = process.env.REDIS_SERVER ?? "/usr/bin/redis-server";

export interface RedisServer {
  port: number;
  /** redis://127.0.0.1:<port>, or rediss://user:password@localhost:<port> with tls and user. */
  url: string;
  /** The self-signed CA of a tls server. */
  ca: string | undefined;
  /** Stops it (SIGTERM) and waits for its exit; `restart()` can start it again. */
  stop(): Promise<void>;
  /** Stops it if running and starts it again, empty, on the same port. */
  restart(): Promise<void>;
  /**
   * Runs one command on a short-lived connection, for INFO, DBSIZE and the like; the reply's text.
   * Rejects if the server closes the connection before replying (SHUTDOWN does).
   */
  command(...args: string[]): Promise<string>;
  /**
   * Freezes the process (SIGSTOP): connections stay open and nothing is answered, as with a Redis
   * that hangs or a node gone behind a live socket. `resume()` (SIGCONT) lets it answer again.
   */
  pause(): void;
  resume(): void;
}

export interface RedisServerOptions {
  cluster?: boolean;
  tls?: boolean;
  user?: { name: string; password: string };
}

/** Every server still running; a file that fails must not leave one behind it. */
const running = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

export async function startRedis(options: RedisServerOptions = {}): Promise<RedisServer> {
  if (!existsSync(REDIS_SERVER)) {
    throw new Error(`${REDIS_SERVER} not found: apt-get install redis-server (or set REDIS_SERVER)`);
  }
  const port = await freePort();
  const home = mkdtempSync(join(tmpdir(), "octorelay-redis-"));
  const dataDir = join(home, "data");
  const ca = options.tls ? selfSignedCertificate(home) : undefined;
  const args = [
    ...(options.tls
      ? ["--port", "0", "--tls-port", String(port), "--tls-auth-clients", "no"]
      : ["--port", String(port)]),
    ...(options.tls
      ? ["--tls-cert-file", join(home, "cert.pem"), "--tls-key-file", join(home, "key.pem")]
      : []),
    ...["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dataDir],
    ...(options.cluster
      ? [
          "--cluster-enabled",
          "yes",
          "--cluster-config-file",
          "nodes.conf",
          "--cluster-announce-ip",
          "127.0.0.1",
        ]
      : []),
    ...(options.user
      ? [
          "--user",
          "default",
          "off",
          "--user",
          options.user.name,
          "on",
          `>${options.user.password}`,
          "~*",
          "&*",
          "+@all",
        ]
      : []),
  ];
  const auth = options.user ? [["AUTH", options.user.name, options.user.password]] : [];
  const run = (command: string[]) =>
    send(port, [...auth, command], ca).then((replies) => replies[replies.length - 1] as string);
  let child: ChildProcess | undefined;

  const start = async () => {
    // A node's cluster config would bring back its slots: a restart starts empty, like the data.
    rmSync(dataDir, { recursive: true, force: true });
    mkdirSync(dataDir, { recursive: true });
    const proc = spawn(REDIS_SERVER, args, { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    proc.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
      output += chunk;
    });
    proc.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
      output += chunk;
    });
    running.add(proc);
    proc.once("exit", () => running.delete(proc));
    child = proc;
    const deadline = Date.now() + 10_000;
    while ((await run(["PING"]).catch(() => "")) !== "+PONG") {
      if (proc.exitCode !== null || Date.now() > deadline) {
        proc.kill("SIGKILL");
        throw new Error(`redis-server on port ${port} did not answer PING:\n${output}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    if (options.cluster) {
      await run(["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]);
      while (!(await run(["CLUSTER", "INFO"])).includes("cluster_state:ok")) {
        if (Date.now() > deadline)
          throw new Error(`redis cluster on port ${port} never reached cluster_state:ok`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }
  };

  const stop = async () => {
    const proc = child;
    child = undefined;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((resolve) => proc.once("exit", resolve));
    proc.kill("SIGTERM");
    // A paused server acts on the SIGTERM only once it runs again.
    proc.kill("SIGCONT");
    await exited;
  };

  await start();
  const credentials = options.user
    ? `${encodeURIComponent(options.user.name)}:${encodeURIComponent(options.user.password)}@`
    : "";
  return {
    port,
    url: options.tls ? `rediss://${credentials}localhost:${port}` : `redis://${credentials}127.0.0.1:${port}`,
    ca,
    async stop() {
      await stop();
      rmSync(home, { recursive: true, force: true });
    },
    async restart() {
      await stop();
      await start();
    },
    command: (...command: string[]) => run(command),
    pause() {
      if (!child || child.exitCode !== null) throw new Error(`redis-server on port ${port} is not running`);
      child.kill("SIGSTOP");
    },
    resume() {
      child?.kill("SIGCONT");
    },
  };
}

/** A key and a self-signed certificate for localhost and 127.0.0.1 in `dir`; returns the certificate (its own CA). */
function selfSignedCertificate(dir: string): string {
  const cert = join(dir, "cert.pem");
  try {
    execFileSync(
      "openssl",
      [
        ...["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"],
        ...[
          "-addext",
          "subjectAltName=DNS:localhost,IP:127.0.0.1",
          "-keyout",
          join(dir, "key.pem"),
          "-out",
          cert,
        ],
      ],
      { stdio: "ignore" },
    );
  } catch (err) {
    throw new Error(
      `could not make a test certificate with openssl (apt-get install openssl): ${String(err)}`,
    );
  }
  return readFileSync(cert, "utf8");
}

/** A port nothing listens on now (the kernel's pick, released at once). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? resolve(address.port) : reject()));
    });
  });
}

/** Commands over one fresh connection (TLS if `ca`); each reply's text (`+PONG`, a bulk string's body, `:5`). */
function send(port: number, commands: string[][], ca: string | undefined): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const socket: Socket = ca
      ? connectTls({ port, host: "127.0.0.1", servername: "localhost", ca })
      : createConnection({ port, host: "127.0.0.1" });
    let buffer = Buffer.alloc(0);
    socket.setTimeout(5_000, () => socket.destroy(new Error(`redis on port ${port}: no reply`)));
    socket.once("error", reject);
    // Closed without a (complete) reply, as after SHUTDOWN: a no-op once the replies resolved it.
    socket.once("close", () =>
      reject(new Error(`redis on port ${port}: connection closed before the reply`)),
    );
    socket.once(ca ? "secureConnect" : "connect", () => {
      socket.write(
        commands
          .map((c) => `*${c.length}\r\n${c.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`)
          .join(""),
      );
    });
    socket.on("data", (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      const replies = parseReplies(buffer, commands.length);
      if (!replies) return;
      socket.end();
      const error = replies.find((r) => r.startsWith("-"));
      if (error) reject(new Error(`redis: ${error.slice(1)}`));
      else resolve(replies);
    });
  });
}

/** `count` simple or bulk replies from the start of `buffer`, or undefined while more is to come. */
function parseReplies(buffer: Buffer, count: number): string[] | undefined {
  const replies: string[] = [];
  let at = 0;
  while (replies.length < count) {
    const eol = buffer.indexOf("\r\n", at);
    if (eol < 0) return undefined;
    const line = buffer.subarray(at, eol).toString("utf8");
    if (line[0] !== "$") {
      replies.push(line);
      at = eol + 2;
      continue;
    }
    const length = Number(line.slice(1));
    if (length < 0) {
      replies.push("");
      at = eol + 2;
      continue;
    }
    if (buffer.length < eol + 2 + length + 2) return undefined;
    replies.push(buffer.subarray(eol + 2, eol + 2 + length).toString("utf8"));
    at = eol + 2 + length + 2;
  }
  return replies;
}
