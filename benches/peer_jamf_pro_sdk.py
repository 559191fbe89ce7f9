#!/usr/bin/env python3
"""Times the Python `jamf-pro-sdk` (PyPI) reading computer inventory from the jamf-sync
simulator, for the side-by-side figures in BENCHMARKS.md.

Usage: python3 benches/peer_jamf_pro_sdk.py URL [PAGE_SIZE] [MAX_CONCURRENCY]
where URL is the simulator's http://127.0.0.1:PORT (start it with
`jamf-sync simulate --port 0 --computers 2000 --latency-ms 20`).
Prints one JSON line: wall seconds, records, and the simulator's request count.
"""
import json
import sys
import time
import urllib.request
from urllib.parse import urlparse

from jamf_pro_sdk import ApiClientCredentialsProvider, JamfProClient, SessionConfig

url = urlparse(sys.argv[1])
page_size = int(sys.argv[2]) if len(sys.argv) > 2 else 100
concurrency = int(sys.argv[3]) if len(sys.argv) > 3 else 5
sections = ["GENERAL", "HARDWARE", "OPERATING_SYSTEM", "USER_AND_LOCATION", "EXTENSION_ATTRIBUTES"]


def sim_requests():
    with urllib.request.urlopen(f"{sys.argv[1]}/_sim/stats") as r:
        return json.load(r)["requests"]


client = JamfProClient(
    server=url.hostname,
    port=url.port,
    credentials=ApiClientCredentialsProvider("jamf-sync-sim", "sim-secret"),
    session_config=SessionConfig(scheme="http", max_concurrency=concurrency),
)
before = sim_requests()
start = time.monotonic()
computers = client.pro_api.get_computer_inventory_v3(sections=sections, page_size=page_size)
wall = time.monotonic() - start
after = sim_requests()
print(json.dumps({
    "peer": "jamf-pro-sdk",
    "records": len(computers),
    "wall_secs": round(wall, 3),
    "requests": after - before - 1,
    "page_size": page_size,
    "max_concurrency": concurrency,
}))
