"""The peer for `jamf-sync bench --scenarios busy`: the public Python jamf-pro-sdk reading every
computer from a running simulator with its concurrent offset paginator (five threads).

    python3 -m venv /tmp/sdk && /tmp/sdk/bin/pip install jamf-pro-sdk==0.9a1
    /tmp/sdk/bin/python benches/peer_jamf_pro_sdk.py --url http://127.0.0.1:PORT [--models]

Without --models the records stay raw JSON ("fetch only", the SDK's faster mode); with it,
each is validated into the SDK's pydantic Computer model. Prints one JSON line with the wall
time and the count read. Nothing is stored: this is the fetch side alone.
"""

import argparse
import json
import sys
import time
from urllib.parse import urlparse

from jamf_pro_sdk import ApiClientCredentialsProvider, JamfProClient, SessionConfig
from jamf_pro_sdk.clients.pro_api.pagination import Paginator
from jamf_pro_sdk.models.pro.computers import Computer

SECTIONS = ["GENERAL", "HARDWARE", "OPERATING_SYSTEM", "USER_AND_LOCATION", "EXTENSION_ATTRIBUTES"]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--client-id", default="jamf-sync-sim")
    p.add_argument("--client-secret", default="sim-secret")
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--models", action="store_true")
    args = p.parse_args()
    u = urlparse(args.url)
    client = JamfProClient(
        server=u.hostname,
        port=u.port or 80,
        credentials=ApiClientCredentialsProvider(args.client_id, args.client_secret),
        session_config=SessionConfig(scheme="http", max_concurrency=5),
    )
    t0 = time.monotonic()
    pages = Paginator(
        api_client=client.pro_api,
        resource_path="v3/computers-inventory",
        return_model=Computer if args.models else None,
        page_size=args.page_size,
        extra_params={"section": SECTIONS},
    )
    read = sum(page.page_count for page in pages(return_generator=True))
    wall = time.monotonic() - t0
    print(json.dumps({"peer": "jamf-pro-sdk", "models": args.models, "records": read, "wall_secs": wall}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
