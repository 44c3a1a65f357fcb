"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def converter(tmp_path_factory):
    """One TFLite conversion worker for the whole session (TensorFlow is imported once, in its subprocess)."""
    from hwnas.export.tflite import TFLiteConverter

    conv = TFLiteConverter(log_path=tmp_path_factory.mktemp("worker") / "worker.log").start()
    yield conv
    conv.close()
