"""The spectracles cross-checks run in CI: `make test` installs the `compare` extra and sets
SCHEDC_REQUIRE_COMPARE=1, so a missing spectracles fails here instead of skipping those tests."""

import importlib.util
import os

import pytest


@pytest.mark.skipif(not os.environ.get("SCHEDC_REQUIRE_COMPARE"), reason="only where the compare extra is required (make test, CI)")
def test_spectracles_is_installed():
    assert importlib.util.find_spec("spectracles") is not None, "pip install -e '.[compare]': the spectracles cross-checks need it"
