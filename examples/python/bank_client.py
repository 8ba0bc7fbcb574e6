#!/usr/bin/env python3
"""A bank's Corelink client: sends one signed status callback to the connector over mTLS.

It does what a bank's own system must do (see docs/BANK-INTEGRATION.md), with standard
libraries only: jwcrypto signs the request claims as a compact JWS with the bank's private JWK,
requests sends the exact body bytes with the bank's client certificate.

    python bank_client.py --url https://127.0.0.1:8443 --client-id BANK_X \
        --key bank.private.jwk --cert bank_x.pem --cert-key bank_x.key --cacert ca.pem \
        --reference PAY-2025-0002 --status SUCCESS

Exit status: 0 when the connector answered 200 (durably accepted), 1 otherwise.
"""

import argparse
import base64
import hashlib
import json
import secrets
import sys
from datetime import datetime, timezone

import requests
from jwcrypto import jwk, jws


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def utc_now() -> str:
    # RFC 3339, UTC, whole seconds: the form the connector documents (`Z`).
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def unit_body(reference: str, status: str) -> bytes:
    order = {"reference": reference, "bank_reference": "BNK-" + reference,
             "status": status, "processed_at": utc_now()}
    if status == "FAILED":
        order["reasonCode"] = "BUS_INSUFFICIENT_FUNDS"
        order["reasonMessage"] = "Insufficient balance"
    return json.dumps(order).encode("utf-8")


def sign(key: jwk.JWK, claims: dict) -> str:
    """The compact JWS over the claims; the protected header names the key's alg and kid."""
    alg, kid = key.get("alg"), key.key_id
    if not alg or not kid:
        raise SystemExit("the private JWK must carry `alg` and `kid` (as registered with the connector)")
    token = jws.JWS(json.dumps(claims, separators=(",", ":")).encode("utf-8"))
    token.add_signature(key, alg=alg, protected=json.dumps({"alg": alg, "kid": kid}))
    return token.serialize(compact=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the connector's base URL, e.g. https://127.0.0.1:8443")
    parser.add_argument("--client-id", required=True, help="your X-Client-Id, e.g. BANK_X")
    parser.add_argument("--key", required=True, help="your private JWK (with kid and alg)")
    parser.add_argument("--cert", required=True, help="your client certificate (PEM)")
    parser.add_argument("--cert-key", required=True, help="its private key (PEM)")
    parser.add_argument("--cacert", required=True, help="the CA that issued the connector's server certificate")
    parser.add_argument("--path", default="/callbacks/orders/status", help="the route (batch: /callbacks/orders/status/batch)")
    body = parser.add_mutually_exclusive_group(required=True)
    body.add_argument("--body", help="a JSON body file, sent byte for byte")
    body.add_argument("--reference", help="build a unit body for this order reference")
    parser.add_argument("--status", default="SUCCESS", choices=["PENDING", "SUCCESS", "FAILED"])
    parser.add_argument("--idempotency-key", help="default: the body's batch_id, else its reference")
    args = parser.parse_args()

    with open(args.key, encoding="utf-8") as f:
        key = jwk.JWK.from_json(f.read())
    if args.body:
        with open(args.body, "rb") as f:
            body_bytes = f.read()
    else:
        body_bytes = unit_body(args.reference, args.status)
    parsed = json.loads(body_bytes)
    idempotency_key = args.idempotency_key or parsed.get("batch_id") or parsed.get("reference")
    if not idempotency_key:
        raise SystemExit("the body has neither batch_id nor reference: pass --idempotency-key")

    headers = {
        "Content-Type": "application/json",
        "X-Client-Id": args.client_id,
        "X-Timestamp": utc_now(),
        "X-Nonce": secrets.token_hex(16),  # fresh for every request, a retry included
        "X-Idempotency-Key": idempotency_key,  # the same for every retry of this request
    }
    claims = {
        "method": "POST",
        "path": args.path,
        "client_id": headers["X-Client-Id"],
        "timestamp": headers["X-Timestamp"],
        "nonce": headers["X-Nonce"],
        "idempotency_key": headers["X-Idempotency-Key"],
        "content_type": headers["Content-Type"],
        "body_sha256": b64url(hashlib.sha256(body_bytes).digest()),
    }
    headers["X-Signature"] = sign(key, claims)

    response = requests.post(args.url.rstrip("/") + args.path, data=body_bytes, headers=headers,
                             cert=(args.cert, args.cert_key), verify=args.cacert, timeout=30)
    print(response.status_code, response.text)
    return 0 if response.status_code == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
