// tlscheck: Node's tls module on both sides, for the interop suite.
//
// Reads a JSON request on stdin:
//   {"ca": "bundle.pem", "crls": {"set": "crls.pem", "expired": "..."},
//    "client": [{"id", "port", "host", "crl": "set"|"expired"|"none"}],        // Node as a TLS client (servers elsewhere)
//    "gate": {"chain", "key", "host"},                                          // the certificate Node's servers present
//    "server": [{"id", "chain"|null, "key"|null, "crl": "set"|"expired"|"single"}]}  // Node as an mTLS server
// and writes {"client": {id: {ok, reason}}, "server": {id: {ok, reason}}} on stdout.
//
// `crl` takes one CRL per string or Buffer (it reads the first CRL of each and ignores
// the rest), so a file of several CRLs is split; "single" passes the whole file as one
// buffer, to show what that does.
"use strict";
const fs = require("fs");
const tls = require("tls");

const TIMEOUT_MS = 10000;

function splitCrls(text) {
  return text.split(/(?=-----BEGIN X509 CRL-----)/).filter((s) => s.includes("-----BEGIN X509 CRL-----"));
}

function readStdin() {
  return new Promise((resolve) => {
    const chunks = [];
    process.stdin.on("data", (c) => chunks.push(c));
    process.stdin.on("end", () => resolve(JSON.parse(Buffer.concat(chunks).toString("utf8"))));
  });
}

function crlOption(req, kind) {
  if (kind === "none") return undefined;
  if (kind === "single") return [fs.readFileSync(req.crls.set, "utf8")];
  return splitCrls(fs.readFileSync(req.crls[kind], "utf8"));
}

function clientProbe(req, c) {
  return new Promise((resolve) => {
    let done = false;
    const finish = (r) => { if (!done) { done = true; clearTimeout(timer); sock.destroy(); resolve(r); } };
    const opts = { host: "127.0.0.1", port: c.port, servername: c.host, ca: fs.readFileSync(req.ca) };
    const crl = crlOption(req, c.crl);
    if (crl) opts.crl = crl;
    const sock = tls.connect(opts, () => finish({ ok: sock.authorized, reason: sock.authorized ? "" : String(sock.authorizationError) }));
    sock.on("error", (e) => finish({ ok: false, reason: `${e.code || ""} ${e.message}` }));
    const timer = setTimeout(() => finish({ ok: false, reason: "timeout" }), TIMEOUT_MS);
  });
}

// The server under test (rejectUnauthorized: true) decides; it drops a refused client
// without saying why, so a twin with rejectUnauthorized: false, the same options
// otherwise, tells the reason (the verify error OpenSSL gave it).
async function startServer(req, kind, reject) {
  const opts = {
    key: fs.readFileSync(req.gate.key), cert: fs.readFileSync(req.gate.chain), ca: fs.readFileSync(req.ca),
    crl: crlOption(req, kind), requestCert: true, rejectUnauthorized: reject,
  };
  const state = { lastError: null, waiters: [] };
  const server = tls.createServer(opts, (sock) => {
    sock.on("error", () => {});
    if (!reject && !sock.authorized) state.lastError = { code: sock.authorizationError, message: "" };
    sock.end("accepted\n");
  });
  server.on("tlsClientError", (err) => { state.lastError = err; state.waiters.splice(0).forEach((w) => w()); });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, state, port: server.address().port };
}

function serverProbe(req, srv, s) {
  srv.state.lastError = null;
  return new Promise((resolve) => {
    let done = false;
    let data = "";
    const finish = (clientReason) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (data.startsWith("accepted")) return resolve({ ok: true, reason: "" });
      // the server's own reason comes with its tlsClientError; wait a little for it
      const report = () => {
        const e = srv.state.lastError;
        resolve({ ok: false, reason: e ? `${e.code || ""} ${e.message}` : `client: ${clientReason}` });
      };
      if (srv.state.lastError) return report();
      const t = setTimeout(report, 1000);
      srv.state.waiters.push(() => { clearTimeout(t); report(); });
    };
    const opts = { host: "127.0.0.1", port: srv.port, servername: req.gate.host, ca: fs.readFileSync(req.ca) };
    if (s.chain) { opts.cert = fs.readFileSync(s.chain); opts.key = fs.readFileSync(s.key); }
    const sock = tls.connect(opts);
    sock.setEncoding("utf8");
    sock.on("data", (d) => { data += d; });
    sock.on("end", () => finish("closed"));
    sock.on("close", () => finish("closed"));
    sock.on("error", (e) => finish(`${e.code || ""} ${e.message}`));
    const timer = setTimeout(() => finish("timeout"), TIMEOUT_MS);
  });
}

async function main() {
  const req = await readStdin();
  const out = { client: {}, server: {} };
  for (const c of req.client || []) out.client[c.id] = await clientProbe(req, c);
  const servers = {};
  for (const s of req.server || []) {
    if (!servers[s.crl]) servers[s.crl] = [await startServer(req, s.crl, true), await startServer(req, s.crl, false)];
    const [real, twin] = servers[s.crl];
    const r = await serverProbe(req, real, s);
    if (!r.ok && /ECONNRESET|hang up|closed/.test(r.reason)) {
      const why = await serverProbe(req, twin, s);
      r.reason = twin.state.lastError ? `${twin.state.lastError.code} ${twin.state.lastError.message}`.trim() : `${r.reason} (${why.reason})`;
    }
    out.server[s.id] = r;
  }
  for (const pair of Object.values(servers)) pair.forEach((srv) => srv.server.close());
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((e) => { console.error(e); process.exit(2); });
