"""python -m trainyard.specs -> prints the JSON Schemas of the specs (see `make schemas`)."""
from __future__ import annotations

import json

from trainyard.specs.models import json_schemas

print(json.dumps(json_schemas(), indent=2, sort_keys=True))
