"""The real python-novaclient against the ledger's Nova dialect (tests/it/dialect_nova.rs).

Usage: nova_client.py BASE PROJECT SERVER ADMIN_TOKEN READER_TOKEN CHANGES_SINCE

The ledger holds, on server SERVER of project PROJECT, five finished `reboot` actions and
then a `resize` whose `compute_resize_instance` event failed with a traceback and details
on host `compute` (see the Rust test). novaclient is used unmodified, with a keystoneauth1
session whose auth plugin is `token_endpoint.Token` (it sends `X-Auth-Token`), and
`endpoint_override` pointing at the dialect's `/v2.1` prefix. The script asserts what a
client relies on and prints a JSON summary that the Rust test compares with the ledger.
"""
import json
import sys

from keystoneauth1 import session, token_endpoint
from novaclient import api_versions, client, exceptions

BASE, PROJECT, SERVER, ADMIN, READER, CHANGES_SINCE = sys.argv[1:7]


def nova(token, version, endpoint):
    sess = session.Session(auth=token_endpoint.Token(endpoint, token))
    # The plugin authenticates every request with the X-Auth-Token header.
    assert sess.get_auth_headers() == {"X-Auth-Token": token}, sess.get_auth_headers()
    return client.Client(version, session=sess, endpoint_override=endpoint)


def ids(actions):
    return [a.request_id for a in actions]


scoped = f"{BASE}/v2.1/{PROJECT}"
unscoped = f"{BASE}/v2.1"
out = {}

# Version discovery as novaclient's shell does it for "2.latest": GET the endpoint's version
# document (GET /v2.1 unscoped, GET /v2.1/PROJECT scoped), then the highest version both
# sides support.
latest = api_versions.APIVersion("2.latest")
probe = nova(READER, "2.1", unscoped)
out["negotiated"] = api_versions.discover_version(probe, latest).get_string()
out["negotiated_scoped"] = api_versions.discover_version(
    nova(READER, "2.1", scoped), latest
).get_string()
assert api_versions.discover_version(probe, api_versions.APIVersion("2.84")).get_string() == "2.84"
current = probe.versions.get_current()
out["server_version"] = [current.min_version, current.version]
out["versions"] = sorted(v.id for v in probe.versions.list())

admin = nova(ADMIN, "2.84", scoped)
reader = nova(READER, "2.84", scoped)

# List: newest first; limit + marker page through it; changes-since filters.
everything = reader.instance_action.list(SERVER)
out["all"] = ids(everything)
assert len(everything) == 6, out["all"]
assert all(a.instance_uuid == SERVER and a.project_id == PROJECT for a in everything)
assert all(hasattr(a, "updated_at") for a in everything), "2.58+ lists carry updated_at"
pages, marker = [], None
while True:
    page = reader.instance_action.list(SERVER, marker=marker, limit=4)
    pages.append(ids(page))
    if len(page) < 4:
        break
    marker = page[-1].request_id
out["pages"] = pages
assert sum(pages, []) == out["all"], pages
out["changes_since"] = ids(reader.instance_action.list(SERVER, changes_since=CHANGES_SINCE))
out["changes_before"] = ids(
    reader.instance_action.list(SERVER, changes_before=CHANGES_SINCE, limit=2)
)

# Show at 2.84: the admin sees host, traceback and details; a reader none of them, but
# hostId, and the events all the same.
resize = out["all"][0]
a = admin.instance_action.get(SERVER, resize)
r = reader.instance_action.get(SERVER, resize)
assert a.action == r.action == "resize"
assert a.message == r.message == "Error", (a.message, r.message)
out["admin_events"] = a.events
out["reader_events"] = r.events
for e in a.events:
    assert {"host", "hostId", "traceback", "details"} <= set(e), e
for e in r.events:
    assert not {"host", "traceback", "details"} & set(e), e
    assert "hostId" in e, e
failed = [e for e in a.events if e["result"] == "Error"]
assert len(failed) == 1 and "ResizeError" in failed[0]["traceback"], a.events
out["show_fields"] = sorted(k for k in a.to_dict() if k != "events")

# Older microversions: at 2.1 a reader gets no events at all; at 2.50 neither; at 2.51 yes.
for v in ["2.1", "2.50", "2.51"]:
    shown = nova(READER, v, scoped).instance_action.get(SERVER, resize)
    out[f"reader_events_at_{v}"] = hasattr(shown, "events")
old = nova(READER, "2.1", scoped).instance_action.list(SERVER)
assert not hasattr(old[0], "updated_at"), "no updated_at before 2.58"

# Faults arrive as novaclient's exception classes with Nova's messages.
errors = {}
try:
    reader.instance_action.get(SERVER, "req-nosuch")
except exceptions.NotFound as e:
    errors["unknown_action"] = [e.code, e.message]
try:
    reader.instance_action.list("no-such-server")
except exceptions.NotFound as e:
    errors["unknown_server"] = [e.code, e.message]
try:
    reader.instance_action.list(SERVER, marker="req-nosuch")
except exceptions.BadRequest as e:
    errors["bad_marker"] = [e.code, e.message]
try:
    nova(READER, "2.84", f"{BASE}/v2.1/someone-else").instance_action.list(SERVER)
except exceptions.BadRequest as e:
    errors["project_mismatch"] = [e.code, e.message]
try:
    nova("not-a-token", "2.84", scoped).instance_action.list(SERVER)
except exceptions.Unauthorized as e:
    errors["bad_token"] = [e.code]
out["errors"] = errors
assert api_versions.APIVersion(out["negotiated"]) >= api_versions.APIVersion("2.84")

print(json.dumps(out, sort_keys=True))
