"""Test-session setup: recurc's on-disk entropy cache goes to a fresh directory, so tests neither
read a developer's cache nor leave files in their home."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_entropy_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["RECURC_CACHE_DIR"] = str(tmp_path_factory.mktemp("recurc-cache"))
