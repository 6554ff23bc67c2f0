"""Prints the installed versions of the dialect clients as JSON (tests/it/clients.rs)."""
import json
from importlib.metadata import version

import keystoneauth1  # noqa: F401  (importable, not only installed)
import novaclient.client  # noqa: F401
import pydo  # noqa: F401

print(json.dumps({name: version(name) for name in ["python-novaclient", "keystoneauth1", "pydo"]}))
