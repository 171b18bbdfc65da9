"""The query parameters every listing route takes (`?page=1&limit=20`), in one place."""

from __future__ import annotations

from typing import Annotated

from litestar.params import QueryParameter

#: 1-based page number.
Page = Annotated[int, QueryParameter(ge=1, description="1-based page number")]
#: Items a page, at most 100.
Limit = Annotated[int, QueryParameter(ge=1, le=100, description="items a page (at most 100)")]
