"""Run the API: `python -m api --host 127.0.0.1 --port 8000`.

`python -m api schema OUT.json` writes the OpenAPI document without starting anything (the web
app's TypeScript types are generated from it: `npm run gen:api` in web/).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import uvicorn

from api.app import create_app
from doppel.settings import Settings


def write_schema(out: Path) -> None:
    """The OpenAPI document of `create_app`, as the running API serves it at `/schema`."""
    # create_app connects to nothing until its lifespan runs, so placeholder URLs do.
    settings = Settings(
        database_url="postgresql://schema-only/doppel",
        redis_url="redis://schema-only:0",
        triton_grpc_url="schema-only:0",
        triton_http_url="",
        data_dir=Path("/nonexistent"),
        models_dir=Path("/nonexistent"),
    )
    doc = create_app(settings).openapi_schema.to_schema()
    out.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def main() -> None:
    if sys.argv[1:2] == ["schema"]:
        schema = argparse.ArgumentParser(prog="python -m api schema")
        schema.add_argument("out", type=Path, help="where to write the OpenAPI JSON")
        write_schema(schema.parse_args(sys.argv[2:]).out)
        return
    parser = argparse.ArgumentParser(prog="python -m api")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(Settings.from_env()),
        host=args.host,
        port=args.port,
        log_level="info",
        access_log=True,
    )


if __name__ == "__main__":
    main()
