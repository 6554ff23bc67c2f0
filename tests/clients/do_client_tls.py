"""pydo against the ledger's TLS listener (tests/it/tls.rs), with no enforce_https=False.

Usage: do_client_tls.py BASE TOKEN

BASE is the server's https:// root URL. The test CA is trusted through REQUESTS_CA_BUNDLE
(set by the Rust test; azure-core's requests transport honours it). Prints one JSON object;
the Rust test asserts on it.
"""
import json
import sys

import certifi
from azure.core.exceptions import ServiceRequestError
import pydo

base, token = sys.argv[1], sys.argv[2]
client = pydo.Client(token=token, endpoint=base)
out = {}
out["list"] = client.actions.list(per_page=10, page=1)
action_id = out["list"]["actions"][0]["id"]
out["get"] = client.actions.get(action_id=action_id)

# With the public roots only (not the test CA), the certificate is refused.
try:
    client.actions.list(per_page=1, connection_verify=certifi.where())
    out["untrusted"] = "the certificate was accepted"
except ServiceRequestError as e:
    out["untrusted"] = str(e)

print(json.dumps(out))
