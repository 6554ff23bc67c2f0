"""The official DigitalOcean client, pydo, against the ledger (tests/it/dialect_do.rs).

Usage: do_client.py BASE TOKEN DROPLET_ID

BASE is the server's root URL without /v2: pydo's operations build "/v2/actions",
"/v2/droplets/{id}/actions" themselves on top of `endpoint`. Bearer auth over plain HTTP
needs enforce_https=False on every call (azure-core's BearerTokenCredentialPolicy reads it
from the per-request options and refuses non-https URLs otherwise).
Prints one JSON object with every answer; the Rust test asserts on it.
"""
import json
import sys

from azure.core.exceptions import HttpResponseError
import pydo

base, token, droplet = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = pydo.Client(token=token, endpoint=base)
plain = {"enforce_https": False}  # the test server speaks plain HTTP
out = {}

out["list"] = client.actions.list(per_page=2, page=1, **plain)
out["list_page2"] = client.actions.list(per_page=2, page=2, **plain)
out["get"] = client.actions.get(action_id=2, **plain)

posted = client.droplet_actions.post(droplet_id=droplet, body={"type": "shutdown"}, **plain)
out["post"] = posted
action_id = posted["action"]["id"]

try:
    client.droplet_actions.post(droplet_id=droplet, body={"type": "power_off"}, **plain)
    out["busy"] = {"error": "the second post was accepted"}
except HttpResponseError as e:
    out["busy"] = {
        "status_code": e.status_code,
        "message": e.message,
        "body": e.response.json(),
    }

out["droplet_list"] = client.droplet_actions.list(droplet_id=droplet, per_page=10, **plain)
out["droplet_get"] = client.droplet_actions.get(droplet_id=droplet, action_id=action_id, **plain)
out["get_posted"] = client.actions.get(action_id=action_id, **plain)
out["get_missing"] = client.actions.get(action_id=999999, **plain)

print(json.dumps(out))
