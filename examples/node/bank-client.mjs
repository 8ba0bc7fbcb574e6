#!/usr/bin/env node
// A bank's Corelink client: sends one signed status callback to the connector over mTLS.
//
// It does what a bank's own system must do (see docs/BANK-INTEGRATION.md), with standard
// libraries only: `jose` signs the request claims as a compact JWS with the bank's private JWK,
// Node's `https` sends the exact body bytes with the bank's client certificate.
//
//   node bank-client.mjs --url https://127.0.0.1:8443 --client-id BANK_X \
//     --key bank.private.jwk --cert bank_x.pem --cert-key bank_x.key --cacert ca.pem \
//     --reference PAY-2025-0003 --status SUCCESS
//
// Exit status: 0 when the connector answered 200 (durably accepted), 1 otherwise.

import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import { parseArgs } from 'node:util';

import { CompactSign, importJWK } from 'jose';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    'client-id': { type: 'string' },
    key: { type: 'string' },
    cert: { type: 'string' },
    'cert-key': { type: 'string' },
    cacert: { type: 'string' },
    path: { type: 'string', default: '/callbacks/orders/status' },
    body: { type: 'string' },
    reference: { type: 'string' },
    status: { type: 'string', default: 'SUCCESS' },
    'idempotency-key': { type: 'string' },
  },
});
for (const name of ['url', 'client-id', 'key', 'cert', 'cert-key', 'cacert']) {
  if (!args[name]) fail(`--${name} is required`);
}
if (!args.body === !args.reference) fail('give either --body FILE or --reference REF');

// RFC 3339, UTC, whole seconds: the form the connector documents (`Z`).
const utcNow = () => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');

function unitBody(reference, status) {
  const order = { reference, bank_reference: `BNK-${reference}`, status, processed_at: utcNow() };
  if (status === 'FAILED') {
    order.reasonCode = 'BUS_INSUFFICIENT_FUNDS';
    order.reasonMessage = 'Insufficient balance';
  }
  return Buffer.from(JSON.stringify(order), 'utf8');
}

const jwk = JSON.parse(readFileSync(args.key, 'utf8'));
if (!jwk.alg || !jwk.kid) fail('the private JWK must carry `alg` and `kid` (as registered with the connector)');
const key = await importJWK(jwk, jwk.alg);

const body = args.body ? readFileSync(args.body) : unitBody(args.reference, args.status);
const parsed = JSON.parse(body.toString('utf8'));
const idempotencyKey = args['idempotency-key'] ?? parsed.batch_id ?? parsed.reference;
if (!idempotencyKey) fail('the body has neither batch_id nor reference: pass --idempotency-key');

const headers = {
  'Content-Type': 'application/json',
  'X-Client-Id': args['client-id'],
  'X-Timestamp': utcNow(),
  'X-Nonce': randomBytes(16).toString('hex'), // fresh for every request, a retry included
  'X-Idempotency-Key': idempotencyKey, // the same for every retry of this request
};
const claims = {
  method: 'POST',
  path: args.path,
  client_id: headers['X-Client-Id'],
  timestamp: headers['X-Timestamp'],
  nonce: headers['X-Nonce'],
  idempotency_key: headers['X-Idempotency-Key'],
  content_type: headers['Content-Type'],
  body_sha256: createHash('sha256').update(body).digest('base64url'),
};
headers['X-Signature'] = await new CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
  .setProtectedHeader({ alg: jwk.alg, kid: jwk.kid })
  .sign(key);

const url = new URL(args.path, args.url);
const answer = await new Promise((resolve, reject) => {
  const req = request(url, {
    method: 'POST',
    headers: { ...headers, 'Content-Length': body.length },
    cert: readFileSync(args.cert),
    key: readFileSync(args['cert-key']),
    ca: readFileSync(args.cacert),
    timeout: 30_000,
  }, (res) => {
    let text = '';
    res.setEncoding('utf8');
    res.on('data', (chunk) => { text += chunk; });
    res.on('end', () => resolve({ status: res.statusCode, text }));
  });
  req.on('timeout', () => req.destroy(new Error('no answer within 30 s')));
  req.on('error', reject);
  req.end(body);
});
console.log(answer.status, answer.text);
process.exit(answer.status === 200 ? 0 : 1);

function fail(message) {
  console.error(`bank-client: ${message}`);
  process.exit(2);
}
